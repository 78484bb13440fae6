#!/usr/bin/env python3
"""Independent reader for pgfrost repository format version 2.

Written from docs/format.md and proto/ alone (not from the Rust sources). Library plus a small CLI:

    pgfrost_reader.py derive MASTER_KEY_HEX
    pgfrost_reader.py block-id MASTER_KEY_HEX FILE
    pgfrost_reader.py config CONFIG_FILE
    pgfrost_reader.py open-slot CONFIG_FILE SLOT_FILE        (passphrase from PGFROST_PASSPHRASE)
    pgfrost_reader.py key-file CONFIG_FILE KEY_FILE
    pgfrost_reader.py pack MASTER_KEY_HEX PACK_FILE
    pgfrost_reader.py index MASTER_KEY_HEX SEGMENT_FILE

Errors: WrongPassphrase (a slot's check value does not match), FormatError (anything refused:
malformed, unknown version, failed authentication, wrong name/hash...); Corruption, a FormatError,
for a damaged key slot (integrity value differs, or the check matched but the key does not open).
"""

from __future__ import annotations

import hmac
import json
import os
import stat
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

try:
    import blake3 as _blake3
    import jsonschema
    import nacl.bindings as _nacl
    import nacl.exceptions as _nacl_exc
    import zstandard
    from argon2.low_level import Type as _Argon2Type
    from argon2.low_level import hash_secret_raw as _argon2_raw
except ImportError as e:  # pragma: no cover - reported to the user
    raise SystemExit(
        f"missing Python module ({e}); run: pip install -r proto/reference/requirements.txt"
    )

PROTO_DIR = Path(__file__).resolve().parent.parent

# --- constants (docs/format.md; proto/layouts.json) -------------------------------------------

CTX_BLOCK_ID = "pgfrost 2026-11-21 block id v1"
CTX_SEAL = "pgfrost 2026-11-21 object seal v1"
CTX_KEY_CHECK = "pgfrost 2026-11-21 master key check v1"
SLOT_AD_PREFIX = b"pgfrost key slot v1"
SLOT_CHECK_MESSAGE = b"pgfrost key slot check v1"
CTX_SLOT_INTEGRITY = "pgfrost 2026-11-21 key slot integrity v1"

SEALED_MAGIC = b"PGFR"
SEALED_VERSION = 1
KIND_RUN, KIND_TRAILER, KIND_INDEX, KIND_WAL, KIND_STANZA_DB, KIND_MANIFEST, KIND_POINTS, \
    KIND_OUTCOME = 1, 2, 3, 4, 5, 6, 7, 8
KINDS = {KIND_RUN: "block run", KIND_TRAILER: "pack trailer", KIND_INDEX: "index segment",
         KIND_WAL: "wal file", KIND_STANZA_DB: "stanza db record", KIND_MANIFEST: "manifest",
         KIND_POINTS: "restore points", KIND_OUTCOME: "outcome"}
COMPRESSION_NONE, COMPRESSION_ZSTD = 0, 1
HEADER_LEN = 8
NONCE_LEN = 24
TAG_LEN = 16
SEALED_OVERHEAD = HEADER_LEN + NONCE_LEN + TAG_LEN  # 48
MAX_OBJECT_PLAINTEXT = 1 << 30  # "other objects: at most 1 GiB"

PACK_MAGIC = b"PGFP"
PACK_VERSION = 2
PACK_FOOTER_MAGIC = b"PGFE"
PACK_HEADER_LEN = 8
PACK_FOOTER_LEN = 8
MAX_PACK_LEN = (1 << 32) - 1  # "offsets are u32, so a pack is smaller than 4 GiB"
RUN_HEAD_LEN = 12  # offset u32 | length u32 | block_count u32
RUN_BLOCK_LEN = 36  # block id [32] | raw_length u32
MAX_RUN_PLAINTEXT = (1 << 32) - 1  # "a run's plaintext length is ... less than 2^32"

CONFIG_VERSION = 2
KEY_SLOT_VERSION = 1
KEY_FILE_VERSION = 1


class FormatError(Exception):
    """The object is malformed, altered, of an unknown version, or otherwise refused."""


