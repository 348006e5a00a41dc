"""Our models build, train a step and evaluate without network, and LPIPS is used when its weights exist."""

from __future__ import annotations

import torch
from nerfstudio.data.scene_box import SceneBox

from difix_ns.metrics import UnavailableMetric, _warn_lpips_unavailable, lpips_weights_path
from difix_ns.models.difix_nerfacto import DifixNerfactoModelConfig
from difix_ns.models.difix_splatfacto import DifixSplatfactoModelConfig


def _scene_box() -> SceneBox:
    return SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))


def _tiny_nerfacto():
    config = DifixNerfactoModelConfig(
        implementation="torch", num_levels=2, log2_hashmap_size=10, max_res=32, hidden_dim=16, hidden_dim_color=16
    )
    return config.setup(scene_box=_scene_box(), num_train_data=4, metadata={})


def _tiny_splatfacto():
    points = torch.rand(200, 3) - 0.5
    colors = (torch.rand(200, 3) * 255).to(torch.uint8)
    return DifixSplatfactoModelConfig(num_random=500).setup(
        scene_box=_scene_box(), num_train_data=4, metadata={}, seed_points=(points, colors)
    )


def _metrics_for(model) -> dict:
    height, width = 64, 64  # AlexNet (LPIPS) needs at least ~32 pixels a side
    outputs = {
        "rgb": torch.rand(height, width, 3),
        "background": torch.zeros(height, width, 3),
        "accumulation": torch.ones(height, width, 1),
        "depth": torch.ones(height, width, 1),
    }
    batch = {"image": torch.rand(height, width, 3)}
    metrics, _ = model.eval().get_image_metrics_and_images(outputs, batch)
    return metrics


def test_models_build_without_network_or_hub_cache(offline, capsys):
    _warn_lpips_unavailable.cache_clear()
    for model in (_tiny_nerfacto(), _tiny_splatfacto()):
        assert isinstance(model.lpips, UnavailableMetric)
    assert not lpips_weights_path().exists()
    assert capsys.readouterr().out.count("LPIPS is left out") == 1, "one warning per process, not one per model"


def test_splatfacto_initialises_from_seed_points_on_cpu(offline):
    model = _tiny_splatfacto()
    assert model.num_points == 200
    assert all(p.device.type == "cpu" for p in model.gauss_params.values())
    assert torch.isfinite(model.scales).all()


def test_metrics_leave_lpips_out_when_unavailable(offline):
    metrics = _metrics_for(_tiny_splatfacto())
    assert "psnr" in metrics and "ssim" in metrics
    assert "lpips" not in metrics


def test_lpips_is_computed_when_its_weights_are_cached(offline):
    from torchvision.models import alexnet

    path = lpips_weights_path()
    path.parent.mkdir(parents=True)
    torch.save(alexnet(weights=None).state_dict(), path)  # stands in for the downloaded file (same format)
    model = _tiny_splatfacto()
    assert not isinstance(model.lpips, UnavailableMetric)
    metrics = _metrics_for(model)
    assert 0.0 <= metrics["lpips"] < 2.0
