#!/usr/bin/env python3
"""Checks proto/vectors/v2.json with the independent reader (pgfrost_reader.py).

Usage: check_vectors.py [proto/vectors/v2.json]

Prints one line per check (PASS/FAIL); exits 0 only if every check passes.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
from pathlib import Path

sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import pgfrost_reader as r  # noqa: E402

RESULTS: list[tuple[str, bool, str]] = []


def check(name: str):
    """check(name)(fn) runs fn: PASS unless it raises or returns False."""

    def run(fn):
        try:
            out = fn()
            ok = out is not False
            detail = "" if ok else f"returned {out!r}"
        except Exception as e:  # noqa: BLE001 - every failure is a FAIL line
            ok, detail = False, f"{type(e).__name__}: {e}"
            if os.environ.get("PGFROST_VECTORS_DEBUG"):
                traceback.print_exc()
        RESULTS.append((name, ok, detail))
        print(f"{'PASS' if ok else 'FAIL'} {name}{'  -- ' + detail if detail else ''}", flush=True)
        return ok

    return run


def expect(cond: bool, msg: str) -> None:
    if not cond:
        raise AssertionError(msg)


def must_fail(fn, exc=r.FormatError, *, not_exc=None) -> Exception:
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        if not_exc is not None and isinstance(e, not_exc):
            raise AssertionError(f"failed with {type(e).__name__} ({e}), which it must not")
        if not isinstance(e, exc):
            raise AssertionError(f"failed with {type(e).__name__} ({e}), expected {exc.__name__}")
        return e
    raise AssertionError("accepted altered input")


def flip(data: bytes, i: int) -> bytes:
    b = bytearray(data)
    b[i] ^= 0x01
    return bytes(b)


def flip_all(data: bytes, opener, what: str) -> None:
    """Every single-byte change (one bit flipped in each position) must be refused."""
    for i in range(len(data)):
        try:
            opener(flip(data, i))
        except r.FormatError:
            continue
        raise AssertionError(f"{what}: flipping byte {i} of {len(data)} was accepted")


def main(argv: list[str]) -> int:
    default = Path(__file__).resolve().parent.parent / "vectors" / "v2.json"
    path = Path(argv[1]) if len(argv) > 1 else default
    v = json.loads(path.read_text())
    H = bytes.fromhex

    check("vectors: format pgfrost-test-vectors, version 2")(
        lambda: expect(v.get("format") == "pgfrost-test-vectors" and v.get("version") == 2,
                       f"format {v.get('format')!r} version {v.get('version')!r}"))

    # --- constants ----------------------------------------------------------------------------
    layouts = json.loads((r.PROTO_DIR / "layouts.json").read_text())

    def contexts():
        kd = layouts["key_derivation"]
        mine = {"block_id": r.CTX_BLOCK_ID, "seal": r.CTX_SEAL, "key_check": r.CTX_KEY_CHECK}
        expect(v["contexts"] == mine, f"vector contexts {v['contexts']} != docs {mine}")
        expect({k: kd[k] for k in mine} == mine, "layouts.json key_derivation != docs")
        expect(kd["slot_ad_prefix"].encode() == r.SLOT_AD_PREFIX, "slot_ad_prefix")
        expect(len(r.SLOT_AD_PREFIX) == 19, "slot AD prefix is 19 bytes")
        expect(kd["slot_check_message"].encode() == r.SLOT_CHECK_MESSAGE, "slot_check_message")
        expect(kd["slot_integrity"] == r.CTX_SLOT_INTEGRITY, "slot_integrity")
        expect(layouts["sealed_object"]["overhead"] == r.SEALED_OVERHEAD, "overhead 48")

    check("constants: context strings (docs = layouts.json = vectors), overhead")(contexts)

    master = H(v["master_key"])
    keys = r.derive_subkeys(master)

    # --- derived keys -------------------------------------------------------------------------
    for field, ctx_name, got in (("block_id_key", "block_id", keys.block_id),
                                 ("seal_key", "seal", keys.seal),
                                 ("key_check_key", "key_check", keys.key_check)):
        def f(field=field, ctx_name=ctx_name, got=got):
            expect(r.derive_key(v["contexts"][ctx_name], master) == H(v["derived"][field]),
                   "derive_key(context from vectors) differs")
            expect(got == H(v["derived"][field]), f"{got.hex()} != {v['derived'][field]}")

        check(f"derived key {field} = derive_key({v['contexts'][ctx_name]!r}, master_key)")(f)

    # --- block ids ----------------------------------------------------------------------------
    for i, b in enumerate(v["block_ids"]):
        pt = H(b["plaintext"])
        check(f"block id {i} ({len(pt)} bytes) = BLAKE3-keyed(block-id key, plaintext)")(
            lambda pt=pt, b=b: expect(r.block_id(keys.block_id, pt) == H(b["id"]),
                                      f"{r.block_id(keys.block_id, pt).hex()} != {b['id']}"))

    # --- sealed objects -----------------------------------------------------------------------
    for i, s in enumerate(v["sealed"]):
        kind, comp = s["kind"], s["compression"]
        name, nonce, payload = H(s["name"]), H(s["nonce"]), H(s["payload"])
        plaintext, sealed = H(s["plaintext"]), H(s["sealed"])
        label = f"sealed {i} (kind {kind}, compression {comp}, {len(sealed)} bytes)"
        # A run opens to exactly its plaintext length (the sum of its blocks' raw_length).
        raw_len = len(plaintext) if kind == r.KIND_RUN else None

        def reseal(kind=kind, comp=comp, nonce=nonce, payload=payload, name=name, sealed=sealed):
            got = r.seal(keys.seal, kind, comp, nonce, payload, name)
            expect(got == sealed, "sealing payload with the vector's nonce gives other bytes")

        def payload_ok(comp=comp, payload=payload, plaintext=plaintext):
            if comp == 0:
                expect(payload == plaintext, "compression 0 but payload != plaintext")
            else:
                expect(r.zstd_decompress_exact(payload, exact=len(plaintext)) == plaintext,
                       "zstd payload does not decompress to the plaintext")

        def open_ok(kind=kind, name=name, sealed=sealed, plaintext=plaintext, raw_len=raw_len,
                    comp=comp, nonce=nonce, payload=payload):
            o = r.open_sealed(keys.seal, sealed, kind, name, raw_length=raw_len)
            expect(o.plaintext == plaintext, "opened plaintext differs")
            expect(o.compression == comp and o.nonce == nonce and o.payload == payload,
                   "header/nonce/payload differ")
            if kind == r.KIND_RUN:
                # As a run of one block (id recomputed), and of two blocks split anywhere.
                whole = r.RunBlock(r.block_id(keys.block_id, plaintext), len(plaintext))
                run = r.Run(8, len(sealed), (whole,))
                expect(r.open_run(keys, sealed, run) == [plaintext], "run of one block")
                cut = len(plaintext) // 3
                halves = (plaintext[:cut], plaintext[cut:])
                run2 = r.Run(8, len(sealed), tuple(
                    r.RunBlock(r.block_id(keys.block_id, h), len(h)) for h in halves))
                expect(r.open_run(keys, sealed, run2) == list(halves), "run of two blocks")

        def header_ok(kind=kind, comp=comp, sealed=sealed, nonce=nonce):
            expect(sealed[:8] == r.sealed_header(kind, comp), "header bytes")
            expect(sealed[8:32] == nonce, "nonce at offset 8")

        def name_ok(kind=kind, name=name, s=s):
            if kind == r.KIND_RUN:
                expect(name == b"", "a block run's name is not empty")
            elif kind in (r.KIND_WAL, r.KIND_STANZA_DB, r.KIND_MANIFEST, r.KIND_POINTS,
                          r.KIND_OUTCOME):
                expect(name == s["path"].encode("utf-8"), "name is not the object's path")
            else:
                expect(name == b"", "a trailer's or segment's name is not empty")

        def wrong_context(kind=kind, name=name, sealed=sealed, raw_len=raw_len,
                          plaintext=plaintext):
            # another kind, another name, a header that says otherwise: all refused
            other = r.KIND_INDEX if kind != r.KIND_INDEX else r.KIND_TRAILER
            must_fail(lambda: r.open_sealed(keys.seal, sealed, other, name))
            relabelled = sealed[:5] + bytes([other]) + sealed[6:]
            must_fail(lambda: r.open_sealed(keys.seal, relabelled, other, name))
            if kind == r.KIND_RUN:
                # named as in version 1 (by the block id): refused
                bid = r.block_id(keys.block_id, plaintext)
                must_fail(lambda: r.open_sealed(keys.seal, sealed, kind, bid, raw_length=raw_len))
                for n in (raw_len + 1, raw_len - 1) if raw_len else (1,):
                    must_fail(lambda n=n: r.open_sealed(keys.seal, sealed, kind, name,
                                                        raw_length=n))
                # block lengths that do not add up, or a wrong id, refused by open_run
                whole = r.RunBlock(bid, len(plaintext))
                for run in (r.Run(8, len(sealed), (whole, r.RunBlock(bid, 0))),
                            r.Run(8, len(sealed), (r.RunBlock(bid, len(plaintext) + 1),)),
                            r.Run(8, len(sealed), (r.RunBlock(bytes(32), len(plaintext)),))):
                    must_fail(lambda run=run: r.open_run(keys, sealed, run))
            else:
                must_fail(lambda: r.open_sealed(keys.seal, sealed, kind, name + b"/"))
                if name:
                    must_fail(lambda: r.open_sealed(keys.seal, sealed, kind, b""))
            must_fail(lambda: r.open_sealed(keys.seal, sealed, kind, bytes(32)[:1],
                                            raw_length=raw_len))
            togg = sealed[:6] + bytes([sealed[6] ^ 1]) + sealed[7:]
            must_fail(lambda: r.open_sealed(keys.seal, togg, kind, name, raw_length=raw_len))
            must_fail(lambda: r.open_sealed(keys.seal[:31] + b"\0", sealed, kind, name,
                                            raw_length=raw_len))

        check(f"{label}: header and nonce layout")(header_ok)
        check(f"{label}: name (empty for a block run, else the path)")(name_ok)
        check(f"{label}: sealing the payload with the given nonce reproduces the bytes")(reseal)
        check(f"{label}: payload decodes to the plaintext")(payload_ok)
        check(f"{label}: opens to the plaintext" +
              (" (and as a run of one or two blocks)" if kind == r.KIND_RUN else ""))(open_ok)
        check(f"{label}: refused with another kind/name/length/compression/key")(wrong_context)
        check(f"{label}: every single-byte change is refused")(
            lambda sealed=sealed, kind=kind, name=name, raw_len=raw_len: flip_all(
                sealed, lambda d: r.open_sealed(keys.seal, d, kind, name, raw_length=raw_len),
                "sealed"))
        if kind == r.KIND_POINTS:
            check(f"{label}: validates against restore-points.schema.json")(
                lambda plaintext=plaintext: r.validate_schema(
                    json.loads(plaintext), "restore-points.schema.json", "restore points"))
        if kind == r.KIND_OUTCOME:
            check(f"{label}: validates against outcome.schema.json")(
                lambda plaintext=plaintext: r.validate_schema(
                    json.loads(plaintext), "outcome.schema.json", "outcome"))

    # --- pack ---------------------------------------------------------------------------------
    pv = v["pack"]
    pack_bytes, pack_name = H(pv["bytes"]), H(pv["name"])
    want_runs = [r.Run.from_json(run) for run in pv["runs"]]

    def open_pack(data: bytes, name: bytes | None):
        p = r.parse_pack(keys.seal, data, name)
        return p, [b for run in p.runs for b in r.read_run(keys, data, run)]

    check(f"pack: name = BLAKE3 of its {len(pack_bytes)} bytes")(
        lambda: expect(r.blake3_hash(pack_bytes) == pack_name, "BLAKE3 differs"))

    def pack_parse():
        p, _ = open_pack(pack_bytes, pack_name)
        expect(p.runs == want_runs, f"runs {[run.to_json() for run in p.runs]}")
        expect(p.trailer_plaintext == H(pv["trailer_plaintext"]), "trailer plaintext differs")
        expect(r.parse_trailer_plaintext(H(pv["trailer_plaintext"])) == want_runs,
               "trailer_plaintext parses to other runs")
        expect(r.encode_run_list(want_runs) == H(pv["trailer_plaintext"]),
               "the vector's runs do not encode to its trailer plaintext")
        expect(pack_bytes[:8] == r.PACK_MAGIC + bytes([2, 0, 0, 0]), "header: PGFP, 2, 0, 0, 0")
        t = int.from_bytes(pack_bytes[-8:-4], "little")
        expect(p.trailer_offset == len(pack_bytes) - 8 - t, "footer: trailer length")
        trailer = pack_bytes[p.trailer_offset:-8]
        o = r.open_sealed(keys.seal, trailer, r.KIND_TRAILER, b"")
        expect(o.nonce == H(pv["trailer_nonce"]), "trailer nonce differs")
        expect(r.seal(keys.seal, r.KIND_TRAILER, o.compression, o.nonce, o.payload) == trailer,
               "re-sealing the trailer")

    check("pack: header, footer, trailer (nonce) parse; runs equal the vector's")(pack_parse)

    def pack_layout():
        expect(want_runs[0].offset == 8, "first run at 8")
        for a, b in zip(want_runs, want_runs[1:]):
            expect(b.offset == a.offset + a.length, "runs back to back")
        p = r.parse_pack(keys.seal, pack_bytes, pack_name)
        expect(want_runs[-1].offset + want_runs[-1].length == p.trailer_offset,
               "last run ends where the trailer starts")
        expect(all(run.length >= 48 and run.blocks for run in want_runs), "run sizes")

    check("pack: runs tile [8, trailer start), each >= 48 bytes and with >= 1 block")(pack_layout)

    def pack_blocks():
        _, blocks = open_pack(pack_bytes, pack_name)
        expect(blocks == [H(b) for b in pv["blocks"]], "blocks differ")
        flat = [b for run in want_runs for b in run.blocks]
        expect(len(flat) == len(blocks), "the vector lists as many blocks as its runs hold")
        ids = {b["id"]: H(b["plaintext"]) for b in v["block_ids"]}
        for rb, pt in zip(flat, blocks):
            expect(len(pt) == rb.raw_length, "raw_length")
            if rb.block_id.hex() in ids:
                expect(ids[rb.block_id.hex()] == pt, "block differs from block_ids vector")
        for run in want_runs:
            opened = r.read_run(keys, pack_bytes, run)
            for i, b in enumerate(run.blocks):
                start = run.block_start(i)
                expect(b"".join(opened)[start:start + b.raw_length] == opened[i], "block place")

    check("pack: every run opens (kind 1, empty name, sum of raw_length) to the listed blocks "
          "(keyed ids)")(pack_blocks)
    check("pack: path is <stanza>/pack/<xx>/<id>")(
        lambda: expect(r.pack_path("s", pack_name) == f"s/pack/{pv['name'][:2]}/{pv['name']}",
                       "path"))
    check("pack: every single-byte change is refused (without the name check)")(
        lambda: flip_all(pack_bytes, lambda d: open_pack(d, None), "pack"))
    check("pack: a changed byte is refused by the name check alone")(
        lambda: must_fail(lambda: r.parse_pack(keys.seal, flip(pack_bytes, 100), pack_name)))
    check("pack: truncated or extended is refused")(lambda: [
        must_fail(lambda: open_pack(pack_bytes[:-1], None)),
        must_fail(lambda: open_pack(pack_bytes + b"\0", None)),
        must_fail(lambda: open_pack(pack_bytes[:8] + pack_bytes[9:], None)),
    ])
    check("pack: version 1 (and 3) refused")(lambda: [
        must_fail(lambda: open_pack(pack_bytes[:4] + bytes([n]) + pack_bytes[5:], None))
        for n in (1, 3)])

    # Forged trailers, sealed with the right key, that break one rule each: a reader without
    # the keys cannot make them, but the rules are the reader's to check, not the seal's.
    body_end = want_runs[-1].offset + want_runs[-1].length

    def forge(run_list: bytes, body: bytes | None = None) -> bytes:
        body = pack_bytes[8:body_end] if body is None else body
        trailer = r.seal(keys.seal, r.KIND_TRAILER, 0, bytes(range(24)), run_list)
        return (pack_bytes[:8] + body + trailer + len(trailer).to_bytes(4, "little") +
                r.PACK_FOOTER_MAGIC)

    def forged_ok():
        _, blocks = open_pack(forge(r.encode_run_list(want_runs)), None)
        expect(blocks == [H(b) for b in pv["blocks"]], "re-trailered pack")
        p = r.parse_pack(keys.seal, forge(r.encode_run_list([]), b""), None)
        expect(p.runs == [] and p.trailer_offset == 8, "a pack with no runs")

    check("pack: re-sealed trailer accepted; a pack with no runs (trailer at 8) is valid")(
        forged_ok)

    def forged_bad():
        first, second = want_runs[0], want_runs[1]
        swapped = r.Run(second.offset, second.length, tuple(reversed(second.blocks)))
        grown = r.Run(first.offset, first.length, (r.RunBlock(
            first.blocks[0].block_id, first.blocks[0].raw_length + 1),))
        cases = {
            "block_count 0": [r.Run(first.offset, first.length, ()), second],
            "first run not at 8": [r.Run(9, first.length - 1, first.blocks), second],
            "gap between runs": [r.Run(first.offset, first.length - 1, first.blocks), second],
            "overlapping runs": [first, r.Run(second.offset - 1, second.length, second.blocks)],
            "runs end before the trailer": [first],
            "runs end after the trailer": [first, r.Run(second.offset, second.length + 1,
                                                        second.blocks)],
            "a run shorter than 48": [r.Run(8, 40, first.blocks), r.Run(48, body_end - 48,
                                                                    second.blocks)],
            "runs swapped": [r.Run(8, first.length, second.blocks),
                             r.Run(8 + first.length, second.length, first.blocks)],
            "blocks of a run swapped": [first, swapped],
            "raw_length off by one": [grown, second],
            "runs out of order": [second, first],
        }
        for what, runs in cases.items():
            try:
                open_pack(forge(r.encode_run_list(runs)), None)
            except r.FormatError:
                continue
            raise AssertionError(f"forged trailer accepted: {what}")
        good = r.encode_run_list(want_runs)
        for extra in (b"\0", good[4:16]):
            must_fail(lambda extra=extra: open_pack(forge(good + extra), None))
        must_fail(lambda: open_pack(forge(good[:-1]), None))
        must_fail(lambda: open_pack(forge((3).to_bytes(4, "little") + good[4:]), None))

    check("pack: forged trailers breaking a rule (count, tiling, >= 48, order, raw_length, ids, "
          "trailing bytes) are refused")(forged_bad)

    # --- index segment ------------------------------------------------------------------------
    iv = v["index_segment"]
    seg_bytes, seg_name = H(iv["sealed"]), H(iv["name"])
    want_segment = [(H(p["pack"]), [r.Run.from_json(run) for run in p["runs"]])
                    for p in iv["packs"]]
    check("index segment: name = BLAKE3 of the sealed bytes")(
        lambda: expect(r.blake3_hash(seg_bytes) == seg_name, "BLAKE3 differs"))

    def seg_open():
        got = r.open_index_segment(keys.seal, seg_bytes, seg_name)
        expect([(sp.pack_id, sp.runs) for sp in got] == want_segment,
               "parsed segment differs from the vector's packs")
        o = r.open_sealed(keys.seal, seg_bytes, r.KIND_INDEX, b"")
        expect(o.plaintext == H(iv["plaintext"]), "plaintext differs")
        expect(o.compression == iv["compression"] and o.nonce == H(iv["nonce"]),
               "compression/nonce differ")
        expect([(sp.pack_id, sp.runs) for sp in r.parse_index_plaintext(H(iv["plaintext"]))]
               == want_segment, "plaintext parse")
        expect(H(iv["plaintext"]) == len(want_segment).to_bytes(4, "little") + b"".join(
            pid + r.encode_run_list(runs) for pid, runs in want_segment), "plaintext layout")
        # Re-sealing with the nonce found in the object reproduces it (payload as stored)
        expect(r.seal(keys.seal, r.KIND_INDEX, o.compression, o.nonce, o.payload) == seg_bytes,
               "re-seal")

    check("index segment: opens (kind 3, empty name) and parses to the vector's packs")(seg_open)

    def seg_matches_pack():
        pack = r.parse_pack(keys.seal, pack_bytes, pack_name)
        for sp in r.open_index_segment(keys.seal, seg_bytes, seg_name):
            expect(sp.pack_id == pack_name, "segment names another pack")
            r.check_segment_pack(sp, pack)
            expect(sp.run_list == H(pv["trailer_plaintext"]), "run list != trailer plaintext")
            got = [b for run in sp.runs for b in r.read_run(keys, pack_bytes, run)]
            expect(got == [H(b) for b in pv["blocks"]], "blocks located through the segment")

    check("index segment: its run list equals the pack's trailer, byte for byte, and locates "
          "and opens the pack's blocks")(seg_matches_pack)

    def seg_differs():
        pack = r.parse_pack(keys.seal, pack_bytes, pack_name)
        first, second = want_runs[0], want_runs[1]
        other = [first, r.Run(second.offset, second.length, tuple(reversed(second.blocks)))]
        pt = (1).to_bytes(4, "little") + pack_name + r.encode_run_list(other)
        sp = r.parse_index_plaintext(pt)[0]
        must_fail(lambda: r.check_segment_pack(sp, pack))
        for bad in (pt + b"\0", pt[:-1], (2).to_bytes(4, "little") + pt[4:],
                    (0).to_bytes(4, "little") + pt[4:]):
            must_fail(lambda bad=bad: r.parse_index_plaintext(bad))
        bad_layout = (1).to_bytes(4, "little") + pack_name + r.encode_run_list(
            [r.Run(9, first.length, first.blocks)])
        must_fail(lambda: r.parse_index_plaintext(bad_layout))
        expect(r.parse_index_plaintext((0).to_bytes(4, "little")) == [], "empty segment")

    check("index segment: a run list other than the trailer's, trailing bytes, bad counts or "
          "layout are refused")(seg_differs)
    check("index segment: every single-byte change is refused (without the name check)")(
        lambda: flip_all(seg_bytes, lambda d: r.open_index_segment(keys.seal, d), "segment"))
    check("index segment: a changed byte is refused by the name check alone")(
        lambda: must_fail(lambda: r.open_index_segment(keys.seal, flip(seg_bytes, 40), seg_name)))

    # --- config -------------------------------------------------------------------------------
    config_raw = v["config"]["bytes"].encode("utf-8")
    config = r.parse_config(config_raw)
    check("config: validates against config.schema.json (version 2)")(
        lambda: r.validate_schema(json.loads(config_raw), "config.schema.json", "config"))
    check("config: key_check = BLAKE3-keyed(key-check key, repo_id bytes)")(
        lambda: expect(r.blake3_keyed(keys.key_check, config.repo_id) == config.key_check,
                       "key_check differs") or r.check_master_key(config, master))

    def config_version():
        expect(json.loads(config_raw)["version"] == r.CONFIG_VERSION == 2, "config version 2")
        for version in (1, 3):
            d = dict(json.loads(config_raw), version=version)
            must_fail(lambda d=d: r.parse_config(json.dumps(d).encode()))

    check("config: version 1 (and other unknown versions) refused")(config_version)

    # --- key slot -----------------------------------------------------------------------------
    ks = v["key_slot"]
    slot, passphrase = ks["slot"], ks["passphrase"].encode("utf-8")
    check("key slot: validates against key-slot.schema.json")(
        lambda: r.validate_schema(slot, "key-slot.schema.json", "key slot") or
        r.parse_key_slot(json.dumps(slot).encode(), slot["id"]) and None)

    def slot_open():
        got_master, kek = r.open_key_slot(config, slot, passphrase)
        expect(kek == H(ks["kek"]), f"KEK {kek.hex()} != {ks['kek']}")
        expect(got_master == master, "unwrapped key != master_key")
        expect(r.open_master_key(config, [(slot["id"], json.dumps(slot).encode())],
                                 passphrase) == master, "open_master_key")

    check("key slot: passphrase -> Argon2id KEK = vector kek; unwraps master_key")(slot_open)
    check("key slot: check = BLAKE3-keyed(KEK, 'pgfrost key slot check v1')")(
        lambda: expect(r.blake3_keyed(H(ks["kek"]), r.SLOT_CHECK_MESSAGE) == H(slot["check"]),
                       "check differs"))

    def wrong_pass():
        e = must_fail(lambda: r.open_key_slot(config, slot, passphrase + b"x"), r.WrongPassphrase)
        must_fail(lambda: r.open_master_key(config, [(slot["id"], json.dumps(slot).encode())],
                                            b"wrong"), r.WrongPassphrase)
        return None if e else False

    check("key slot: a wrong passphrase is reported as wrong passphrase (check mismatch)")(
        wrong_pass)

    def slot_altered():
        wk = H(slot["wrapped_key"])
        for i in range(len(wk)):
            s2 = dict(slot, wrapped_key=flip(wk, i).hex())
            must_fail(lambda: r.open_key_slot(config, s2, passphrase), r.Corruption)
        s2 = dict(slot, nonce=flip(H(slot["nonce"]), 3).hex())
        must_fail(lambda: r.open_key_slot(config, s2, passphrase), r.Corruption)
        # Slot copied under another id: AD binds the id.
        s2 = dict(slot, id=flip(H(slot["id"]), 0).hex())
        must_fail(lambda: r.open_key_slot(config, s2, passphrase), r.Corruption)
        must_fail(lambda: r.parse_key_slot(json.dumps(slot).encode(), "0" * 32))

    check("key slot: altered wrapped key / nonce / slot id -> corruption, not wrong passphrase")(
        slot_altered)

    def integrity_value():
        msg = r.slot_integrity_message(slot)
        expect(msg == H(ks["integrity_message"]),
               f"encoding {msg.hex()} != vector {ks['integrity_message']}")
        expect(len(msg) == 4 + 16 + 4 + 16 + 4 + 8 + 16 + 16 + 32 + 24 + 48, f"{len(msg)} bytes")
        expect("integrity" in slot, "the vector slot carries no integrity value")
        expect(r.slot_integrity(slot) == H(slot["integrity"]), "integrity differs")

    check("key slot: integrity = derive_key('pgfrost 2026-11-21 key slot integrity v1', "
          "encoding) = vector")(integrity_value)

    def damaged(s2: dict, label: str) -> None:
        for pw in (passphrase, passphrase + b"x"):
            e = must_fail(lambda: r.open_key_slot(config, s2, pw), r.Corruption,
                          not_exc=r.WrongPassphrase)
            expect(slot["id"] in str(e) or s2["id"] in str(e), f"{label}: {e} names no slot")
            must_fail(lambda: r.open_master_key(config, [(s2["id"], json.dumps(s2).encode())],
                                                pw), r.Corruption, not_exc=r.WrongPassphrase)

    def kdf_damaged():
        kdf = slot["kdf"]
        salt = H(kdf["salt"])
        for i in range(len(salt)):
            damaged(dict(slot, kdf=dict(kdf, salt=flip(salt, i).hex())), f"salt byte {i}")
        for k, v in (("memory_kib", kdf["memory_kib"] + 8), ("iterations", kdf["iterations"] + 1),
                     ("parallelism", kdf["parallelism"] + 1)):
            damaged(dict(slot, kdf=dict(kdf, **{k: v})), k)
        damaged(dict(slot, check=flip(H(slot["check"]), 31).hex()), "check")
        damaged(dict(slot, integrity=flip(H(slot["integrity"]), 0).hex()), "integrity")
        # Without the integrity value (a slot from an older writer) the same damage to the salt
        # can only read as a wrong passphrase: what the field is for.
        old = {k: v for k, v in slot.items() if k != "integrity"}
        must_fail(lambda: r.open_key_slot(
            config, dict(old, kdf=dict(kdf, salt=flip(salt, 0).hex())), passphrase),
            r.WrongPassphrase)

    check("key slot: damaged salt / KDF parameter / check / integrity -> corruption (FormatError), "
          "not wrong passphrase, with the right passphrase and a wrong one")(kdf_damaged)

    def old_slot():
        old = {k: v for k, v in slot.items() if k != "integrity"}
        r.validate_schema(old, "key-slot.schema.json", "key slot")
        got, _ = r.open_key_slot(config, old, passphrase)
        expect(got == master, "old slot: unwrapped key != master_key")
        must_fail(lambda: r.open_key_slot(config, old, passphrase + b"x"), r.WrongPassphrase)

    check("key slot: a slot without integrity (older writer) opens as before")(old_slot)

    def another_slot_opens():
        # A second slot, built here from docs/format.md, for another passphrase: a damaged slot
        # next to it does not stop it from opening, and does not turn a wrong passphrase into
        # "wrong passphrase" either.
        other_pw = b"another passphrase"
        s2 = dict(slot, id=bytes(range(16)).hex(), kdf=dict(slot["kdf"], salt="5a" * 16),
                  nonce="4e" * 24)
        kek = r.slot_kek(s2, other_pw)
        s2["check"] = r.blake3_keyed(kek, r.SLOT_CHECK_MESSAGE).hex()
        s2["wrapped_key"] = r.aead_encrypt(kek, H(s2["nonce"]), master,
                                           r.slot_ad(config, s2)).hex()
        s2["integrity"] = r.slot_integrity(s2).hex()
        bad = dict(slot, kdf=dict(slot["kdf"], salt=flip(H(slot["kdf"]["salt"]), 2).hex()))
        both = [(bad["id"], json.dumps(bad).encode()), (s2["id"], json.dumps(s2).encode())]
        expect(r.open_master_key(config, both, other_pw) == master, "other slot did not open")
        must_fail(lambda: r.open_master_key(config, both, b"wrong"), r.Corruption,
                  not_exc=r.WrongPassphrase)

    check("key slot: next to a damaged slot another slot still opens; no slot opening reports "
          "the damage")(another_slot_opens)

    def config_altered():
        for i in range(len(config_raw)):
            altered = flip(config_raw, i)
            try:
                c2 = r.parse_config(altered)
            except r.FormatError:
                continue  # refused before any slot is tried: fine
            must_fail(lambda: r.open_key_slot(c2, slot, passphrase), r.Corruption)
        # Re-serialising the same JSON (other whitespace) is a different object too.
        c3 = r.parse_config(json.dumps(json.loads(config_raw)).encode())
        must_fail(lambda: r.open_key_slot(c3, slot, passphrase), r.Corruption)

    check("key slot: every single-byte change of config makes the slot fail (corruption)")(
        config_altered)

    # --- key file -----------------------------------------------------------------------------
    kf = v["key_file"]
    kf_raw = json.dumps(kf).encode()
    check("key file: validates against key-file.schema.json")(
        lambda: r.validate_schema(kf, "key-file.schema.json", "key file"))

    def key_file_ok():
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "key.json"
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, kf_raw)
            os.close(fd)
            os.chmod(p, 0o600)
            expect(r.validate_key_file(config, p) == master, "master key")
            expect(kf["config_hash"] == config.hash.hex(), "config_hash")
            os.chmod(p, 0o640)
            must_fail(lambda: r.validate_key_file(config, p))
            os.chmod(p, 0o604)
            must_fail(lambda: r.validate_key_file(config, p))
            os.chmod(p, 0o600)
            link = Path(d) / "link.json"
            link.symlink_to(p)
            must_fail(lambda: r.validate_key_file(config, link))

    check("key file: mode 0600 file accepted (repo_id, config_hash, key_check); "
          "group/other bits, symlink refused")(key_file_ok)

    def key_file_bad():
        for field, val in (("repo_id", "00" * 16), ("config_hash", "00" * 32),
                           ("master_key", "00" * 32)):
            bad = json.dumps(dict(kf, **{field: val})).encode()
            must_fail(lambda: r.validate_key_file(config, data=bad))
        must_fail(lambda: r.validate_key_file(config, data=json.dumps(dict(kf, version=2)).encode()))
        other_config = r.parse_config(config_raw.replace(b'"\n}', b'" \n}'))
        must_fail(lambda: r.validate_key_file(other_config, data=kf_raw))

    check("key file: wrong repo_id / config_hash / master_key / version / config refused")(
        key_file_bad)

    failed = [n for n, ok, _ in RESULTS if not ok]
    print(f"{len(RESULTS) - len(failed)}/{len(RESULTS)} checks passed")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
