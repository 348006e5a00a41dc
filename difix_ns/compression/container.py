"""The `.dxs` file: one container for a quantized splat scene.

Layout (little endian):

    magic  b"DXSP"          4 bytes
    format version (uint16) 2 bytes
    CRC-32 of the body      4 bytes
    body                    raw LZMA2 stream (preset 9 extreme) of
        header length (uint32) + UTF-8 JSON header + the sections, one after another

The JSON header holds the counts, SH mode, the bits per attribute (format version 2; version 1 files, which have
none, were written at `codec.DEFAULT_BITS` and still decode), the float32 ranges (exact as JSON numbers), each
section's name, dtype and shape, and free metadata (the run's config.yml, its step). Sections are stored planar for
the entropy coder:
columns one after another, 16-bit values split into a high-byte and a low-byte plane, and the Morton-sorted means
delta coded along the Gaussians (mod 2^16). Metadata values that are bytes (the deflated config.yml) follow the
sections as raw blobs, named with their lengths in the header. Decoding checks everything before trusting it and
raises ValueError naming the file.
"""

from __future__ import annotations

import json
import lzma
import struct
import zlib
from typing import Dict, Tuple

import numpy as np

from difix_ns.compression.codec import DEFAULT_BITS, QuantizedGaussians, check_bits

__all__ = ["FORMAT_VERSION", "MAGIC", "PREFIX_BYTES", "READABLE_VERSIONS", "pack", "unpack"]

MAGIC = b"DXSP"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
_PREFIX = struct.Struct("<4sHI")
PREFIX_BYTES = _PREFIX.size
_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
_DTYPES = {"u1": np.uint8, "u2": np.uint16}
_DELTA_CODED = ("means",)


def _planes(codes: np.ndarray, delta: bool) -> bytes:
    """Column-major bytes of [N, ...] codes; uint16 as a high-byte plane then a low-byte plane."""
    flat = codes.reshape(codes.shape[0], -1)
    if delta and flat.shape[0] > 1:
        flat = np.concatenate([flat[:1], np.diff(flat, axis=0)]).astype(flat.dtype)  # wraps mod 2^bits
    columns = np.ascontiguousarray(flat.T)
    if columns.dtype == np.uint16:
        return (columns >> 8).astype(np.uint8).tobytes() + (columns & 0xFF).astype(np.uint8).tobytes()
    return columns.tobytes()


def _from_planes(data: bytes, dtype, shape: Tuple[int, ...], delta: bool) -> np.ndarray:
    n = shape[0]
    width = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
    raw = np.frombuffer(data, dtype=np.uint8)
    if dtype == np.uint16:
        half = raw.size // 2
        columns = (raw[:half].astype(np.uint16) << 8) | raw[half:].astype(np.uint16)
    else:
        columns = raw.copy()
    flat = columns.reshape(width, n).T.copy()
    if delta and n > 1:
        mask = np.uint64(np.iinfo(dtype).max)  # undo the wrapping differences: a cumulative sum mod 2^bits
        flat = (np.cumsum(flat.astype(np.uint64), axis=0) & mask).astype(dtype)
    return flat.reshape(shape)


def _dtype_name(array: np.ndarray) -> str:
    for name, dtype in _DTYPES.items():
        if array.dtype == dtype:
            return name
    raise ValueError(f"codes must be uint8 or uint16, got {array.dtype}")


def pack(q: QuantizedGaussians, metadata: Dict[str, object]) -> bytes:
    """The file bytes of `q` plus `metadata` (JSON-serialisable values, or bytes stored raw)."""
    sections, payload = [], []
    blobs = {k: bytes(v) for k, v in metadata.items() if isinstance(v, (bytes, bytearray))}
    metadata = {k: v for k, v in metadata.items() if k not in blobs}
    for name, codes in q.codes.items():
        sections.append([name, _dtype_name(codes), list(codes.shape)])
        payload.append(_planes(codes, delta=name in _DELTA_CODED))
    header = {
        "sh_degree": q.sh_degree,
        "sh_coeffs": q.sh_coeffs,
        "sh_mode": q.sh_mode,
        "sh_bits": q.sh_bits,
        "bits": check_bits(q.bits),
        "ranges": {k: v.astype(np.float32).tolist() for k, v in q.ranges.items()},
        "sections": sections,
        "extra": q.extra,
        "metadata": metadata,
        "blobs": [[name, len(blob)] for name, blob in blobs.items()],
    }
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    payload += list(blobs.values())
    body = lzma.compress(struct.pack("<I", len(text)) + text + b"".join(payload), format=lzma.FORMAT_RAW,
                         filters=_FILTERS)  # fmt: skip
    return _PREFIX.pack(MAGIC, FORMAT_VERSION, zlib.crc32(body)) + body


