#!/usr/bin/env python3
"""Checks proto/vectors/v1.json with the independent reader (pgfrost_reader.py).

Usage: check_vectors.py [proto/vectors/v1.json]

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
    default = Path(__file__).resolve().parent.parent / "vectors" / "v1.json"
    path = Path(argv[1]) if len(argv) > 1 else default
    v = json.loads(path.read_text())
    H = bytes.fromhex

    check("vectors: format pgfrost-test-vectors, version 1")(
        lambda: expect(v.get("format") == "pgfrost-test-vectors" and v.get("version") == 1,
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
        raw_len = len(plaintext) if kind == r.KIND_BLOCK else None

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
            if kind == r.KIND_BLOCK:
                expect(r.open_block(keys, sealed, name, len(plaintext)) == plaintext, "block")

        def header_ok(kind=kind, comp=comp, sealed=sealed, nonce=nonce):
            expect(sealed[:8] == r.sealed_header(kind, comp), "header bytes")
            expect(sealed[8:32] == nonce, "nonce at offset 8")

        def wrong_context(kind=kind, name=name, sealed=sealed, raw_len=raw_len):
            # another kind, another name, a header that says otherwise: all refused
            other = r.KIND_INDEX if kind != r.KIND_INDEX else r.KIND_TRAILER
            must_fail(lambda: r.open_sealed(keys.seal, sealed, other, name))
            relabelled = sealed[:5] + bytes([other]) + sealed[6:]
            must_fail(lambda: r.open_sealed(keys.seal, relabelled, other,
                                            name if other == r.KIND_BLOCK else b""))
            if kind == r.KIND_BLOCK:
                must_fail(lambda: r.open_sealed(keys.seal, sealed, kind, bytes(32), raw_length=raw_len))
                must_fail(lambda: r.open_sealed(keys.seal, sealed, kind, name,
                                                raw_length=(raw_len or 0) + 1))
            else:
                must_fail(lambda: r.open_sealed(keys.seal, sealed, kind, bytes(32)[:1]))
            togg = sealed[:6] + bytes([sealed[6] ^ 1]) + sealed[7:]
            must_fail(lambda: r.open_sealed(keys.seal, togg, kind, name, raw_length=raw_len))
            must_fail(lambda: r.open_sealed(keys.seal[:31] + b"\0", sealed, kind, name,
                                            raw_length=raw_len))

        check(f"{label}: header and nonce layout")(header_ok)
        check(f"{label}: sealing the payload with the given nonce reproduces the bytes")(reseal)
        check(f"{label}: payload decodes to the plaintext")(payload_ok)
        check(f"{label}: opens to the plaintext")(open_ok)
        if kind == r.KIND_BLOCK:
            check(f"{label}: name is the block id of the plaintext")(
                lambda name=name, plaintext=plaintext: expect(
                    r.block_id(keys.block_id, plaintext) == name, "name != block id"))
        check(f"{label}: refused with another kind/name/compression/key")(wrong_context)
        check(f"{label}: every single-byte change is refused")(
            lambda sealed=sealed, kind=kind, name=name, raw_len=raw_len: flip_all(
                sealed, lambda d: r.open_sealed(keys.seal, d, kind, name, raw_length=raw_len),
                "sealed"))

    # --- pack ---------------------------------------------------------------------------------
    pv = v["pack"]
    pack_bytes, pack_name = H(pv["bytes"]), H(pv["name"])
    want_entries = [r.Entry(H(e["id"]), e["offset"], e["length"], e["raw_length"])
                    for e in pv["entries"]]

    def open_pack(data: bytes, name: bytes | None):
        p = r.parse_pack(keys.seal, data, name)
        return p, [r.open_block(keys, data[e.offset:e.offset + e.length], e.block_id,
                                e.raw_length) for e in p.entries]

    check(f"pack: name = BLAKE3 of its {len(pack_bytes)} bytes")(
        lambda: expect(r.blake3_hash(pack_bytes) == pack_name, "BLAKE3 differs"))

    def pack_parse():
        p, _ = open_pack(pack_bytes, pack_name)
        expect(p.entries == want_entries, f"entries {[e.to_json() for e in p.entries]}")
        expect(p.trailer_plaintext == H(pv["trailer_plaintext"]), "trailer plaintext differs")
        expect(r.parse_trailer_plaintext(H(pv["trailer_plaintext"])) == want_entries,
               "trailer_plaintext parses to other entries")

    check("pack: header, footer, trailer parse; entries equal the vector's")(pack_parse)

    def pack_blocks():
        _, blocks = open_pack(pack_bytes, pack_name)
        expect(blocks == [H(b) for b in pv["blocks"]], "blocks differ")
        ids = {b["id"]: H(b["plaintext"]) for b in v["block_ids"]}
        for e, b in zip(want_entries, blocks):
            if e.block_id.hex() in ids:
                expect(ids[e.block_id.hex()] == b, "block differs from block_ids vector")

    check("pack: every block opens (id as name, raw_length, keyed id) to the listed plaintext")(
        pack_blocks)
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

    # --- index segment ------------------------------------------------------------------------
    iv = v["index_segment"]
    seg_bytes, seg_name = H(iv["sealed"]), H(iv["name"])
    want_segment = [(H(p["pack"]), [r.Entry(H(e["id"]), e["offset"], e["length"],
                                            e["raw_length"]) for e in p["entries"]])
                    for p in iv["packs"]]
    check("index segment: name = BLAKE3 of the sealed bytes")(
        lambda: expect(r.blake3_hash(seg_bytes) == seg_name, "BLAKE3 differs"))

    def seg_open():
        got = r.open_index_segment(keys.seal, seg_bytes, seg_name)
        expect(got == want_segment, "parsed segment differs from the vector's packs")
        o = r.open_sealed(keys.seal, seg_bytes, r.KIND_INDEX, b"")
        expect(o.plaintext == H(iv["plaintext"]), "plaintext differs")
        expect(r.parse_index_plaintext(H(iv["plaintext"])) == want_segment, "plaintext parse")
        # Re-sealing with the nonce found in the object reproduces it (payload as stored)
        expect(r.seal(keys.seal, r.KIND_INDEX, o.compression, o.nonce, o.payload) == seg_bytes,
               "re-seal")

    check("index segment: opens (kind 3, empty name) and parses to the vector's packs")(seg_open)

    def seg_matches_pack():
        for pid, entries in want_segment:
            expect(pid == pack_name, "segment names another pack")
            expect(entries == want_entries, "segment entries != pack trailer entries")
            for e in entries:
                r.open_block(keys, pack_bytes[e.offset:e.offset + e.length], e.block_id,
                             e.raw_length)

    check("index segment: its entries locate and open the pack's blocks")(seg_matches_pack)
    check("index segment: every single-byte change is refused (without the name check)")(
        lambda: flip_all(seg_bytes, lambda d: r.open_index_segment(keys.seal, d), "segment"))
    check("index segment: a changed byte is refused by the name check alone")(
        lambda: must_fail(lambda: r.open_index_segment(keys.seal, flip(seg_bytes, 40), seg_name)))

    # --- config -------------------------------------------------------------------------------
    config_raw = v["config"]["bytes"].encode("utf-8")
    config = r.parse_config(config_raw)
    check("config: validates against config.schema.json (version 1)")(
        lambda: r.validate_schema(json.loads(config_raw), "config.schema.json", "config"))
    check("config: key_check = BLAKE3-keyed(key-check key, repo_id bytes)")(
        lambda: expect(r.blake3_keyed(keys.key_check, config.repo_id) == config.key_check,
                       "key_check differs") or r.check_master_key(config, master))

    def config_version():
        d = json.loads(config_raw)
        d["version"] = 2
        must_fail(lambda: r.parse_config(json.dumps(d).encode()))

    check("config: an unknown version is refused")(config_version)

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