class Corruption(FormatError):
    """Authentication failed where the key is known to be right (e.g. slot check matched)."""


class WrongPassphrase(Exception):
    """No key slot's check value matches the passphrase."""


# --- primitives --------------------------------------------------------------------------------


def blake3_hash(data: bytes) -> bytes:
    return _blake3.blake3(data).digest()


def blake3_keyed(key: bytes, data: bytes) -> bytes:
    if len(key) != 32:
        raise ValueError("BLAKE3 key must be 32 bytes")
    return _blake3.blake3(data, key=key).digest()


def derive_key(context: str, material: bytes) -> bytes:
    return _blake3.blake3(material, derive_key_context=context).digest()


@dataclass(frozen=True)
class SubKeys:
    block_id: bytes
    seal: bytes
    key_check: bytes


def derive_subkeys(master_key: bytes) -> SubKeys:
    if len(master_key) != 32:
        raise FormatError("master key must be 32 bytes")
    return SubKeys(
        block_id=derive_key(CTX_BLOCK_ID, master_key),
        seal=derive_key(CTX_SEAL, master_key),
        key_check=derive_key(CTX_KEY_CHECK, master_key),
    )


def block_id(block_id_key: bytes, plaintext: bytes) -> bytes:
    return blake3_keyed(block_id_key, plaintext)


def key_check_value(master_key: bytes, repo_id: bytes) -> bytes:
    return blake3_keyed(derive_key(CTX_KEY_CHECK, master_key), repo_id)


def aead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
    return _nacl.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, nonce, key)


def aead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    """Raises FormatError when authentication fails."""
    try:
        return _nacl.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, ad, nonce, key)
    except _nacl_exc.CryptoError as e:
        raise FormatError("authentication failed (XChaCha20-Poly1305)") from e


