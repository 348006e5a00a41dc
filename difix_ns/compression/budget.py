"""Encode a scene at a given number of Gaussians, or at the most Gaussians whose file fits a byte budget.

The budget is a hard cap: only an encoding whose length was measured to be <= the budget is ever returned. The
size is not strictly monotone in the number of Gaussians kept (the entropy coder), so the search finds a
count that fits, not necessarily the largest one.

`encode_best` also chooses the bits per attribute: for each allocation of `codec.BITS_LADDER` it fits the budget,
then scores the decoded scene with a caller's measure (`compress` renders it at training cameras against the
uncompressed scene) and keeps the best: the encoder-side rate-distortion choice of a codec.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from difix_ns.compression.codec import BITS_LADDER, dequantize, prune, quantize
from difix_ns.compression.container import pack

__all__ = ["CodecOptions", "EncodeResult", "encode_at", "encode_best", "encode_to_budget"]

SECANT_COUNT_TOLERANCE = 0.001
"""The secant search stops when the count that fits is within this fraction of one that does not."""


@dataclass
class CodecOptions:
    """Settings of the quantizer."""

    sh_degree: int = 0
    """SH degree kept (the higher coefficients decode as 0)."""
    sh_bits: int = 6
    """Bits per higher-SH value when the SH are quantized directly (few Gaussians)."""
    codebook_size: int = 1024
    """k-means codebook entries for the higher SH (used from 4 x this many Gaussians on)."""
    seed: int = 0
    """k-means seed (same inputs, same bytes)."""
    bits: Optional[Dict[str, int]] = None
    """Bits per value of means, scales, quats, opacities, features_dc (None: `codec.DEFAULT_BITS`)."""


@dataclass
class EncodeResult:
    """One encoding and how it was found."""

    data: bytes
    """The file's bytes."""
    num_gaussians: int
    """Gaussians kept."""
    tries: List[Tuple[int, int]] = field(default_factory=list)
    """(Gaussians, bytes) of every encoding measured."""
    bits: Optional[Dict[str, int]] = None
    """The bits per attribute of the encoding (None: `codec.DEFAULT_BITS`)."""
    scores: List[Tuple[Dict[str, int], int, float]] = field(default_factory=list)
    """`encode_best`: (bits, Gaussians, score) of every allocation tried."""


def encode_at(
    params: Dict[str, np.ndarray], importance: np.ndarray, num_gaussians: int, options: CodecOptions,
    metadata: Dict[str, object], extra: Optional[Dict[str, object]] = None,
) -> bytes:  # fmt: skip
    """The file bytes of the `num_gaussians` most important Gaussians."""
    q = quantize(prune(params, importance, num_gaussians), options.sh_degree, options.sh_bits,
                 options.codebook_size, options.seed, options.bits)  # fmt: skip
    q.extra = dict(extra or {})
    return pack(q, metadata)


def encode_to_budget(
    params: Dict[str, np.ndarray], importance: np.ndarray, budget_bytes: int, options: CodecOptions,
    metadata: Dict[str, object], extra: Optional[Dict[str, object]] = None,
    on_try: Optional[Callable[[int, int], None]] = None, secant: bool = True,
) -> EncodeResult:  # fmt: skip
    """The encoding of the most Gaussians found whose file is at most `budget_bytes` long.

    The count is searched in a bracket [fits, does not fit]. `secant` (default): each try interpolates the size
    linearly between the bracket's ends (regula falsi, with the Illinois step against one-sided stalls), bisecting
    when that leaves the bracket or the bracket stops halving, and the search ends once the bracket is within
    `SECANT_COUNT_TOLERANCE` of the count (the entropy coder's size is noisy by tens of bytes there, so the last few
    Gaussians cost many tries): about half the encodings of bisection. False: bisection after one linear guess, to a
    one-wide bracket (the reference). Raises ValueError naming the smallest possible file when even one Gaussian
    does not fit."""
    n = int(params["means"].shape[0])
    tries: List[Tuple[int, int]] = []

    def measure(count: int) -> bytes:
        data = encode_at(params, importance, count, options, metadata, extra)
        tries.append((count, len(data)))
        if on_try is not None:
            on_try(count, len(data))
        return data

    full = measure(n)
    if len(full) <= budget_bytes:
        return EncodeResult(full, n, tries, options.bits)
    smallest = measure(1)
    if len(smallest) > budget_bytes:
        raise ValueError(
            f"a budget of {budget_bytes} bytes is below the smallest file this scene can be stored in: "
            f"{len(smallest)} bytes (header + one Gaussian)"
        )
    best, low, high = smallest, 1, n  # low fits, high does not
    excess = {"low": float(len(smallest) - budget_bytes), "high": float(len(full) - budget_bytes)}
    last_side, slow_steps = "", 0  # the bracket end the last try moved; tries in a row that did not halve it
    while high - low > max(1, int(SECANT_COUNT_TOLERANCE * low) if secant else 1):
        guess = int(low - excess["low"] * (high - low) / (excess["high"] - excess["low"]))
        if not secant and len(tries) > 2 or slow_steps >= 3 or not low < guess < high:
            guess = (low + high) // 2
        width = high - low
        data = measure(guess)
        side = "low" if len(data) <= budget_bytes else "high"
        if side == "low":
            best, low = data, guess
        else:
            high = guess
        if side == last_side:  # Illinois: the end kept twice weighs half, so the next try crosses over
            excess["high" if side == "low" else "low"] /= 2
        excess[side], last_side = float(len(data) - budget_bytes), side
        slow_steps = slow_steps + 1 if 2 * (high - low) > width else 0
    return EncodeResult(best, low, tries, options.bits)


def encode_best(
    params: Dict[str, np.ndarray], importance: np.ndarray, budget_bytes: int, options: CodecOptions,
    metadata: Dict[str, object], score: Callable[[Dict[str, np.ndarray]], float],
    ladder: Sequence[Dict[str, int]] = BITS_LADDER, extra: Optional[Dict[str, object]] = None,
    on_try: Optional[Callable[[int, int], None]] = None, secant: bool = True,
) -> EncodeResult:  # fmt: skip
    """The budget fitted at each bit allocation of `ladder` (fine to coarse), the one whose decoded Gaussians
    `score` rates highest (e.g. PSNR against the uncompressed scene). The ladder is walked until the score has
    fallen twice in a row (it rises while more Gaussians buy more than precision costs, then falls)."""
    from difix_ns.compression.container import unpack

    if not ladder:
        raise ValueError("the bit allocation ladder is empty")
    best: Optional[EncodeResult] = None
    scores: List[Tuple[Dict[str, int], int, float]] = []
    best_score, falls = -np.inf, 0
    for bits in ladder:
        result = encode_to_budget(params, importance, budget_bytes, replace(options, bits=dict(bits)), metadata,
                                  extra, on_try, secant)  # fmt: skip
        value = float(score(dequantize(unpack(result.data)[0])))
        scores.append((dict(bits), result.num_gaussians, value))
        if best is None or value > best_score:
            best, best_score, falls = result, value, 0
        else:
            falls += 1
            if falls == 2:
                break
    assert best is not None
    best.scores = scores
    return best
