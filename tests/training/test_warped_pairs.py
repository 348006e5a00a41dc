"""Warped references in the fixer's training data: curate's `_write_triplet` stores them (PNG views + 0/255 masks,
relative manifest lists), `PairDataset` crops and flips them with the same window as the other images (missing
ones see nothing), and `train_fixer` trains a NAFNet that takes them and saves it with `warped_references`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from difix_ns.data.curate import CurateConfig, _Unit, _write_triplet
from difix_ns.data.scene_io import read_training_views
from difix_ns.evaluation import ViewResult
from difix_ns.fixers.base import WarpedViews
from difix_ns.training.pairs import PairDataset, load_pairs
from difix_ns.training.train_fixer import TrainFixerConfig, train_fixer

K = 2
TINY = dict(nafnet_width=4, nafnet_enc_blocks=(1,), nafnet_dec_blocks=(1,), crop_size=16, batch_size=2,
            perceptual="off", val_fraction=0.25, log_every=1)  # fmt: skip


def _view(name: str, size: int, views: int, seed: int) -> ViewResult:
    """A render (noisy photo) whose warped views are the photo itself where their random block masks are 1."""
    g = torch.Generator().manual_seed(seed)
    photo = torch.rand(size, size, 3, generator=g)
    rendered = (photo + 0.1 * torch.randn(size, size, 3, generator=g)).clamp(0, 1)
    mask = (torch.rand(1, views, 1, size // 8, size // 8, generator=g) > 0.4).float()
    mask = mask.repeat_interleave(8, -1).repeat_interleave(8, -2)
    warped = WarpedViews(photo.permute(2, 0, 1)[None, None] * mask, mask)
    return ViewResult(name, {}, rendered.numpy(), photo.numpy(), warped=warped, warped_views=["a.png", "b.png"][:views])


@pytest.fixture(scope="module")
def warped_manifest(synth_scene, tmp_path_factory) -> Path:
    """Six leave-out triplets written by curate's `_write_triplet`: four with 2 warped views, one with 1, one with
    none (as an old manifest)."""
    scene = read_training_views(synth_scene)
    targets = tuple(scene.usable[:6])
    unit = _Unit("leave-out-0of2", "leave-out", tuple(scene.usable[6:]), targets, (1.0,))
    config = CurateConfig(data=synth_scene, warped_references=K)
    out = tmp_path_factory.mktemp("warped_pairs")
    records = []
    for i, target in enumerate(targets):
        views = (K, K, K, K, 1, 0)[i]
        view = _view(Path(target).name, 48, views, seed=i)
        if views == 0:
            view.warped = view.warped_views = None
        records.append(_write_triplet(view, target, unit, 3, config, scene, out, "leave-out"))
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return out / "manifest.jsonl"


def test_warped_views_round_trip_through_the_manifest(warped_manifest):
    lines = [json.loads(x) for x in warped_manifest.read_text().splitlines()]
    assert [len(r.get("warped", [])) for r in lines] == [2, 2, 2, 2, 1, 0]
    assert "warped" not in lines[-1] and "warped_mask" not in lines[-1], "no warped views: no keys (old format)"
    first = lines[0]
    assert first["warped_views"] == ["a.png", "b.png"]
    assert first["warped"][1].endswith("_warped1.png") and first["warped_mask"][1].endswith("_warpmask1.png")
    assert not any(Path(p).is_absolute() for p in first["warped"] + first["warped_mask"]), "relative like the rest"
    from PIL import Image

    mask = np.asarray(Image.open(warped_manifest.parent / first["warped_mask"][0]))
    assert set(np.unique(mask)) == {0, 255}
    records = load_pairs([warped_manifest])
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in records[0]["warped"] + records[0]["warped_mask"])


def test_pair_dataset_crops_and_flips_warped_views_with_the_same_window(warped_manifest):
    records = load_pairs([warped_manifest])
    dataset = PairDataset(records, crop_size=16, augment=True, warped_references=K)
    torch.manual_seed(0)
    for i in range(len(dataset)):
        for _ in range(4):  # several random windows and flips
            item = dataset[i]
            assert item["warped"].shape == (K, 3, 16, 16) and item["warped_mask"].shape == (K, 1, 16, 16)
            mask = item["warped_mask"]
            assert set(mask.unique().tolist()) <= {0.0, 1.0}
            # the warped view is the clean photo where its mask is 1: only when both come from the same window
            torch.testing.assert_close(item["warped"] * mask, item["clean"][None] * mask, atol=1e-6, rtol=0)
            assert float((item["warped"] * (1 - mask)).abs().max()) == 0.0
    missing = dataset[4]  # one warped view in the manifest: the second sees nothing
    assert float(missing["warped_mask"][1].max()) == 0.0 and float(missing["warped"][1].max()) == 0.0
    old = dataset[5]  # no warped keys at all (an older manifest)
    assert float(old["warped_mask"].max()) == 0.0 and old["warped"].shape == (K, 3, 16, 16)
    plain = PairDataset(records, crop_size=16)[0]
    assert "warped" not in plain and "warped_mask" not in plain


def test_old_manifests_load_with_warped_references(toy_manifest):
    item = PairDataset(load_pairs([toy_manifest]), crop_size=16, warped_references=K)[0]
    assert item["warped"].shape == (K, 3, 16, 16) and float(item["warped_mask"].sum()) == 0.0


def test_nafnet_with_warped_references_trains_and_saves_them(warped_manifest, tmp_path):
    from difix_ns.fixers.config import FixerConfig
    from difix_ns.fixers.nafnet import NAFNetFixer

    config = TrainFixerConfig(manifests=(warped_manifest,), out=tmp_path / "run", steps=4, warped_references=K, **TINY)
    folder = train_fixer(config)
    assert json.loads((folder / "config.json").read_text())["warped_references"] == K
    assert NAFNetFixer.from_pretrained(folder).warped_references == K
    fixer = FixerConfig(backend="nafnet", checkpoint=str(folder), device="cpu").setup()
    assert fixer.warped_references == K
    record = load_pairs([warped_manifest])[0]
    item = PairDataset([record], warped_references=K)[0]
    fixed = fixer.fix(item["degraded"][None], warped=WarpedViews(item["warped"][None], item["warped_mask"][None]))
    assert fixed.shape == (1, 3, 48, 48)
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["warped_references"] == K and summary["step"] == 4
    assert {"psnr", "psnr_degraded"} <= set(summary["validation"])


def test_warped_references_need_the_nafnet_back_end(warped_manifest, tmp_path):
    with pytest.raises(ValueError, match="warped_references=2 needs backend=nafnet"):
        TrainFixerConfig(
            manifests=(warped_manifest,), backend="difix", init_checkpoint="x", warped_references=2
        ).validate()
    with pytest.raises(ValueError, match="warped_references must be >= 0"):
        TrainFixerConfig(warped_references=-1).validate()
