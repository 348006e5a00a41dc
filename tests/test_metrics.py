"""`difix_ns.metrics.psnr`: the one PSNR the curation, fixer training and benchmark scripts share."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from difix_ns.metrics import psnr


def test_psnr_is_ten_log10_of_one_over_the_mean_squared_error():
    rng = np.random.default_rng(0)
    a = rng.random((16, 16, 3)).astype(np.float32)
    b = np.clip(a + 0.05 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
    expected = 10 * math.log10(1 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    assert psnr(a, b) == pytest.approx(expected, abs=1e-5)
    assert psnr(torch.from_numpy(a)[None], torch.from_numpy(b)[None]) == pytest.approx(expected, abs=1e-4)
    assert psnr(a, a) == math.inf
