#!/usr/bin/env python3
"""Rebuilds files from a local-disk pgfrost repository with the independent reader.

Usage: PGFROST_PASSPHRASE=... read_repo.py --repo DIR --stanza NAME --catalog CATALOG.json --out DIR

CATALOG.json is the stdout of `pgfrost dev put-dir` (a development tool's output, not part of the
repository format): {"catalog": {"stanza": ..., "files": [{"path", "size", "mode", "blocks"}]}, ...}.
Every file is the concatenation of its blocks' plaintexts, in order.

Reads config, keys/*, <stanza>/index/* and <stanza>/pack/** as docs/format.md describes (format
version 2); opens the master key through the key slots; checks every pack (name, header, footer,
trailer, run layout) and every index segment (name, seal, layout, each pack's run list equal to
that pack's trailer); finds blocks through the index segments only; opens each run it needs
(kind 1, empty name, exactly the sum of its blocks' raw_length) once while a file's blocks come
from it, and recomputes the keyed id of every block the run holds. Exit 0 on success, 1 on a
refused object, 3 on a wrong passphrase, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import OrderedDict
from pathlib import Path, PurePosixPath

sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import pgfrost_reader as r  # noqa: E402

HEX64 = re.compile(r"^[0-9a-f]{64}$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")


def visible(d: Path) -> list[Path]:
    """Entries of a directory, without the names starting with '.' (temporary files)."""
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if not p.name.startswith("."))


class Repo:
    def __init__(self, root: Path, stanza: str, passphrase: bytes, log=print):
        self.root, self.stanza, self.log = root, stanza, log
        self.config = r.parse_config((root / "config").read_bytes())
        slots = []
        for p in visible(root / "keys"):
            if not HEX32.match(p.name):
                raise r.FormatError(f"keys/{p.name}: not a slot id")
            slots.append((p.name, p.read_bytes()))
        if not slots:
            raise r.FormatError("no key slots under keys/")
        master = r.open_master_key(self.config, slots, passphrase)
        self.keys = r.derive_subkeys(master)
        log(f"config: repo_id {self.config.repo_id.hex()}; master key opened "
            f"({len(slots)} slot(s))")
        self.packs: dict[bytes, bytes] = {}
        self.parsed: dict[bytes, r.Pack] = {}
        # block id -> (pack id, run, index of the block in the run)
        self.index: dict[bytes, tuple[bytes, r.Run, int]] = {}
        # (pack id, run offset) -> the run's blocks, most recently used last
        self.runs: OrderedDict[tuple[bytes, int], list[bytes]] = OrderedDict()
        self.cached_bytes = 0
        self.run_opens = 0
        self._load_packs()
        self._load_index()

    RUN_CACHE_BYTES = 64 << 20

    def _load_packs(self) -> None:
        pack_dir = self.root / self.stanza / "pack"
        for sub in visible(pack_dir):
            if not sub.is_dir() or not re.fullmatch(r"[0-9a-f]{2}", sub.name):
                raise r.FormatError(f"{sub.relative_to(self.root)}: unexpected entry in pack/")
            for p in visible(sub):
                if not HEX64.match(p.name) or p.name[:2] != sub.name:
                    raise r.FormatError(f"{p.relative_to(self.root)}: not a pack path")
                pid = bytes.fromhex(p.name)
                data = p.read_bytes()
                self.parsed[pid] = r.parse_pack(self.keys.seal, data, pid)
                self.packs[pid] = data
        runs = sum(len(p.runs) for p in self.parsed.values())
        self.log(f"packs: {len(self.packs)} checked (name = BLAKE3, header, footer, trailer, "
                 f"{runs} runs tiling them)")

    def _load_index(self) -> None:
        seg_dir = self.root / self.stanza / "index"
        segments = places = 0
        named: set[bytes] = set()
        for p in visible(seg_dir):
            if not HEX64.match(p.name):
                raise r.FormatError(f"{p.relative_to(self.root)}: not a segment name")
            for sp in r.open_index_segment(self.keys.seal, p.read_bytes(),
                                           bytes.fromhex(p.name)):
                if sp.pack_id not in self.packs:
                    raise r.FormatError(f"index segment {p.name} names missing pack "
                                        f"{sp.pack_id.hex()}")
                r.check_segment_pack(sp, self.parsed[sp.pack_id])
                named.add(sp.pack_id)
                for run in sp.runs:
                    for i, b in enumerate(run.blocks):
                        # Any of a block's places may be used: keep the first.
                        self.index.setdefault(b.block_id, (sp.pack_id, run, i))
                        places += 1
            segments += 1
        # "A pack that no segment names ... is garbage to a reader": its blocks are not used.
        garbage = len(self.packs) - len(named)
        self.log(f"index: {segments} segment(s), {places} block places, {len(self.index)} "
                 f"distinct blocks; {garbage} pack(s) named by no segment (garbage, unused)")

    def _run(self, pid: bytes, run: r.Run) -> list[bytes]:
        key = (pid, run.offset)
        blocks = self.runs.get(key)
        if blocks is not None:
            self.runs.move_to_end(key)
            return blocks
        blocks = r.read_run(self.keys, self.packs[pid], run)
        self.run_opens += 1
        self.runs[key] = blocks
        self.cached_bytes += run.raw_length
        while self.cached_bytes > self.RUN_CACHE_BYTES and len(self.runs) > 1:
            _, old = self.runs.popitem(last=False)
            self.cached_bytes -= sum(len(b) for b in old)
        return blocks

    def block(self, bid: bytes) -> bytes:
        try:
            pid, run, i = self.index[bid]
        except KeyError:
            raise r.FormatError(f"block {bid.hex()} is in no index segment") from None
        return self._run(pid, run)[i]


def safe_rel(path: str) -> PurePosixPath:
    p = PurePosixPath(path)
    if p.is_absolute() or not p.parts or any(part in ("..", ".", "") for part in p.parts):
        raise r.FormatError(f"catalog: unsafe path {path!r}")
    return p


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", required=True, type=Path)
    ap.add_argument("--stanza", required=True)
    ap.add_argument("--catalog", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    a = ap.parse_args(argv)
    passphrase = os.environ.get("PGFROST_PASSPHRASE")
    if passphrase is None:
        print("PGFROST_PASSPHRASE is not set", file=sys.stderr)
        return 2
    try:
        catalog = json.loads(a.catalog.read_text())["catalog"]
        if catalog.get("stanza") not in (None, a.stanza):
            raise r.FormatError(f"catalog is for stanza {catalog['stanza']!r}, not {a.stanza!r}")
        repo = Repo(a.repo, a.stanza, passphrase.encode("utf-8"))
        total = blocks = 0
        for f in catalog["files"]:
            rel = safe_rel(f["path"])
            content = b"".join(repo.block(bytes.fromhex(b)) for b in f["blocks"])
            if len(content) != f["size"]:
                raise r.FormatError(f"{rel}: rebuilt {len(content)} bytes, catalog says "
                                    f"{f['size']}")
            dest = a.out / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(content)
            if "mode" in f:
                os.chmod(dest, f["mode"] & 0o7777)
            total += len(content)
            blocks += len(f["blocks"])
        print(f"rebuilt {len(catalog['files'])} file(s), {total} bytes from {blocks} block "
              f"reads ({repo.run_opens} run(s) opened) under {a.out}")
    except r.WrongPassphrase as e:
        print(f"wrong passphrase: {e}", file=sys.stderr)
        return 3
    except r.FormatError as e:
        print(f"refused: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
