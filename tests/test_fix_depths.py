"""`difix-ns fix --depths --ref-depths`: a fixer that takes warped references gets the nearest references warped
into each frame by its depth map, exactly as `warp_references` computes them; a frame without a depth map gets
views that see nothing; fixers without warped inputs ignore the option."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from difix_ns.data.scene_io import frame_cameras, read_transforms
from difix_ns.fix_command import FixCommandConfig
from difix_ns.fixers.config import FixerConfig
from difix_ns.fixers.testing import RecordingFixer
from difix_ns.geometry.warp import warp_references
from difix_ns.progressive.poses import nearest_views


def _folders(scene, tmp_path):
    frames, refs = tmp_path / "frames", tmp_path / "refs"
    frames.mkdir()
    refs.mkdir()
    for image in sorted((scene / "images").glob("eval_00[0-2].png")):
        shutil.copy(image, frames / image.name)
    for image in sorted((scene / "images").glob("train_*.png")):
        shutil.copy(image, refs / image.name)
    return frames, refs


def _load(path):
    from PIL import Image

    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)


def test_fix_with_depths_gives_the_fixer_the_warped_nearest_references(synth_scene, tmp_path, monkeypatch):
    frames, refs = _folders(synth_scene, tmp_path)
    depths = tmp_path / "depths"
    shutil.copytree(synth_scene / "depths", depths)
    (depths / "eval_002.npy").unlink()  # this frame gets no warped reference
    recorder = RecordingFixer()
    monkeypatch.setattr(FixerConfig, "setup", lambda self, **kwargs: recorder)
    FixCommandConfig(
        input=frames, output=tmp_path / "out", backend="identity", ref=refs, poses=synth_scene / "transforms.json",
        depths=depths, ref_depths=synth_scene / "depths", batch_size=1, quiet=True,
    ).main()
    assert len(recorder.seen) == 3
    cameras = frame_cameras(read_transforms(synth_scene / "transforms.json"))
    ref_names = sorted(p.name for p in refs.iterdir())
    ref_c2w = torch.stack([torch.from_numpy(cameras[n].c2w[:3]) for n in ref_names]).float()
    target = cameras["eval_000.png"]
    index = nearest_views(torch.from_numpy(target.c2w[None, :3]).float(), ref_c2w, 2)[0][0].tolist()
    rgb, valid, _ = warp_references(
        torch.stack([_load(refs / ref_names[i]) for i in index]),
        torch.stack(
            [torch.from_numpy(np.load(synth_scene / "depths" / f"{ref_names[i][:-4]}.npy")).float() for i in index]
        ),
        ref_c2w[index],
        torch.stack([torch.from_numpy(cameras[ref_names[i]].K) for i in index]).float(),
        torch.from_numpy(np.load(depths / "eval_000.npy")).float(),
        torch.from_numpy(target.c2w[:3]).float(),
        torch.from_numpy(target.K).float(),
    )
    seen = recorder.seen[0]
    torch.testing.assert_close(seen.rgb[0], rgb.clamp(0, 1))
    torch.testing.assert_close(seen.mask[0], valid.float())
    assert seen.mask.mean() > 0.2  # a nearby training view sees a good part of an evaluation view
    assert recorder.seen[2].mask.sum() == 0  # no depth map: nothing is warped
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in frames.iterdir())


def test_depths_need_reference_depths(synth_scene, tmp_path, monkeypatch):
    frames, refs = _folders(synth_scene, tmp_path)
    monkeypatch.setattr(FixerConfig, "setup", lambda self, **kwargs: RecordingFixer())
    with pytest.raises(ValueError, match="--ref-depths"):
        FixCommandConfig(
            input=frames, output=tmp_path / "out", backend="identity", ref=refs,
            poses=synth_scene / "transforms.json", depths=synth_scene / "depths", quiet=True,
        ).main()
