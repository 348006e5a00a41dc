"""Co-visibility-masked metrics (mpsnr, mssim and their _fixed variants) in our models and in ns-eval."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from nerfstudio.data.scene_box import SceneBox
from PIL import Image

from difix_ns.geometry.covis import masked_psnr, masked_ssim
from difix_ns.models.difix_splatfacto import DifixSplatfactoModelConfig


def _tiny_splatfacto():
    points = torch.rand(200, 3) - 0.5
    colors = (torch.rand(200, 3) * 255).to(torch.uint8)
    return DifixSplatfactoModelConfig(num_random=500, postprocess=False).setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])),
        num_train_data=4,
        metadata={},
        seed_points=(points, colors),
    )


def _outputs_and_batch(height: int = 40, width: int = 36):
    generator = torch.Generator().manual_seed(0)
    outputs = {
        "rgb": torch.rand(height, width, 3, generator=generator),
        "background": torch.zeros(3),
        "accumulation": torch.ones(height, width, 1),
        "depth": torch.ones(height, width, 1),
    }
    return outputs, {"image": torch.rand(height, width, 3, generator=generator), "image_idx": 1}


def test_model_reports_masked_metrics_when_every_eval_image_has_a_mask(offline, tmp_path: Path):
    (tmp_path / "covis").mkdir()
    mask = np.zeros((40, 36), dtype=np.uint8)
    mask[5:30, 10:] = 255
    for name in ("eval_000", "eval_001"):
        Image.fromarray(mask).save(tmp_path / "covis" / f"{name}.png")
    model = _tiny_splatfacto().eval()
    model.attach_eval_images(tmp_path / "transforms.json", [Path("images/eval_000.png"), Path("images/eval_001.png")])
    outputs, batch = _outputs_and_batch()
    metrics, _ = model.get_image_metrics_and_images(outputs, batch)

    pred, gt = outputs["rgb"].permute(2, 0, 1)[None], batch["image"].permute(2, 0, 1)[None]
    mask_t = torch.from_numpy(mask > 0)[None, None]
    assert metrics["mpsnr"] == pytest.approx(float(masked_psnr(pred, gt, mask_t)), rel=1e-6)
    assert metrics["mssim"] == pytest.approx(float(masked_ssim(pred, gt, mask_t)), rel=1e-6)
    assert metrics["mpsnr"] != pytest.approx(metrics["psnr"])


def test_model_leaves_masked_metrics_out_with_one_message(offline, tmp_path: Path, capsys):
    (tmp_path / "covis").mkdir()
    Image.fromarray(np.full((40, 36), 255, dtype=np.uint8)).save(tmp_path / "covis" / "eval_000.png")
    model = _tiny_splatfacto().eval()
    capsys.readouterr()
    model.attach_eval_images(tmp_path, [Path("images/eval_000.png"), Path("images/eval_001.png")])
    outputs, batch = _outputs_and_batch()
    metrics, _ = model.get_image_metrics_and_images(outputs, batch)
    model.get_image_metrics_and_images(outputs, batch)
    assert "psnr" in metrics and not {"mpsnr", "mssim"} & set(metrics)
    out = capsys.readouterr().out
    assert out.count("Masked metrics") == 1 and "1 of 2" in out


def _ns_eval(config_path: Path, output: Path) -> dict:
    from nerfstudio.scripts.eval import ComputePSNR

    ComputePSNR(load_config=config_path, output_path=output).main()
    return json.loads(output.read_text())["results"]


@pytest.mark.slow
def test_ns_eval_json_carries_masked_metrics_only_with_masks(trained_splatfacto, synth_scene, tmp_path: Path, capsys):
    run = trained_splatfacto["run"]
    assert len(list((synth_scene / "covis").glob("*.png"))) == 12  # difix-ns synth wrote the eval masks
    results = _ns_eval(run / "config.yml", tmp_path / "with_masks.json")
    for key in ("mpsnr", "mssim", "mpsnr_fixed", "mssim_fixed"):
        assert math.isfinite(results[key]), key
    assert results["mpsnr"] != results["psnr"] and results["mpsnr"] != results["mpsnr_fixed"]

    # The same run on a copy of the dataset without masks: left out, with one message.
    bare = tmp_path / "bare"
    shutil.copytree(synth_scene, bare, ignore=shutil.ignore_patterns("covis"))
    config = yaml.load((run / "config.yml").read_text(), Loader=yaml.Loader)
    config.pipeline.datamanager.data = bare
    (tmp_path / "config.yml").write_text(yaml.dump(config))
    capsys.readouterr()
    results = _ns_eval(tmp_path / "config.yml", tmp_path / "without_masks.json")
    assert "psnr" in results and not any(key.startswith(("mpsnr", "mssim")) for key in results)
    assert capsys.readouterr().out.count("Masked metrics") == 1
