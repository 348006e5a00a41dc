"""A short fine-tune of a pruned scene on its training views before quantization (LightGaussian: the Gaussians
that remain after pruning move, grow and recolour to cover what the pruned ones drew).

The scene is rendered by its own model (the project's rasterizer or gsplat), with splatfacto's photometric loss
((1 - 0.2) L1 + 0.2 D-SSIM) and splatfacto's learning rate per parameter group (means at the end-of-schedule rate,
as a run ends). No densification and no camera optimization: only the kept Gaussians change.
"""

from __future__ import annotations

from typing import Dict

import numpy as np
import torch

__all__ = ["finetune_gaussians"]

SSIM_WEIGHT = 0.2
"""splatfacto's `ssim_lambda`."""


def _learning_rates() -> Dict[str, float]:
    from difix_ns.method_configs.difix_splatfacto import splatfacto_optimizers

    groups = splatfacto_optimizers()
    rates = {name: group["optimizer"].lr for name, group in groups.items()}
    rates["means"] = groups["means"]["scheduler"].lr_final
    return rates


def finetune_gaussians(model, params: Dict[str, np.ndarray], dataset, steps: int, seed: int = 0,
                       progress=None) -> Dict[str, np.ndarray]:  # fmt: skip
    """`params` (numpy, keys of `gauss_params`) after `steps` Adam steps on random training views of `dataset`
    (nerfstudio InputDataset with cameras), rendered by the splat `model`. The model's own Gaussians are restored
    afterwards. Returns float32 numpy arrays of the same shapes."""
    from difix_ns.training.losses import photometric_loss

    if steps < 0:
        raise ValueError(f"fine-tune steps must be >= 0, got {steps}")
    if steps == 0:
        return {k: np.asarray(v, np.float32) for k, v in params.items()}
    device = next(iter(model.gauss_params.values())).device
    tensors = {k: torch.nn.Parameter(torch.from_numpy(np.array(v, np.float32)).to(device)) for k, v in params.items()}
    rates = _learning_rates()
    optimizer = torch.optim.Adam([{"params": [p], "lr": rates[k]} for k, p in tensors.items()], eps=1e-15)
    original = {k: v for k, v in model.gauss_params.items()}
    was_training = model.training
    rng = np.random.default_rng(seed)
    task = progress.add_task("Fine-tuning the kept Gaussians", total=steps) if progress else None
    model.eval()  # full-size renders, no densification or camera optimizer
    try:
        for key, value in tensors.items():
            model.gauss_params[key] = value
        for _ in range(steps):
            index = int(rng.integers(len(dataset)))
            with torch.enable_grad():
                outputs = model.get_outputs(dataset.cameras[index : index + 1].to(device))
                truth = model.composite_with_background(
                    model.get_gt_img(dataset.get_image_float32(index).to(device)), outputs["background"]
                )
                loss = photometric_loss(outputs["rgb"], truth, SSIM_WEIGHT, model.ssim)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if progress:
                progress.advance(task)
    finally:
        for key, value in original.items():
            model.gauss_params[key] = value
        model.train(was_training)
    return {k: v.detach().cpu().numpy() for k, v in tensors.items()}
