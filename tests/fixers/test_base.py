"""The Fixer interface: validation, size preservation, device/dtype, chunking and the out-of-memory fallback."""

from __future__ import annotations

import pytest
import torch

from difix_ns.fixers.base import Fixer, IdentityFixer, pad_to_multiple, resize_refs, run_in_chunks
from difix_ns.fixers.config import FixerConfig


class _ShiftFixer(Fixer):
    """Needs multiples of 8 and records the sizes it saw."""

    size_multiple = 8
    supports_refs = True

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[tuple] = []

    def _run(self, images, refs):
        self.seen.append((tuple(images.shape), None if refs is None else tuple(refs.shape)))
        out = images + self.w
        if refs is not None:
            out = out + 0 * refs.mean(1)
        return out


class _OomFixer(_ShiftFixer):
    def __init__(self, max_batch: int) -> None:
        super().__init__()
        self.max_batch = max_batch

    def _run(self, images, refs):
        if images.shape[0] > self.max_batch:
            raise torch.OutOfMemoryError("fake OOM")
        return super()._run(images, refs)


@pytest.mark.parametrize("hw", [(1, 1), (7, 13), (16, 16), (33, 65)])
def test_output_keeps_exact_size(hw):
    fixer = _ShiftFixer()
    x = torch.rand(2, 3, *hw)
    y = fixer.fix(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, x)
    assert all(s[0][2] % 8 == 0 and s[0][3] % 8 == 0 for s in fixer.seen)


def test_pad_to_multiple_roundtrip():
    x = torch.rand(1, 3, 10, 5)
    p, (h, w) = pad_to_multiple(x, 8)
    assert p.shape[-2:] == (16, 8)
    torch.testing.assert_close(p[..., :h, :w], x)


@pytest.mark.parametrize(
    "images, refs, match",
    [
        (torch.rand(1, 4, 8, 8), None, r"\[B,3,H,W\]"),
        (torch.rand(3, 8, 8), None, r"\[B,3,H,W\]"),
        (torch.rand(1, 3, 8, 8) * 2, None, r"in \[0,1\]"),
        (torch.full((1, 3, 8, 8), float("nan")), None, "NaN"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), None, "floating point"),
        (torch.rand(2, 3, 8, 8), torch.rand(1, 1, 3, 8, 8), "batch size"),
        (torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), r"\[B,R,3,H,W\]"),
        (torch.rand(1, 3, 8, 8), torch.rand(1, 0, 3, 8, 8), "R >= 1"),
        (torch.rand(1, 3, 8, 8), -torch.rand(1, 1, 3, 8, 8) - 0.1, r"refs must be in \[0,1\]"),
    ],
)
def test_bad_input_raises_value_error(images, refs, match):
    with pytest.raises(ValueError, match=match):
        IdentityFixer().fix(images, refs)


def test_empty_batch_returns_empty():
    y = IdentityFixer().fix(torch.rand(0, 3, 9, 9))
    assert y.shape == (0, 3, 9, 9)


def test_refs_of_other_size_are_resized():
    fixer = _ShiftFixer()
    fixer.fix(torch.rand(2, 3, 20, 30), torch.rand(2, 3, 3, 11, 17))
    img_shape, ref_shape = fixer.seen[0]
    assert ref_shape == (2, 3, 3) + img_shape[2:]
    r = resize_refs(torch.rand(1, 2, 3, 11, 17), (20, 30))
    assert r.shape == (1, 2, 3, 20, 30) and r.min() >= 0 and r.max() <= 1


def test_refs_ignored_with_warning_when_unsupported():
    class NoRefs(_ShiftFixer):
        supports_refs = False

    fixer = NoRefs()
    with pytest.warns(UserWarning, match="does not use reference views"):
        fixer.fix(torch.rand(1, 3, 8, 8), torch.rand(1, 1, 3, 8, 8))
    assert fixer.seen[0][1] is None


def test_dtype_and_device_follow_module_and_return_to_input():
    fixer = _ShiftFixer().to(torch.float64)
    x = torch.rand(1, 3, 8, 8, dtype=torch.float32)
    y = fixer.fix(x)
    assert y.dtype == torch.float32
    assert fixer.dtype == torch.float64


def test_chunking_and_oom_fallback():
    fixer = _OomFixer(max_batch=2).configure(chunk_size=8)
    x = torch.rand(7, 3, 8, 8)
    y = fixer.fix(x)
    torch.testing.assert_close(y, x)
    assert fixer.last_meta == {"chunk_size": 2, "oom_retries": 2}
    assert max(s[0][0] for s in fixer.seen) <= 2


def test_oom_on_single_image_raises_with_hint():
    fixer = _OomFixer(max_batch=0)
    with pytest.raises(torch.OutOfMemoryError, match="single image"):
        fixer.fix(torch.rand(3, 3, 8, 8))


def test_run_in_chunks_plain_function():
    out, meta = run_in_chunks(lambda x, r: x * 2, torch.ones(5, 1), None, chunk_size=2)
    assert out.shape == (5, 1) and meta["oom_retries"] == 0


def test_forward_is_differentiable():
    fixer = _ShiftFixer()
    x = torch.rand(1, 3, 9, 9)
    fixer(x).sum().backward()
    assert fixer.w.grad is not None


def test_fixer_config_identity_and_errors():
    fixer = FixerConfig(backend="identity", device="cpu").setup()
    x = torch.rand(1, 3, 5, 6)
    torch.testing.assert_close(fixer.fix(x), x)
    with pytest.raises(ValueError, match="needs a checkpoint"):
        FixerConfig(backend="difix", device="cpu").setup()
    with pytest.raises(ValueError, match="unknown fixer backend"):
        FixerConfig(backend="nope", device="cpu").setup()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="precision"):
        IdentityFixer().configure(precision="fp8")
