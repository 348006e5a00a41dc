"""Extreme splat compression (issue 13): importance pruning, SH reduction, quantization at rate-distortion chosen
bits, Morton order, LZMA; a
`.dxs` file under a hard byte budget, and back to an ordinary run folder; restoration pairs (compressed render,
uncompressed render) for a restorer. One codec in the project: curation's compression pairs go through it."""

from difix_ns.compression.budget import CodecOptions, EncodeResult, encode_at, encode_best, encode_to_budget
from difix_ns.compression.codec import (
    BITS_LADDER,
    DEFAULT_BITS,
    GAUSS_KEYS,
    QuantizedGaussians,
    blending_importance,
    check_bits,
    dequantize,
    fake_quantize,
    morton_codes,
    prune,
    quantize,
    reduce_sh_degree,
)
from difix_ns.compression.container import FORMAT_VERSION, MAGIC, pack, unpack

__all__ = [
    "BITS_LADDER",
    "CodecOptions",
    "DEFAULT_BITS",
    "EncodeResult",
    "FORMAT_VERSION",
    "GAUSS_KEYS",
    "MAGIC",
    "QuantizedGaussians",
    "blending_importance",
    "check_bits",
    "dequantize",
    "encode_at",
    "encode_best",
    "encode_to_budget",
    "fake_quantize",
    "morton_codes",
    "pack",
    "prune",
    "quantize",
    "reduce_sh_degree",
    "unpack",
]
