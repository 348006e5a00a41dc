"""Reference-view mixing for a diffusers UNet: views folded into the token axis of every self-attention.

Difix3D+ (Wu et al., CVPR 2025, arXiv:2503.01774), "difix_ref": the batch holds B x V views (target first, then
references). Everywhere in the UNet the views are independent samples, except in each transformer block's
self-attention (`attn1` of a `BasicTransformerBlock`), where tokens of shape [(B V), N, D] are reshaped to
[B, (V N), D] so the target attends to the reference tokens and back. No new parameters; V can be any number.

The public reference (nv-tlabs/Difix3D `src/mv_unet.py`) does this by replacing `BasicTransformerBlock.forward`
with a copy that hard-codes 2 views. Here it is a diffusers attention processor instead: the UNet is stock,
the number of views travels through `cross_attention_kwargs={"num_views": V}`, and the fold is done around an
inner processor (`AttnProcessor2_0` = PyTorch SDPA by default, or the classic `AttnProcessor`). Folding around the
self-attention only is the same computation as the reference's fold around norm1 + attn1 + residual, since
LayerNorm and the residual act per token.
"""

from __future__ import annotations

from typing import Any, Optional

from torch import Tensor, nn

__all__ = ["ViewFoldedSelfAttnProcessor", "ViewAgnosticAttnProcessor", "install_reference_attention"]


def _default_inner() -> Any:
    from diffusers.models.attention_processor import AttnProcessor2_0

    return AttnProcessor2_0()


class ViewAgnosticAttnProcessor:
    """Any other attention (cross-attention): accepts `num_views` so the kwarg can be passed, and ignores it."""

    def __init__(self, inner: Optional[Any] = None) -> None:
        self.inner = inner if inner is not None else _default_inner()

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: Tensor,
        encoder_hidden_states: Optional[Tensor] = None,
        attention_mask: Optional[Tensor] = None,
        temb: Optional[Tensor] = None,
        num_views: int = 1,
    ) -> Tensor:
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class ViewFoldedSelfAttnProcessor(ViewAgnosticAttnProcessor):
    """Self-attention over the tokens of all V views of a sample: [(B V), N, D] -> [B, (V N), D] -> back."""

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: Tensor,
        encoder_hidden_states: Optional[Tensor] = None,
        attention_mask: Optional[Tensor] = None,
        temb: Optional[Tensor] = None,
        num_views: int = 1,
    ) -> Tensor:
        if num_views <= 1:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        if hidden_states.ndim != 3:
            raise ValueError(f"view folding expects tokens [B*V, N, D], got {tuple(hidden_states.shape)}")
        bv, n, d = hidden_states.shape
        if bv % num_views:
            raise ValueError(f"batch {bv} is not a multiple of num_views={num_views}")
        if attention_mask is not None:
            raise ValueError("view folding does not support an attention mask")
        folded = hidden_states.reshape(bv // num_views, num_views * n, d)
        out = self.inner(attn, folded, encoder_hidden_states, None, temb)
        return out.reshape(bv, n, d)


def install_reference_attention(unet: nn.Module, attention: str = "sdpa") -> int:
    """Set view-folding processors on every transformer block's `attn1` of `unet`, view-agnostic ones elsewhere.

    `attention`: "sdpa" (PyTorch scaled_dot_product_attention) or "classic" (diffusers' plain `AttnProcessor`).
    Returns the number of self-attentions that fold views.
    """
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    if attention not in ("sdpa", "classic"):
        raise ValueError(f"attention must be 'sdpa' or 'classic', got {attention!r}")
    inner_cls = AttnProcessor2_0 if attention == "sdpa" else AttnProcessor
    processors = {}
    n_folded = 0
    for name in unet.attn_processors:
        if ".transformer_blocks." in name and name.endswith("attn1.processor"):
            processors[name] = ViewFoldedSelfAttnProcessor(inner_cls())
            n_folded += 1
        else:
            processors[name] = ViewAgnosticAttnProcessor(inner_cls())
    unet.set_attn_processor(processors)
    return n_folded
