#!/usr/bin/env python3
"""Independent reader for pgfrost repository format version 1.

Written from docs/format.md and proto/ alone (not from the Rust sources). Library plus a small CLI:

    pgfrost_reader.py derive MASTER_KEY_HEX
    pgfrost_reader.py block-id MASTER_KEY_HEX FILE
    pgfrost_reader.py config CONFIG_FILE
    pgfrost_reader.py open-slot CONFIG_FILE SLOT_FILE        (passphrase from PGFROST_PASSPHRASE)
    pgfrost_reader.py key-file CONFIG_FILE KEY_FILE
    pgfrost_reader.py pack MASTER_KEY_HEX PACK_FILE
    pgfrost_reader.py index MASTER_KEY_HEX SEGMENT_FILE

Errors: WrongPassphrase (a slot's check value does not match), FormatError (anything refused:
malformed, unknown version, failed authentication, wrong name/hash...).
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

SEALED_MAGIC = b"PGFR"
SEALED_VERSION = 1
KIND_BLOCK, KIND_TRAILER, KIND_INDEX, KIND_WAL, KIND_STANZA_DB, KIND_MANIFEST = 1, 2, 3, 4, 5, 6
KINDS = {KIND_BLOCK: "block", KIND_TRAILER: "pack trailer", KIND_INDEX: "index segment",
         KIND_WAL: "wal file", KIND_STANZA_DB: "stanza db record", KIND_MANIFEST: "manifest"}
COMPRESSION_NONE, COMPRESSION_ZSTD = 0, 1
HEADER_LEN = 8
NONCE_LEN = 24
TAG_LEN = 16
SEALED_OVERHEAD = HEADER_LEN + NONCE_LEN + TAG_LEN  # 48
MAX_OBJECT_PLAINTEXT = 1 << 30  # "other objects: at most 1 GiB"

PACK_MAGIC = b"PGFP"
PACK_VERSION = 1
PACK_FOOTER_MAGIC = b"PGFE"
PACK_HEADER_LEN = 8
PACK_FOOTER_LEN = 8
ENTRY_LEN = 44

CONFIG_VERSION = 1
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
    """Opens a sealed object. For a block, pass name = block id and raw_length from the index;
    other objects are limited to 1 GiB of plaintext."""
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
    if expected_kind == KIND_BLOCK and len(name) != 32:
        raise ValueError("a block is opened with its 32-byte id as name")
    nonce = data[HEADER_LEN:HEADER_LEN + NONCE_LEN]
    payload = aead_decrypt(seal_key, nonce, data[HEADER_LEN + NONCE_LEN:], header + name)
    if compression == COMPRESSION_ZSTD:
        if raw_length is not None:
            plaintext = zstd_decompress_exact(payload, exact=raw_length)
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


def open_block(keys: SubKeys, sealed: bytes, bid: bytes, raw_length: int) -> bytes:
    """Opens a sealed block: AEAD with the id as name, exact raw_length, recomputed keyed id."""
    plaintext = open_sealed(keys.seal, sealed, KIND_BLOCK, bid, raw_length=raw_length).plaintext
    if not ct_eq(block_id(keys.block_id, plaintext), bid):
        raise FormatError(f"block {bid.hex()}: recomputed id differs")
    return plaintext


# --- index entries, trailers, packs ------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    block_id: bytes
    offset: int
    length: int
    raw_length: int

    def to_json(self) -> dict:
        return {"id": self.block_id.hex(), "offset": self.offset, "length": self.length,
                "raw_length": self.raw_length}


def _parse_entries(buf: bytes, pos: int, count: int, what: str) -> tuple[list[Entry], int]:
    need = count * ENTRY_LEN
    if len(buf) - pos < need:
        raise FormatError(f"{what}: {count} entries need {need} bytes, {len(buf) - pos} left")
    out = []
    for _ in range(count):
        bid = buf[pos:pos + 32]
        off, length, raw = struct.unpack_from("<III", buf, pos + 32)
        out.append(Entry(bid, off, length, raw))
        pos += ENTRY_LEN
    return out, pos


def check_entries_layout(entries: list[Entry], blocks_end: int, what: str, *,
                         contiguous: bool = True) -> None:
    """Entries are in pack order, do not overlap, lie between the header and the trailer, each
    at least 48 bytes. With contiguous=True also that they are back to back and fill the space
    exactly (the pack table says 'sealed blocks (kind 1), back to back')."""
    prev_end = PACK_HEADER_LEN
    for i, e in enumerate(entries):
        if e.length < SEALED_OVERHEAD:
            raise FormatError(f"{what}: entry {i} is {e.length} bytes, less than 48")
        if e.offset < PACK_HEADER_LEN:
            raise FormatError(f"{what}: entry {i} starts inside the pack header")
        if e.offset < prev_end:
            raise FormatError(f"{what}: entry {i} overlaps the previous one or is out of order")
        if contiguous and e.offset != prev_end:
            raise FormatError(f"{what}: gap before entry {i} (blocks are not back to back)")
        if e.offset + e.length > blocks_end:
            raise FormatError(f"{what}: entry {i} extends past the start of the trailer")
        prev_end = e.offset + e.length
    if contiguous and prev_end != blocks_end:
        raise FormatError(f"{what}: {blocks_end - prev_end} unaccounted bytes before the trailer")


def parse_trailer_plaintext(pt: bytes) -> list[Entry]:
    if len(pt) < 4:
        raise FormatError("pack trailer: shorter than its count")
    (count,) = struct.unpack_from("<I", pt, 0)
    entries, pos = _parse_entries(pt, 4, count, "pack trailer")
    if pos != len(pt):
        raise FormatError(f"pack trailer: {len(pt) - pos} trailing bytes")
    return entries


@dataclass
class Pack:
    name: bytes
    entries: list[Entry]
    trailer_plaintext: bytes
    trailer_offset: int


def parse_pack(seal_key: bytes, data: bytes, expected_name: bytes | None = None, *,
               contiguous: bool = True) -> Pack:
    """Parses a pack: name (BLAKE3 of the bytes, when expected_name is given), header, footer,
    trailer (sealed kind 2, empty name) and the entries' layout. Blocks are not opened."""
    name = blake3_hash(data)
    if expected_name is not None and not ct_eq(name, expected_name):
        raise FormatError(f"pack: BLAKE3 of the bytes is {name.hex()}, not its name "
                          f"{expected_name.hex()}")
    if len(data) < PACK_HEADER_LEN + SEALED_OVERHEAD + PACK_FOOTER_LEN:
        raise FormatError("pack: too short")
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
    entries = parse_trailer_plaintext(trailer.plaintext)
    check_entries_layout(entries, trailer_start, "pack trailer", contiguous=contiguous)
    return Pack(name, entries, trailer.plaintext, trailer_start)