def ct_eq(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def unhex(s: str, n: int | None = None, what: str = "hex") -> bytes:
    if not isinstance(s, str) or s != s.lower():
        raise FormatError(f"{what}: not lower-case hex")
    try:
        b = bytes.fromhex(s)
    except ValueError as e:
        raise FormatError(f"{what}: not hex") from e
    if n is not None and len(b) != n:
        raise FormatError(f"{what}: expected {n} bytes, got {len(b)}")
    return b


# --- sealed objects ----------------------------------------------------------------------------


def sealed_header(kind: int, compression: int) -> bytes:
    return SEALED_MAGIC + bytes([SEALED_VERSION, kind, compression, 0])


def seal(seal_key: bytes, kind: int, compression: int, nonce: bytes, payload: bytes,
         name: bytes = b"") -> bytes:
    """Seals an already-encoded payload (raw plaintext or one zstd frame)."""
    if len(nonce) != NONCE_LEN:
        raise ValueError("nonce must be 24 bytes")
    header = sealed_header(kind, compression)
    return header + nonce + aead_encrypt(seal_key, nonce, payload, header + name)


def zstd_decompress_exact(payload: bytes, *, exact: int | None = None,
                          limit: int = MAX_OBJECT_PLAINTEXT) -> bytes:
    """One zstd frame that declares its content size; refuse no size, a size other than `exact`
    (when given) or above `limit`, and anything after the frame."""
    try:
        params = zstandard.get_frame_parameters(payload)
    except zstandard.ZstdError as e:
        raise FormatError(f"zstd: bad frame header ({e})") from e
    size = params.content_size
    if size == zstandard.CONTENTSIZE_UNKNOWN or size < 0:
        raise FormatError("zstd: frame does not declare its content size")
    if exact is not None and size != exact:
        raise FormatError(f"zstd: frame declares {size} bytes, expected exactly {exact}")
    if size > limit:
        raise FormatError(f"zstd: frame declares {size} bytes, more than the limit {limit}")
    try:
        out = zstandard.ZstdDecompressor().decompress(
            payload, max_output_size=size, read_across_frames=False, allow_extra_data=False
        )
    except zstandard.ZstdError as e:
        raise FormatError(f"zstd: {e}") from e
    if len(out) != size:
        raise FormatError(f"zstd: frame produced {len(out)} bytes, declared {size}")
    return out


@dataclass
class Opened:
    kind: int
    compression: int
    nonce: bytes
    payload: bytes  # after AEAD, before decompression
    plaintext: bytes


def open_sealed(seal_key: bytes, data: bytes, expected_kind: int, name: bytes = b"", *,
                raw_length: int | None = None) -> Opened:
    """Opens a sealed object. For a block run, pass the empty name and raw_length = the run's
    plaintext length (the sum of its blocks' raw_length, from the run list); other objects are
    limited to 1 GiB of plaintext."""
    if expected_kind == KIND_RUN and raw_length is None:
        raise ValueError("a block run is opened with its plaintext length from the run list")
    if len(data) < SEALED_OVERHEAD:
        raise FormatError(f"sealed object: {len(data)} bytes, shorter than the 48-byte overhead")
    header = data[:HEADER_LEN]
    if header[:4] != SEALED_MAGIC:
        raise FormatError(f"sealed object: bad magic {header[:4]!r}")
    if header[4] != SEALED_VERSION:
        raise FormatError(f"sealed object: unknown version {header[4]}")
    kind, compression, reserved = header[5], header[6], header[7]
    if kind != expected_kind:
        raise FormatError(
            f"sealed object: kind {kind}, expected {expected_kind} ({KINDS.get(expected_kind)})")
    if compression not in (COMPRESSION_NONE, COMPRESSION_ZSTD):
        raise FormatError(f"sealed object: unknown compression {compression}")
    if reserved != 0:
        raise FormatError("sealed object: reserved byte is not 0")
    nonce = data[HEADER_LEN:HEADER_LEN + NONCE_LEN]
    payload = aead_decrypt(seal_key, nonce, data[HEADER_LEN + NONCE_LEN:], header + name)
    if compression == COMPRESSION_ZSTD:
        if raw_length is not None:
            plaintext = zstd_decompress_exact(payload, exact=raw_length, limit=raw_length)
        else:
            plaintext = zstd_decompress_exact(payload, limit=MAX_OBJECT_PLAINTEXT)
    else:
        plaintext = payload
        if raw_length is not None and len(plaintext) != raw_length:
            raise FormatError(
                f"sealed object: {len(plaintext)} bytes of plaintext, expected {raw_length}")
        if raw_length is None and len(plaintext) > MAX_OBJECT_PLAINTEXT:
            raise FormatError("sealed object: plaintext larger than 1 GiB")
    return Opened(kind, compression, nonce, payload, plaintext)


# --- runs: run lists, packs --------------------------------------------------------------------


@dataclass(frozen=True)
class RunBlock:
    block_id: bytes
    raw_length: int

    def to_json(self) -> dict:
        return {"id": self.block_id.hex(), "raw_length": self.raw_length}


@dataclass(frozen=True)
class Run:
    """One run of a run list: where the sealed run lies in its pack, and its blocks in order."""
    offset: int
    length: int
    blocks: tuple[RunBlock, ...]

    @property
    def raw_length(self) -> int:
        """The run's plaintext length: the sum of its blocks' raw_length."""
        return sum(b.raw_length for b in self.blocks)

    def block_start(self, i: int) -> int:
        """Place of block i in the run's plaintext: the sum of the raw_length before it."""
        return sum(b.raw_length for b in self.blocks[:i])

    def to_json(self) -> dict:
        return {"offset": self.offset, "length": self.length,
                "blocks": [b.to_json() for b in self.blocks]}

    @classmethod
    def from_json(cls, d: dict) -> "Run":
        return cls(d["offset"], d["length"],
                   tuple(RunBlock(bytes.fromhex(b["id"]), b["raw_length"]) for b in d["blocks"]))


def encode_run_list(runs: list[Run]) -> bytes:
    """The run list's bytes (the writer's side; check_vectors.py uses it to forge trailers)."""
    out = bytearray(struct.pack("<I", len(runs)))
    for run in runs:
        out += struct.pack("<III", run.offset, run.length, len(run.blocks))
        for b in run.blocks:
            out += b.block_id + struct.pack("<I", b.raw_length)
    return bytes(out)


def parse_run_list(buf: bytes, pos: int, what: str) -> tuple[list[Run], int]:
    """Parses a run list starting at pos; returns the runs and the position after the list.
    Checks block_count >= 1 and a run plaintext length below 2^32; the layout in the pack is
    check_run_layout's."""
    if len(buf) - pos < 4:
        raise FormatError(f"{what}: shorter than its run count")
    (count,) = struct.unpack_from("<I", buf, pos)
    pos += 4
    # Every run takes at least a head and one block: refuse a count the bytes cannot hold
    # before looping over it.
    if count * (RUN_HEAD_LEN + RUN_BLOCK_LEN) > len(buf) - pos:
        raise FormatError(f"{what}: {count} runs cannot fit in {len(buf) - pos} bytes")
    runs = []
    for i in range(count):
        if len(buf) - pos < RUN_HEAD_LEN:
            raise FormatError(f"{what}: run {i} truncated in its head")
        offset, length, block_count = struct.unpack_from("<III", buf, pos)
        pos += RUN_HEAD_LEN
        if block_count == 0:
            raise FormatError(f"{what}: run {i} has block_count 0")
        if block_count * RUN_BLOCK_LEN > len(buf) - pos:
            raise FormatError(f"{what}: run {i}'s {block_count} blocks need "
                              f"{block_count * RUN_BLOCK_LEN} bytes, {len(buf) - pos} left")
        blocks = []
        for _ in range(block_count):
            (raw_length,) = struct.unpack_from("<I", buf, pos + 32)
            blocks.append(RunBlock(buf[pos:pos + 32], raw_length))
            pos += RUN_BLOCK_LEN
        run = Run(offset, length, tuple(blocks))
        if run.raw_length > MAX_RUN_PLAINTEXT:
            raise FormatError(f"{what}: run {i}'s plaintext would be {run.raw_length} bytes, "
                              "not less than 2^32")
        runs.append(run)
    return runs, pos


def check_run_layout(runs: list[Run], trailer_start: int | None, what: str) -> None:
    """The runs tile the space between the header and the trailer exactly: the first starts at
    offset 8, each starts where the one before ends, each is at least 48 bytes, and the last ends
    where the trailer starts. A run list in an index segment does not know where the trailer
    starts (trailer_start None): there the end must only leave room for a trailer and a footer in
    a pack smaller than 4 GiB."""
    prev_end = PACK_HEADER_LEN
    for i, run in enumerate(runs):
        if run.offset != prev_end:
            raise FormatError(f"{what}: run {i} starts at {run.offset}, not where the one before "
                              f"it ends ({prev_end})")
        if run.length < SEALED_OVERHEAD:
            raise FormatError(f"{what}: run {i} is {run.length} bytes, less than 48")
        prev_end = run.offset + run.length
    if trailer_start is not None and prev_end != trailer_start:
        raise FormatError(f"{what}: the runs end at {prev_end}, the trailer starts at "
                          f"{trailer_start}")
    if prev_end + SEALED_OVERHEAD + PACK_FOOTER_LEN > MAX_PACK_LEN:
        raise FormatError(f"{what}: the runs end at {prev_end}, past what a pack smaller than "
                          "4 GiB can hold")


def parse_trailer_plaintext(pt: bytes, trailer_start: int | None = None) -> list[Run]:
    """A run list and nothing after it, laid out as check_run_layout says."""
    runs, pos = parse_run_list(pt, 0, "pack trailer")
    if pos != len(pt):
        raise FormatError(f"pack trailer: {len(pt) - pos} trailing bytes")
    check_run_layout(runs, trailer_start, "pack trailer")
    return runs


@dataclass
class Pack:
    name: bytes
    runs: list[Run]
    trailer_plaintext: bytes  # the run list's exact bytes
    trailer_offset: int


def parse_pack(seal_key: bytes, data: bytes, expected_name: bytes | None = None) -> Pack:
    """Parses a pack: name (BLAKE3 of the bytes, when expected_name is given), header, footer,
    trailer (sealed kind 2, empty name) and the runs' layout. Runs are not opened."""
    name = blake3_hash(data)
    if expected_name is not None and not ct_eq(name, expected_name):
        raise FormatError(f"pack: BLAKE3 of the bytes is {name.hex()}, not its name "
                          f"{expected_name.hex()}")
    if len(data) < PACK_HEADER_LEN + SEALED_OVERHEAD + PACK_FOOTER_LEN:
        raise FormatError("pack: too short")
    if len(data) > MAX_PACK_LEN:
        raise FormatError("pack: not smaller than 4 GiB")
    if data[:4] != PACK_MAGIC:
        raise FormatError(f"pack: bad magic {data[:4]!r}")
    if data[4] != PACK_VERSION:
        raise FormatError(f"pack: unknown version {data[4]}")
    if data[5:8] != b"\0\0\0":
        raise FormatError("pack: reserved header bytes are not zero")
    if data[-4:] != PACK_FOOTER_MAGIC:
        raise FormatError(f"pack: bad footer magic {data[-4:]!r}")
    (t,) = struct.unpack_from("<I", data, len(data) - PACK_FOOTER_LEN)
    trailer_end = len(data) - PACK_FOOTER_LEN
    trailer_start = trailer_end - t
    if t < SEALED_OVERHEAD or trailer_start < PACK_HEADER_LEN:
        raise FormatError(f"pack: trailer length {t} does not fit")
    trailer = open_sealed(seal_key, data[trailer_start:trailer_end], KIND_TRAILER, b"")
    runs = parse_trailer_plaintext(trailer.plaintext, trailer_start)
    return Pack(name, runs, trailer.plaintext, trailer_start)


def pack_path(stanza: str, pack_id: bytes) -> str:
    h = pack_id.hex()
    return f"{stanza}/pack/{h[:2]}/{h}"


def open_run(keys: SubKeys, sealed: bytes, run: Run) -> list[bytes]:
    """Opens a sealed run (kind 1, empty name) to exactly the sum of its blocks' raw_length, cuts
    its plaintext into the blocks at the places the run list gives and recomputes every block's
    keyed id. Returns the blocks' plaintexts in run order."""
    if len(sealed) != run.length:
        raise ValueError(f"the run is {run.length} bytes, {len(sealed)} given")
    plaintext = open_sealed(keys.seal, sealed, KIND_RUN, b"", raw_length=run.raw_length).plaintext
    # Stricter than the text, which asks for the id of the block taken out: every block of the
    # run is checked (the run list is authenticated, so a mismatch anywhere is damage).
    out, pos = [], 0
    for i, b in enumerate(run.blocks):
        piece = plaintext[pos:pos + b.raw_length]
        pos += b.raw_length
        if not ct_eq(block_id(keys.block_id, piece), b.block_id):
            raise FormatError(f"run at offset {run.offset}, block {i} ({b.block_id.hex()}): "
                              "recomputed id differs")
        out.append(piece)
    return out


def read_run(keys: SubKeys, pack_data: bytes, run: Run) -> list[bytes]:
    """Reads bytes [offset, offset+length) of a pack (already checked by parse_pack, or whose
    run list came from an index segment) and opens them as the run."""
    if run.offset + run.length > len(pack_data):
        raise FormatError(f"run at offset {run.offset}: past the end of the pack")
    return open_run(keys, pack_data[run.offset:run.offset + run.length], run)


# --- index segments ----------------------------------------------------------------------------


@dataclass
class SegmentPack:
    pack_id: bytes
    runs: list[Run]
    run_list: bytes  # the run list's exact bytes, to compare with the pack's trailer plaintext


def parse_index_plaintext(pt: bytes) -> list[SegmentPack]:
    if len(pt) < 4:
        raise FormatError("index segment: shorter than its pack count")
    (pack_count,) = struct.unpack_from("<I", pt, 0)
    pos = 4
    if pack_count * (32 + 4) > len(pt) - pos:
        raise FormatError(f"index segment: {pack_count} packs cannot fit in {len(pt) - pos} "
                          "bytes")
    out = []
    for p in range(pack_count):
        if len(pt) - pos < 32:
            raise FormatError(f"index segment: pack {p} truncated")
        pack_id = pt[pos:pos + 32]
        start = pos + 32
        runs, pos = parse_run_list(pt, start, f"index segment pack {p}")
        # Stricter than the text, which only asks the run list to equal the pack's trailer's
        # (checked against the pack by check_segment_pack): the trailer's rules are checked here
        # already, except the end, which only the pack's footer tells.
        check_run_layout(runs, None, f"index segment pack {p}")
        out.append(SegmentPack(pack_id, runs, pt[start:pos]))
    if pos != len(pt):
        raise FormatError(f"index segment: {len(pt) - pos} trailing bytes")
    return out


def open_index_segment(seal_key: bytes, data: bytes,
                       expected_name: bytes | None = None) -> list[SegmentPack]:
    if expected_name is not None and not ct_eq(blake3_hash(data), expected_name):
        raise FormatError(f"index segment {expected_name.hex()}: BLAKE3 of the bytes differs")
    opened = open_sealed(seal_key, data, KIND_INDEX, b"")
    return parse_index_plaintext(opened.plaintext)


def check_segment_pack(seg_pack: SegmentPack, pack: Pack) -> None:
    """A pack's run list in a segment must equal, byte for byte, the run list of its trailer."""
    if seg_pack.pack_id != pack.name:
        raise ValueError("compare a segment's pack with the pack it names")
    if seg_pack.run_list != pack.trailer_plaintext:
        raise FormatError(f"index segment: the run list of pack {pack.name.hex()} differs from "
                          "the pack's trailer")


# --- JSON documents ----------------------------------------------------------------------------

_SCHEMAS: dict[str, dict] = {}


def schema(name: str) -> dict:
    if name not in _SCHEMAS:
        _SCHEMAS[name] = json.loads((PROTO_DIR / name).read_text())
    return _SCHEMAS[name]


def validate_schema(doc, schema_name: str, what: str) -> None:
    v = jsonschema.Draft202012Validator(schema(schema_name))
    errors = sorted(v.iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        msgs = "; ".join(f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors)
        raise FormatError(f"{what}: does not match {schema_name}: {msgs}")


def _load_json(data: bytes, what: str):
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{what}: not UTF-8 JSON ({e})") from e


def _check_version(doc, fmt: str, version: int, what: str) -> None:
    if not isinstance(doc, dict):
        raise FormatError(f"{what}: not a JSON object")
    if doc.get("format") != fmt:
        raise FormatError(f"{what}: format is {doc.get('format')!r}, expected {fmt!r}")
    if doc.get("version") != version:
        raise FormatError(f"{what}: unknown version {doc.get('version')!r}")


@dataclass
class Config:
    raw: bytes  # the exact bytes read
    doc: dict
    repo_id: bytes
    key_check: bytes

    @property
    def hash(self) -> bytes:
        return blake3_hash(self.raw)


def parse_config(raw: bytes) -> Config:
    doc = _load_json(raw, "config")
    _check_version(doc, "pgfrost-repository", CONFIG_VERSION, "config")
    validate_schema(doc, "config.schema.json", "config")
    return Config(raw, doc, unhex(doc["repo_id"], 16, "config.repo_id"),
                  unhex(doc["key_check"], 32, "config.key_check"))


def check_master_key(config: Config, master_key: bytes) -> None:
    if not ct_eq(key_check_value(master_key, config.repo_id), config.key_check):
        raise FormatError("master key does not match config.key_check")


def parse_key_slot(raw: bytes | dict, object_name: str | None = None) -> dict:
    slot = raw if isinstance(raw, dict) else _load_json(raw, "key slot")
    _check_version(slot, "pgfrost-key-slot", KEY_SLOT_VERSION, "key slot")
    validate_schema(slot, "key-slot.schema.json", "key slot")
    if object_name is not None and slot["id"] != object_name:
        raise FormatError(f"key slot: id {slot['id']} differs from its object name {object_name}")
    return slot


def slot_kek(slot: dict, passphrase: bytes) -> bytes:
    kdf = slot["kdf"]
    return _argon2_raw(
        secret=passphrase,
        salt=unhex(kdf["salt"], 16, "kdf.salt"),
        time_cost=kdf["iterations"],
        memory_cost=kdf["memory_kib"],
        parallelism=kdf["parallelism"],
        hash_len=32,
        type=_Argon2Type.ID,
        version=19,
    )


def _u32le(v, what: str) -> bytes:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << 32:
        raise FormatError(f"key slot: {what} is not an integer in 0..2^32")
    return struct.pack("<I", v)


def _text(v, what: str) -> bytes:
    if not isinstance(v, str):
        raise FormatError(f"key slot: {what} is not a string")
    try:
        b = v.encode("utf-8")
    except UnicodeEncodeError as e:
        raise FormatError(f"key slot: {what} is not valid UTF-8") from e
    return _u32le(len(b), f"length of {what}") + b


def slot_integrity_message(slot: dict) -> bytes:
    """docs/format.md, Key slots: the bytes the integrity value hashes (no created, no comment)."""
    kdf = slot["kdf"]
    return (_text(slot["format"], "format") + _u32le(slot["version"], "version")
            + unhex(slot["id"], 16, "slot id")
            + _text(kdf["algorithm"], "kdf.algorithm")
            + b"".join(_u32le(kdf[k], f"kdf.{k}")
                       for k in ("version", "memory_kib", "iterations", "parallelism"))
            + unhex(kdf["salt"], 16, "kdf.salt") + unhex(slot["check"], 32, "slot check")
            + unhex(slot["nonce"], 24, "slot nonce") + unhex(slot["wrapped_key"], 48, "wrapped_key"))


def slot_integrity(slot: dict) -> bytes:
    return derive_key(CTX_SLOT_INTEGRITY, slot_integrity_message(slot))


def check_slot_integrity(slot: dict) -> None:
    """Corruption if the slot's integrity value does not match; a slot without one (written
    before the field existed) passes. Runs before Argon2id: damage to the salt or the KDF
    parameters changes the KEK and would otherwise read as a wrong passphrase."""
    if "integrity" not in slot:
        return
    try:
        ok = ct_eq(slot_integrity(slot), unhex(slot["integrity"], 32, "slot integrity"))
    except FormatError as e:
        raise Corruption(f"key slot {slot.get('id')!r} is damaged: {e}") from e
    if not ok:
        raise Corruption(f"key slot {slot['id']} is damaged: its integrity value does not match "
                         "its contents (not a wrong passphrase)")


def slot_ad(config: Config, slot: dict) -> bytes:
    return SLOT_AD_PREFIX + config.repo_id + unhex(slot["id"], 16, "slot id") + config.hash


def open_key_slot(config: Config, slot: dict, passphrase: bytes) -> tuple[bytes, bytes]:
    """Returns (master key, KEK). Corruption if the integrity value differs; WrongPassphrase if
    the check differs; Corruption if the check matches but the wrapped key does not open (slot or
    config altered)."""
    check_slot_integrity(slot)
    kek = slot_kek(slot, passphrase)
    if not ct_eq(blake3_keyed(kek, SLOT_CHECK_MESSAGE), unhex(slot["check"], 32, "slot check")):
        raise WrongPassphrase(f"passphrase does not open key slot {slot['id']}")
    try:
        master = aead_decrypt(kek, unhex(slot["nonce"], 24, "slot nonce"),
                              unhex(slot["wrapped_key"], 48, "wrapped_key"), slot_ad(config, slot))
    except FormatError as e:
        raise Corruption(
            f"key slot {slot['id']}: passphrase check matched but the wrapped key does not open: "
            f"the slot or the config was altered") from e
    if len(master) != 32:
        raise Corruption("key slot: unwrapped key is not 32 bytes")
    return master, kek


def open_master_key(config: Config, slots: list[tuple[str, bytes]], passphrase: bytes) -> bytes:
    """Tries every slot (name, bytes); names starting with '.' must already be filtered out. A
    slot whose integrity value differs is skipped (the passphrase may be another slot's); if no
    slot opens, that damage is reported instead of a wrong passphrase."""
    damaged: list[Corruption] = []
    for name, raw in slots:
        slot = parse_key_slot(raw, name)
        try:
            check_slot_integrity(slot)
        except Corruption as e:
            damaged.append(e)
            continue
        try:
            master, _ = open_key_slot(config, slot, passphrase)
        except WrongPassphrase:
            continue
        check_master_key(config, master)
        return master
    if damaged:
        raise damaged[0]
    raise WrongPassphrase(f"the passphrase opens none of the {len(slots)} key slot(s)")


def validate_key_file(config: Config, path: str | os.PathLike | None = None, *,
                      data: bytes | None = None, check_file: bool = True) -> bytes:
    """Checks a key file and returns the master key. With check_file, the file must be a regular
    file (not followed through a symlink) owned by the reading user, with no group/other bits."""
    if path is not None:
        if check_file:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                raise FormatError("key file: not a regular file")
            if st.st_uid != os.geteuid():
                raise FormatError("key file: not owned by the reading user")
            if st.st_mode & 0o077:
                raise FormatError(f"key file: mode {stat.S_IMODE(st.st_mode):o} has group or "
                                  "other permission bits")
        data = Path(path).read_bytes()
    if data is None:
        raise ValueError("path or data")
    doc = _load_json(data, "key file")
    _check_version(doc, "pgfrost-key-file", KEY_FILE_VERSION, "key file")
    validate_schema(doc, "key-file.schema.json", "key file")
    if unhex(doc["repo_id"], 16) != config.repo_id:
        raise FormatError("key file: repo_id differs from the config's")
    if not ct_eq(unhex(doc["config_hash"], 32), config.hash):
        raise FormatError("key file: config_hash differs from BLAKE3(config bytes)")
    master = unhex(doc["master_key"], 32, "master_key")
    try:
        check_master_key(config, master)
    except FormatError as e:
        raise FormatError("key file: master key does not match config.key_check") from e
    return master


# --- CLI ---------------------------------------------------------------------------------------


def _main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    cmd, args = argv[0], argv[1:]
    try:
        if cmd == "derive":
            k = derive_subkeys(unhex(args[0], 32))
            print(json.dumps({"block_id_key": k.block_id.hex(), "seal_key": k.seal.hex(),
                              "key_check_key": k.key_check.hex()}, indent=2))
        elif cmd == "block-id":
            k = derive_subkeys(unhex(args[0], 32))
            print(block_id(k.block_id, Path(args[1]).read_bytes()).hex())
        elif cmd == "config":
            c = parse_config(Path(args[0]).read_bytes())
            print(json.dumps({"repo_id": c.repo_id.hex(), "config_hash": c.hash.hex()}))
        elif cmd == "open-slot":
            c = parse_config(Path(args[0]).read_bytes())
            p = Path(args[1])
            slot = parse_key_slot(p.read_bytes(), p.name)
            master, _ = open_key_slot(c, slot, os.environ["PGFROST_PASSPHRASE"].encode())
            check_master_key(c, master)
            print(master.hex())
        elif cmd == "key-file":
            c = parse_config(Path(args[0]).read_bytes())
            validate_key_file(c, args[1])
            print("ok")
        elif cmd == "pack":
            k = derive_subkeys(unhex(args[0], 32))
            data = Path(args[1]).read_bytes()
            pack = parse_pack(k.seal, data, unhex(Path(args[1]).name, 32, "pack name"))
            for run in pack.runs:
                read_run(k, data, run)
            print(json.dumps({"name": pack.name.hex(),
                              "runs": [run.to_json() for run in pack.runs]}, indent=2))
        elif cmd == "index":
            k = derive_subkeys(unhex(args[0], 32))
            data = Path(args[1]).read_bytes()
            segs = open_index_segment(k.seal, data, unhex(Path(args[1]).name, 32, "segment name"))
            print(json.dumps([{"pack": sp.pack_id.hex(), "runs": [run.to_json() for run in sp.runs]}
                              for sp in segs], indent=2))
        else:
            print(f"unknown command {cmd!r}", file=sys.stderr)
            return 2
    except WrongPassphrase as e:
        print(f"wrong passphrase: {e}", file=sys.stderr)
        return 3
    except FormatError as e:
        print(f"refused: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
