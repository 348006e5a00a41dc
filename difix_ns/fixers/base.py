"""The one Fixer interface: an image batch in, an image batch of exactly the same size out.

Every back-end (`difix`, `nafnet`, `identity`) subclasses `Fixer` and implements only `_run`, which sees images
padded to a multiple of `size_multiple` and references already resized to the target size. `Fixer` does the rest,
once, for every back-end:

- `fix(images, refs)`: validates the input (raises `ValueError` naming the bad value), moves it to the module's
  device and dtype, splits the batch into chunks (halving the chunk on an out-of-memory error instead of
  crashing), runs under `torch.no_grad` with CUDA autocast when asked, clamps to [0, 1] and returns exactly the
  input's H and W on the input's device and dtype.
- `forward(images, refs)`: the same computation, differentiable, without validation or chunking (for training).

Documented handling of edge cases: an empty batch returns an empty batch; references of a different size are
resized (bilinear, antialiased) to the target size; a back-end that cannot use references (`supports_refs` is
False) ignores them with a one-time warning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

__all__ = [
    "Fixer",
    "IdentityFixer",
    "WarpedViews",
    "FixerRuntime",
    "pad_to_multiple",
    "resolve_precision",
    "resize_refs",
    "run_in_chunks",
    "validate_images",
]


@dataclass(frozen=True)
class WarpedViews:
    """K reference views warped into each target camera by depth (`difix_ns.geometry.warp_references`), with
    their validity masks (1 where the reference sees the target pixel, 0 elsewhere; the colour is 0 there)."""

    rgb: Float[Tensor, "B K 3 H W"]
    mask: Float[Tensor, "B K 1 H W"]

    def __getitem__(self, index: slice) -> "WarpedViews":
        return WarpedViews(self.rgb[index], self.mask[index])

    def to(self, device: torch.device, dtype: torch.dtype) -> "WarpedViews":
        return WarpedViews(self.rgb.to(device, dtype), self.mask.to(device, dtype))

    @staticmethod
    def none(batch: int, count: int, height: int, width: int, like: Tensor) -> "WarpedViews":
        """`count` views that see nothing (all masks 0): what a fixer with warped inputs gets without depth."""
        return WarpedViews(
            like.new_zeros(batch, count, 3, height, width), like.new_zeros(batch, count, 1, height, width)
        )

    def with_count(self, count: int) -> "WarpedViews":
        """The first `count` views, padded with views that see nothing when there are fewer."""
        b, k, _, h, w = self.rgb.shape
        if k >= count:
            return self[:, :count] if k > count else self  # type: ignore[index]
        pad = WarpedViews.none(b, count - k, h, w, self.rgb)
        return WarpedViews(torch.cat([self.rgb, pad.rgb], 1), torch.cat([self.mask, pad.mask], 1))

    def padded(self, multiple: int) -> "WarpedViews":
        """Zero-padded at the bottom/right to a multiple of `multiple` (padding is invalid: mask 0)."""
        h, w = self.rgb.shape[-2:]
        pad = (0, (-w) % multiple, 0, (-h) % multiple)
        if pad == (0, 0, 0, 0):
            return self
        return WarpedViews(F.pad(self.rgb, pad), F.pad(self.mask, pad))


def validate_warped(images: Tensor, warped: Optional[WarpedViews]) -> None:
    """Raise `ValueError` naming the problem if `warped` does not fit the batch `images` [B,3,H,W]."""
    if warped is None:
        return
    if not isinstance(warped, WarpedViews):
        raise ValueError(f"warped must be a WarpedViews or None, got {type(warped).__name__}")
    b, _, h, w = images.shape
    rgb, mask = warped.rgb, warped.mask
    if rgb.ndim != 5 or rgb.shape[0] != b or rgb.shape[2] != 3 or tuple(rgb.shape[3:]) != (h, w) or rgb.shape[1] < 1:
        raise ValueError(
            f"warped.rgb must have shape [B,K,3,H,W] = [{b},K,3,{h},{w}] with K >= 1, got {tuple(rgb.shape)}"
        )
    if tuple(mask.shape) != (*rgb.shape[:2], 1, h, w):
        raise ValueError(f"warped.mask must have shape {(*rgb.shape[:2], 1, h, w)}, got {tuple(mask.shape)}")
    _check_range(rgb, "warped.rgb")
    _check_range(mask, "warped.mask")


class _Extras:
    """References and warped views of a batch, sliced together by `run_in_chunks`."""

    def __init__(self, refs: Optional[Tensor], warped: Optional[WarpedViews]) -> None:
        self.refs, self.warped = refs, warped

    def __getitem__(self, index: slice) -> "_Extras":
        return _Extras(
            None if self.refs is None else self.refs[index], None if self.warped is None else self.warped[index]
        )


def _oom_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = []
    for holder, name in ((torch, "OutOfMemoryError"), (torch.cuda, "OutOfMemoryError")):
        err = getattr(holder, name, None)
        if isinstance(err, type) and err not in types:
            types.append(err)
    return tuple(types)


_OOM_ERRORS = _oom_error_types()


class FixerRuntime:
    """Speed and memory options shared by every back-end (plain attributes, not learned, never saved).

    Attributes:
        chunk_size: most images per forward pass in `fix`; halved on out-of-memory until 1.
        autocast_dtype: dtype for CUDA autocast (`torch.bfloat16`/`torch.float16`), or None for none.
            Autocast is only used on CUDA; on CPU the module's own dtype is used as is.
        channels_last: inputs (and, once `Fixer.configure` ran, weights) in channels-last memory format.
        compile: whether the back-end's main network runs through `torch.compile`.
    """

    def __init__(
        self,
        chunk_size: int = 4,
        autocast_dtype: Optional[torch.dtype] = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size
        self.autocast_dtype = autocast_dtype
        self.channels_last = channels_last
        self.compile = compile


def resolve_precision(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """Autocast dtype for a precision name: "fp32" -> None, "bf16", "fp16"; "auto" = bf16 (or fp16) on CUDA,
    None elsewhere."""
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be one of auto, fp32, bf16, fp16; got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def validate_images(images: Tensor, refs: Optional[Tensor]) -> None:
    """Raise `ValueError` naming the problem if `images` [B,3,H,W] / `refs` [B,R,3,h,w] are not valid fixer input."""
    if not isinstance(images, Tensor):
        raise ValueError(f"images must be a torch.Tensor [B,3,H,W], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape [B,3,H,W] (RGB), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a floating point tensor in [0,1], got dtype {images.dtype}")
    if images.shape[2] < 1 or images.shape[3] < 1:
        raise ValueError(f"images must have H, W >= 1, got {tuple(images.shape)}")
    _check_range(images, "images")
    if refs is None:
        return
    if not isinstance(refs, Tensor):
        raise ValueError(f"refs must be a torch.Tensor [B,R,3,H,W] or None, got {type(refs).__name__}")
    if refs.ndim != 5 or refs.shape[2] != 3:
        raise ValueError(f"refs must have shape [B,R,3,H,W] with R >= 1, got {tuple(refs.shape)}")
    if refs.shape[0] != images.shape[0]:
        raise ValueError(f"refs batch size {refs.shape[0]} does not match images batch size {images.shape[0]}")
    if refs.shape[1] < 1:
        raise ValueError(f"refs must hold at least one reference view (R >= 1), got shape {tuple(refs.shape)}")
    if not refs.is_floating_point():
        raise ValueError(f"refs must be a floating point tensor in [0,1], got dtype {refs.dtype}")
    _check_range(refs, "refs")


def _check_range(x: Tensor, name: str) -> None:
    if x.numel() == 0:
        return
    if torch.isnan(x).any():
        raise ValueError(f"{name} contains NaN values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name} must be in [0,1], got values in [{lo:.4g}, {hi:.4g}]")


def pad_to_multiple(
    images: Float[Tensor, "B C H W"], multiple: int
) -> tuple[Float[Tensor, "B C Hp Wp"], tuple[int, int]]:
    """Pad H and W up to a multiple of `multiple` (reflect where possible, else replicate), bottom/right only.

    Returns the padded batch and the original (H, W) so that `x[..., :H, :W]` undoes it.
    """
    h, w = images.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return images, (h, w)
    mode = "reflect" if (ph < h and pw < w) else "replicate"
    return F.pad(images, (0, pw, 0, ph), mode=mode), (h, w)


def resize_refs(refs: Float[Tensor, "B R C h w"], size: tuple[int, int]) -> Float[Tensor, "B R C H W"]:
    """Resize reference views to `size` = (H, W) (bilinear, antialiased); a no-op when they already match."""
    if tuple(refs.shape[-2:]) == tuple(size):
        return refs
    b, r = refs.shape[:2]
    flat = F.interpolate(refs.flatten(0, 1), size=size, mode="bilinear", antialias=True, align_corners=False)
    return flat.clamp(0, 1).unflatten(0, (b, r))


def run_in_chunks(
    fn: Callable[[Tensor, Optional[Tensor]], Tensor],
    images: Tensor,
    refs: Optional[Tensor],
    chunk_size: int,
    on_oom: Optional[Callable[[int], None]] = None,
) -> tuple[Tensor, dict]:
    """Run `fn` over the batch in chunks; on an out-of-memory error halve the chunk and retry.

    Returns the concatenated outputs and a `meta` dict with the `chunk_size` finally used and the number of
    `oom_retries`. Raises the out-of-memory error (with a hint) only if a chunk of 1 image does not fit.
    """
    outputs: list[Tensor] = []
    start, retries = 0, 0
    n = images.shape[0]
    while start < n:
        stop = min(start + chunk_size, n)
        try:
            outputs.append(fn(images[start:stop], None if refs is None else refs[start:stop]))
        except _OOM_ERRORS as err:
            if chunk_size == 1:
                raise type(err)(
                    f"out of memory on a single image of size {tuple(images.shape[-2:])}; use a smaller image, "
                    f"fewer reference views, or a lower precision ({err})"
                ) from err
            chunk_size = max(1, chunk_size // 2)
            retries += 1
            if on_oom is not None:
                on_oom(chunk_size)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        start = stop
    return torch.cat(outputs, dim=0), {"chunk_size": chunk_size, "oom_retries": retries}


class Fixer(nn.Module):
    """Base class of all fixers: `fix(images [B,3,H,W] in [0,1], refs [B,R,3,H,W] | None) -> [B,3,H,W]`.

    Subclasses set `size_multiple` (the H, W granularity their network needs) and `supports_refs`, and implement
    `_run(images, refs)` on padded input in [0,1]; one with `warped_references` = K > 0 implements
    `_run(images, refs, warped=...)` and always gets K warped views. Device and dtype follow the module's
    parameters.
    """

    size_multiple: int = 1
    supports_refs: bool = False
    warped_references: int = 0
    """Number K of depth-warped reference views the network takes as input (0: none)."""

    def __init__(self) -> None:
        super().__init__()
        self.runtime = FixerRuntime()
        self._warned_refs = False
        self.last_meta: dict = {}

    # ---------------------------------------------------------------- subclass hook
    def _run(
        self, images: Float[Tensor, "B 3 H W"], refs: Optional[Float[Tensor, "B R 3 H W"]]
    ) -> Float[Tensor, "B 3 H W"]:
        raise NotImplementedError

    # ---------------------------------------------------------------- speed
    def configure(
        self,
        chunk_size: Optional[int] = None,
        precision: Optional[str] = None,
        channels_last: Optional[bool] = None,
        compile: Optional[bool] = None,
    ) -> "Fixer":
        """Set speed/memory options (None keeps the current value); returns self.

        precision: "auto" (bf16/fp16 autocast on CUDA, fp32 elsewhere), "fp32", "bf16" or "fp16" (CUDA autocast).
        """
        rt = self.runtime
        if chunk_size is not None:
            if chunk_size < 1:
                raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
            rt.chunk_size = chunk_size
        if precision is not None:
            rt.autocast_dtype = resolve_precision(precision, self.device)
        if channels_last is not None:
            rt.channels_last = channels_last
        if compile is not None:
            rt.compile = compile
        self._optimize(rt.channels_last, rt.compile)
        return self

    def _optimize(self, channels_last: bool, compile: bool) -> None:
        """Subclass hook: apply memory format / torch.compile to the back-end's networks."""

    # ---------------------------------------------------------------- device / dtype
    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for t in self.parameters():
            if t.is_floating_point():
                return t.dtype
        for t in self.buffers():
            if t.is_floating_point():
                return t.dtype
        return torch.float32

    # ---------------------------------------------------------------- computation
    def forward(
        self,
        images: Float[Tensor, "B 3 H W"],
        refs: Optional[Float[Tensor, "B R 3 h w"]] = None,
        warped: Optional[WarpedViews] = None,
    ) -> Float[Tensor, "B 3 H W"]:
        """Differentiable fix of a batch: pads, runs the network, crops back. No validation, no chunking.

        `warped` reaches back-ends with `warped_references` > 0 (fitted to that many views; None = views that see
        nothing); the others ignore it."""
        if refs is not None and not self.supports_refs:
            self._warn_refs_ignored()
            refs = None
        padded, (h, w) = pad_to_multiple(images, self.size_multiple)
        if refs is not None:
            refs = resize_refs(refs, (h, w))
            refs = pad_to_multiple(refs.flatten(0, 1), self.size_multiple)[0].unflatten(0, refs.shape[:2])
        if self.warped_references == 0:
            return self._run(padded, refs)[..., :h, :w]
        if warped is None:
            warped = WarpedViews.none(images.shape[0], self.warped_references, h, w, images)
        warped = warped.with_count(self.warped_references).padded(self.size_multiple)
        return self._run(padded, refs, warped=warped)[..., :h, :w]

    @torch.no_grad()
    def fix(
        self,
        images: Float[Tensor, "B 3 H W"],
        refs: Optional[Float[Tensor, "B R 3 h w"]] = None,
        warped: Optional[WarpedViews] = None,
    ) -> Float[Tensor, "B 3 H W"]:
        """Fix a batch of images in [0,1]; returns [0,1] images of exactly the input size, device and dtype.

        `refs`: reference photos (any size); `warped`: reference views warped into each image's camera (see
        `forward`)."""
        validate_images(images, refs)
        validate_warped(images, warped)
        if images.shape[0] == 0:
            return images.clone()
        in_device, in_dtype = images.device, images.dtype
        x = images.to(self.device, self.dtype)
        extras = _Extras(
            None if refs is None else refs.to(self.device, self.dtype),
            None if warped is None else warped.to(self.device, self.dtype),
        )
        out, meta = run_in_chunks(self._fix_chunk, x, extras, self.runtime.chunk_size)  # type: ignore[arg-type]
        self.last_meta = meta
        return out.to(in_device, in_dtype)

    def _fix_chunk(self, images: Tensor, extras: _Extras) -> Tensor:
        dtype = self.runtime.autocast_dtype
        use_autocast = dtype is not None and images.device.type == "cuda"
        with torch.autocast("cuda", dtype=dtype or torch.float16, enabled=use_autocast):
            out = self.forward(images, extras.refs, extras.warped)
        return out.to(images.dtype).clamp_(0, 1)

    def _warn_refs_ignored(self) -> None:
        if not self._warned_refs:
            warnings.warn(
                f"{type(self).__name__} does not use reference views; the refs passed are ignored", stacklevel=3
            )
            self._warned_refs = True


class IdentityFixer(Fixer):
    """The do-nothing fixer: returns its input (a baseline, and a stand-in where no model is wanted)."""

    supports_refs = True  # accepts and ignores them, silently: ignoring is its documented job

    def __init__(self) -> None:
        super().__init__()
        # a zero-size buffer so `.to(device, dtype)` decides device and dtype like any other fixer
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)

    def _run(self, images: Tensor, refs: Optional[Tensor]) -> Tensor:
        return images.clone()