def _body(data: bytes, name: str) -> bytes:
    if len(data) < _PREFIX.size:
        raise ValueError(f"{name}: not a difix-ns splat file (only {len(data)} bytes, truncated?)")
    magic, version, crc = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"{name}: not a difix-ns splat file (starts with {magic!r}, expected {MAGIC!r})")
    if version not in READABLE_VERSIONS:
        raise ValueError(f"{name}: format version {version} is not supported (this difix-ns reads versions "
                         f"{', '.join(map(str, READABLE_VERSIONS))})")  # fmt: skip
    body = data[_PREFIX.size :]
    if zlib.crc32(body) != crc:
        raise ValueError(f"{name}: checksum mismatch, the file is corrupt or truncated ({len(data)} bytes)")
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_FILTERS)
    try:
        raw = decompressor.decompress(body)
    except lzma.LZMAError as error:
        raise ValueError(f"{name}: the compressed body is corrupt ({error})") from None
    if not decompressor.eof:
        raise ValueError(f"{name}: the compressed body is truncated")
    return raw


def _header(raw: bytes, name: str) -> Tuple[dict, int]:
    if len(raw) < 4:
        raise ValueError(f"{name}: the body is too short for a header")
    (length,) = struct.unpack_from("<I", raw)
    try:
        header = json.loads(raw[4 : 4 + length].decode("utf-8"))
        _ = (header["sections"], header["ranges"], header["sh_degree"], header["sh_coeffs"], header["sh_mode"])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{name}: the header is corrupt ({type(error).__name__}: {error})") from None
    return header, 4 + length


def _expected_sections(header: dict, n: int) -> Dict[str, tuple]:
    stored = (header["sh_degree"] + 1) ** 2 - 1
    expected = {"means": (n, 3), "scales": (n, 3), "quats": (n, 4), "opacities": (n, 1), "features_dc": (n, 3)}
    if header["sh_mode"] == "quant":
        expected["features_rest"] = (n, stored * 3)
    elif header["sh_mode"] == "kmeans":
        expected["sh_labels"] = (n,)
    return expected


def unpack(data: bytes, name: str = "<bytes>") -> Tuple[QuantizedGaussians, Dict[str, object]]:
    """(quantized Gaussians, metadata) of a file's bytes; ValueError naming `name` on anything malformed."""
    raw = _body(data, name)
    header, offset = _header(raw, name)
    codes = {}
    try:
        n = int(header["sections"][0][2][0])
        expected = _expected_sections(header, n)
        for section, dtype_name, shape in header["sections"]:
            dtype, shape = _DTYPES[dtype_name], tuple(int(s) for s in shape)
            if section in expected and shape != expected[section]:
                raise ValueError(f"section {section} has shape {list(shape)}, expected {list(expected[section])}")
            size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            if offset + size > len(raw):
                raise ValueError(f"section {section} runs past the end of the body")
            codes[section] = _from_planes(raw[offset : offset + size], dtype, shape, section in _DELTA_CODED)
            offset += size
        blobs = {}
        for blob, size in header.get("blobs", []):
            if offset + int(size) > len(raw):
                raise ValueError(f"metadata {blob} runs past the end of the body")
            blobs[str(blob)] = raw[offset : offset + int(size)]
            offset += int(size)
        missing = sorted(set(expected) - set(codes))
        if missing or offset != len(raw) or n < 1:
            raise ValueError(f"sections {missing} missing or {len(raw) - offset} stray bytes")
        ranges = {k: np.asarray(v, dtype=np.float32) for k, v in header["ranges"].items()}
        q = QuantizedGaussians(
            codes, ranges, int(header["sh_degree"]), int(header["sh_coeffs"]), str(header["sh_mode"]),
            int(header["sh_bits"]), dict(header.get("extra", {})), check_bits(header.get("bits", DEFAULT_BITS)),
        )  # fmt: skip
        _check_ranges(q)
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise ValueError(f"{name}: the file's layout is inconsistent ({error})") from None
    return q, {**dict(header.get("metadata", {})), **blobs}


def _check_ranges(q: QuantizedGaussians) -> None:
    needed = {"means": 3, "scales": 3, "features_dc": 3}
    if q.sh_mode == "quant":
        needed["features_rest"] = q.codes["features_rest"].shape[1]
    if q.sh_mode == "kmeans":
        needed["sh_centroids"] = q.codes["sh_centroids"].shape[1]
        if int(q.codes["sh_labels"].max()) >= q.codes["sh_centroids"].shape[0]:
            raise ValueError("an SH label points past the codebook")
    for key, bits in q.bits.items():
        if q.codes[key].size and int(q.codes[key].max()) >= 2**bits:
            raise ValueError(f"{key} holds codes past its {bits} bits")
    for key, width in needed.items():
        if q.ranges[key].shape != (2, width) or not np.isfinite(q.ranges[key]).all():
            raise ValueError(f"range of {key} must be 2 x {width} finite numbers, got shape {q.ranges[key].shape}")
    if q.sh_coeffs < (q.sh_degree + 1) ** 2 - 1 or q.sh_degree < 0:
        raise ValueError(f"sh_degree {q.sh_degree} does not fit {q.sh_coeffs} SH coefficients")
