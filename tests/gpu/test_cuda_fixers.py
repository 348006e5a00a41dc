"""CUDA-only checks of the fixer: bf16 autocast against fp32, and out-of-memory chunk halving on a real allocator.

Run by benchmarks/gpu/run.sh (step cuda_tests_fixers); skipped on a machine without CUDA.

Tolerances: the bf16 output is compared with the fp32 output of the same random weights by PSNR (bf16 vs fp32)
and mean absolute error. Calibrated on CPU with bf16 autocast on the same inputs: 31.5 dB / 0.013 for the tiny
model, 39.6 dB / 0.007 at SD-Turbo size; the bounds below leave 3-5 dB of room for CUDA's autocast op list.
"""

from __future__ import annotations

import math

import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

# (model size, H, W, minimum PSNR of bf16 against fp32 in dB, maximum mean |bf16 - fp32|)
PARITY_CASES = [("tiny", 128, 192, 28.0, 0.02), ("full", 256, 256, 35.0, 0.01)]


def _images(batch: int, height: int, width: int, seed: int = 1) -> torch.Tensor:
    """Smooth random images with a little noise (closer to renders than uniform noise), on CUDA."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, max(height // 16, 1), max(width // 16, 1), generator=g)
    x = torch.nn.functional.interpolate(low, size=(height, width), mode="bicubic", align_corners=False)
    return (x + 0.05 * torch.randn(batch, 3, height, width, generator=g)).clamp(0, 1).cuda()


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a.float() - b.float()).square().mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


@pytest.fixture
def strict_fp32():
    """fp32 means fp32: no TF32 in cuDNN convolutions or matmuls while the reference is computed."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("size,height,width,min_psnr,max_mean_err", PARITY_CASES)
def test_difix_bf16_autocast_matches_fp32(strict_fp32, size, height, width, min_psnr, max_mean_err):
    from difix_ns.fixers.difix import DifixFixer

    fixer = DifixFixer.random(size=size, seed=0, device="cuda")
    x = _images(2, height, width)
    reference = fixer.configure(precision="fp32").fix(x)
    out = fixer.configure(precision="bf16").fix(x)
    assert fixer.runtime.autocast_dtype is torch.bfloat16
    assert out.shape == x.shape and out.dtype == torch.float32 and out.is_cuda
    psnr, mean_err = _psnr(out, reference), float((out - reference).abs().mean())
    assert psnr >= min_psnr and mean_err <= max_mean_err, (
        f"bf16 vs fp32 ({size}, {height}x{width}): PSNR {psnr:.1f} dB (min {min_psnr}), "
        f"mean |diff| {mean_err:.4f} (max {max_mean_err})"
    )


def _set_budget(extra_bytes: int) -> None:
    """Cap this process's CUDA allocator at what it holds now plus `extra_bytes`."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, (torch.cuda.memory_reserved() + extra_bytes) / total))


@pytest.fixture
def memory_budget():
    """Yields `_set_budget`; lifts the cap afterwards whatever happens."""
    yield _set_budget
    torch.cuda.set_per_process_memory_fraction(1.0)
    torch.cuda.empty_cache()


def _one_image_peak(fixer, x: torch.Tensor) -> int:
    """Peak bytes allocated by fixing one image (above what was allocated before)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fixer.configure(chunk_size=1).fix(x[:1])
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def test_oom_halving_on_forced_small_budget(strict_fp32, memory_budget):
    from difix_ns.fixers.difix import DifixFixer

    fixer = DifixFixer.random(size="tiny", seed=0, device="cuda").configure(precision="fp32")
    x = _images(8, 512, 768)
    expected = torch.cat([fixer.configure(chunk_size=1).fix(x[i : i + 1]) for i in range(8)])
    one = _one_image_peak(fixer, x)
    assert one > 16 * 2**20, f"one image needs only {one} bytes: too little to force an out-of-memory"

    memory_budget(3 * one)  # room for about 3 images: a chunk of 8 (and of 4) cannot fit, one of 2 or 1 can
    out = fixer.configure(chunk_size=8).fix(x)
    meta = dict(fixer.last_meta)
    assert meta["oom_retries"] >= 1 and meta["chunk_size"] in (1, 2), meta
    torch.testing.assert_close(out, expected, atol=1e-3, rtol=0)


def test_oom_on_a_single_image_raises_with_hint(memory_budget):
    from difix_ns.fixers.difix import DifixFixer

    fixer = DifixFixer.random(size="tiny", seed=0, device="cuda").configure(precision="fp32")
    x = _images(2, 512, 768)
    one = _one_image_peak(fixer, x)
    memory_budget(one // 8)
    with pytest.raises(torch.OutOfMemoryError, match="single image"):
        fixer.configure(chunk_size=2).fix(x)
