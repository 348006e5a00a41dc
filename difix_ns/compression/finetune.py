"""A short fine-tune of a pruned scene on its training views before quantization (LightGaussian: the Gaussians
that remain after pruning move, grow and recolour to cover what the pruned ones drew).

The scene is rendered by its own model (the project's rasterizer or gsplat), with splatfacto's photometric loss
((1 - 0.2) L1 + 0.2 D-SSIM) and splatfacto's initial learning rate per parameter group, times `LR_SCALE` (the means
too: the kept Gaussians must move to cover what the pruned ones drew, which a run's end-of-schedule rate, 100x
lower, barely allows). No densification and no camera optimization: only the kept Gaussians change.

Quantization-aware (given the codec's bits): from `quantize_from` of the steps on, the scene is rendered at the
values the file will decode to (`codec.fake_quantize`, straight-through), so the Gaussians learn to look right
after quantization. Starting in the middle measured best on the beer capture at 100x (600 steps, bits
10,4,4,4,4): held-out PSNR after quantization 25.71 dB without, 25.74 from the first step, 25.85 from the half.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch

__all__ = ["finetune_gaussians", "steps_within"]

SSIM_WEIGHT = 0.2
"""splatfacto's `ssim_lambda`."""


LR_SCALE = {"means": 1.0, "others": 2.0}
"""Fine-tune rates over splatfacto's initial ones, at the first step (they decay, `LR_FINAL_FRACTION`). Measured at
100x with 200 steps (`benchmarks/results/compression_finetune_lr/`, held-out PSNR of the decoded file; before:
means at the end-of-schedule rate, others x1, no decay): beer 25.48 -> 25.51 dB, fruit 25.07 -> 25.18, synth0
17.31 -> 17.39; beer at 250 / 300 steps 25.58 -> 25.66 / 25.68 -> 25.74. Without the decay the gains at 200 steps
were larger (25.64, 25.39, 17.32) but erratic in the step count (beer at 250 steps: 25.33)."""


LR_FINAL_FRACTION = 0.1
"""The fine-tune's rates decay exponentially to this fraction of `LR_SCALE` x splatfacto's by its last step."""


def _learning_rates() -> Dict[str, float]:
    from difix_ns.method_configs.difix_splatfacto import splatfacto_optimizers

    groups = splatfacto_optimizers()
    return {name: group["optimizer"].lr * LR_SCALE.get(name, LR_SCALE["others"]) for name, group in groups.items()}


def finetune_gaussians(
    model, params: Dict[str, np.ndarray], dataset, steps: int, seed: int = 0, progress=None,
    bits: Optional[Dict[str, int]] = None, sh_degree: Optional[int] = None, quantize_from: float = 0.5,
) -> Dict[str, np.ndarray]:  # fmt: skip
    """`params` (numpy, keys of `gauss_params`) after `steps` Adam steps on random training views of `dataset`
    (nerfstudio InputDataset with cameras), rendered by the splat `model`. The model's own Gaussians are restored
    afterwards. Returns float32 numpy arrays of the same shapes.

    With `bits` (the codec's bits per attribute) and `sh_degree` (the SH degree it stores), the steps from
    `quantize_from` x `steps` on render the quantized values (quantization-aware fine-tuning)."""
    from difix_ns.compression.codec import check_bits, fake_quantize
    from difix_ns.training.losses import photometric_loss

    if steps < 0:
        raise ValueError(f"fine-tune steps must be >= 0, got {steps}")
    if not 0.0 <= quantize_from <= 1.0:
        raise ValueError(f"quantize_from must be a fraction of the steps in [0, 1], got {quantize_from}")
    if bits is not None:
        bits = check_bits(bits)
    if steps == 0:
        return {k: np.asarray(v, np.float32) for k, v in params.items()}
    device = next(iter(model.gauss_params.values())).device
    tensors = {k: torch.nn.Parameter(torch.from_numpy(np.array(v, np.float32)).to(device)) for k, v in params.items()}
    rates = _learning_rates()
    optimizer = torch.optim.Adam([{"params": [p], "lr": rates[k]} for k, p in tensors.items()], eps=1e-15)
    # decay to LR_FINAL_FRACTION of the rates by the last step: the end state settles instead of following the
    # last few views
    decay = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=LR_FINAL_FRACTION ** (1.0 / max(1, steps)))
    original = {k: v for k, v in model.gauss_params.items()}
    was_training = model.training
    rng = np.random.default_rng(seed)
    first_quantized = steps if bits is None else int(round(quantize_from * steps))
    task = progress.add_task("Fine-tuning the kept Gaussians", total=steps) if progress else None
    model.eval()  # full-size renders, no densification or camera optimizer
    try:
        for step in range(steps):
            quantized = step >= first_quantized
            index = int(rng.integers(len(dataset)))
            with torch.enable_grad():
                decoded = fake_quantize(tensors, bits, sh_degree) if quantized else tensors
                # gauss_params wraps what it is given in new Parameters: render from leaves, then carry their
                # gradients back through the quantizer by hand
                leaves = {k: torch.nn.Parameter(v.detach()) for k, v in decoded.items()} if quantized else tensors
                for key, value in leaves.items():
                    model.gauss_params[key] = value
                outputs = model.get_outputs(dataset.cameras[index : index + 1].to(device))
                truth = model.composite_with_background(
                    model.get_gt_img(dataset.get_image_float32(index).to(device)), outputs["background"]
                )
                loss = photometric_loss(outputs["rgb"], truth, SSIM_WEIGHT, model.ssim)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if quantized:
                    keys = [k for k in decoded if leaves[k].grad is not None]
                    torch.autograd.backward([decoded[k] for k in keys], [leaves[k].grad for k in keys])
            optimizer.step()
            decay.step()
            if progress:
                progress.advance(task)
    finally:
        for key, value in original.items():
            model.gauss_params[key] = value
        model.train(was_training)
    return {k: v.detach().cpu().numpy() for k, v in tensors.items()}


def steps_within(
    model, params: Dict[str, np.ndarray], dataset, seconds: float, runs: float = 1.0,
    bits: Optional[Dict[str, int]] = None, sh_degree: Optional[int] = None, trial_steps: int = 3,
) -> int:  # fmt: skip
    """The fine-tune steps that fit `seconds` of wall time when the fine-tune runs `runs` times that many steps
    (a probe of half the steps, then the fine-tune: 1.5), from the measured time of `trial_steps`
    quantization-aware steps (the slower kind; first-step overhead included) on `params`. The trial's own time
    counts against `seconds`; 0 when not even one step fits."""
    import time

    if seconds <= 0:
        raise ValueError(f"fine-tune seconds must be > 0, got {seconds}")
    if trial_steps < 1 or runs <= 0:
        raise ValueError(f"trial_steps must be >= 1 and runs > 0, got {trial_steps} and {runs}")
    start = time.perf_counter()
    finetune_gaussians(model, params, dataset, trial_steps, bits=bits, sh_degree=sh_degree, quantize_from=0.0)
    spent = time.perf_counter() - start
    return max(0, int((seconds - spent) / (spent / trial_steps) / runs))