def pack_path(stanza: str, pack_id: bytes) -> str:
    h = pack_id.hex()
    return f"{stanza}/pack/{h[:2]}/{h}"


# --- index segments ----------------------------------------------------------------------------


def parse_index_plaintext(pt: bytes) -> list[tuple[bytes, list[Entry]]]:
    if len(pt) < 4:
        raise FormatError("index segment: shorter than its pack count")
    (pack_count,) = struct.unpack_from("<I", pt, 0)
    pos = 4
    out = []
    for p in range(pack_count):
        if len(pt) - pos < 36:
            raise FormatError(f"index segment: pack {p} truncated")
        pack_id = pt[pos:pos + 32]
        (count,) = struct.unpack_from("<I", pt, pos + 32)
        entries, pos = _parse_entries(pt, pos + 36, count, f"index segment pack {p}")
        # The documented layout rules of trailer entries ("as in trailers"), minus the
        # trailer-position bound which the segment cannot know.
        for i, e in enumerate(entries):
            if e.length < SEALED_OVERHEAD or e.offset < PACK_HEADER_LEN:
                raise FormatError(f"index segment pack {p} entry {i}: impossible location")
        out.append((pack_id, entries))
    if pos != len(pt):
        raise FormatError(f"index segment: {len(pt) - pos} trailing bytes")
    return out


def open_index_segment(seal_key: bytes, data: bytes,
                       expected_name: bytes | None = None) -> list[tuple[bytes, list[Entry]]]:
    if expected_name is not None and not ct_eq(blake3_hash(data), expected_name):
        raise FormatError(f"index segment {expected_name.hex()}: BLAKE3 of the bytes differs")
    opened = open_sealed(seal_key, data, KIND_INDEX, b"")
    return parse_index_plaintext(opened.plaintext)


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


def slot_ad(config: Config, slot: dict) -> bytes:
    return SLOT_AD_PREFIX + config.repo_id + unhex(slot["id"], 16, "slot id") + config.hash


def open_key_slot(config: Config, slot: dict, passphrase: bytes) -> tuple[bytes, bytes]:
    """Returns (master key, KEK). WrongPassphrase if the check differs; Corruption if the check
    matches but the wrapped key does not open (slot or config altered)."""
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
    """Tries every slot (name, bytes); names starting with '.' must already be filtered out."""
    for name, raw in slots:
        slot = parse_key_slot(raw, name)
        try:
            master, _ = open_key_slot(config, slot, passphrase)
        except WrongPassphrase:
            continue
        check_master_key(config, master)
        return master
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
            for e in pack.entries:
                open_block(k, data[e.offset:e.offset + e.length], e.block_id, e.raw_length)
            print(json.dumps({"name": pack.name.hex(),
                              "entries": [e.to_json() for e in pack.entries]}, indent=2))
        elif cmd == "index":
            k = derive_subkeys(unhex(args[0], 32))
            data = Path(args[1]).read_bytes()
            segs = open_index_segment(k.seal, data, unhex(Path(args[1]).name, 32, "segment name"))
            print(json.dumps([{"pack": p.hex(), "entries": [e.to_json() for e in es]}
                              for p, es in segs], indent=2))
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
