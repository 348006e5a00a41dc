"""`difix-ns fix`: folders, bad files, references with poses, video, and the tyro command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from difix_ns.fix_command import FixCommandConfig, nearest_reference


def _write(path: Path, size=(24, 16), mode="RGB", seed=0) -> None:
    rng = np.random.default_rng(seed)
    w, h = size
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    data = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    Image.fromarray(data[..., 0] if channels == 1 else data, mode).save(path)


@pytest.fixture
def frames(tmp_path: Path) -> Path:
    folder = tmp_path / "renders"
    folder.mkdir()
    _write(folder / "a.png", (24, 16))
    _write(folder / "b.png", (24, 16), seed=1)
    _write(folder / "c.jpg", (13, 9), seed=2)
    _write(folder / "d.png", (20, 10), mode="RGBA", seed=3)
    _write(folder / "e.png", (8, 8), mode="L", seed=4)
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored")
    return folder


def test_folder_identity_same_names_sizes_and_failures_reported(frames: Path, tmp_path: Path):
    out = tmp_path / "out"
    summary = FixCommandConfig(input=frames, output=out, backend="identity", device="cpu", quiet=True).main()
    assert sorted(summary.written) == ["a.png", "b.png", "c.jpg", "d.png", "e.png"]
    assert list(summary.failed) == ["broken.png"] and "unreadable" in summary.failed["broken.png"]
    for name in summary.written:
        with Image.open(frames / name) as src, Image.open(out / name) as dst:
            assert src.size == dst.size
    with Image.open(out / "d.png") as img:
        assert img.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(Image.open(out / "a.png")), np.asarray(Image.open(frames / "a.png")))
    assert (frames / "broken.png").read_bytes() == b"not an image"  # input untouched
    again = FixCommandConfig(input=frames, output=out, backend="identity", device="cpu", quiet=True).main()
    assert again.failed["a.png"].startswith("output exists")
    with pytest.raises(SystemExit):
        FixCommandConfig(input=frames, output=out, backend="identity", device="cpu", quiet=True, strict=True).main()


def test_refuses_input_folder_and_empty_folder(frames: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="is the input folder"):
        FixCommandConfig(input=frames, output=frames / ".", backend="identity", quiet=True).main()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        FixCommandConfig(input=empty, output=tmp_path / "o", backend="identity", quiet=True).main()


def _pose(x: float) -> list:
    m = np.eye(4)
    m[0, 3] = x
    return m.tolist()


def test_nearest_reference():
    refs = [np.array(_pose(0.0)), np.array(_pose(5.0))]
    assert nearest_reference(np.array(_pose(4.0)), refs) == 1
    rotated = np.array(_pose(4.0))
    rotated[:3, :3] = [[1, 0, 0], [0, -1, 0], [0, 0, -1]]  # 180 degrees away from both
    assert nearest_reference(rotated, refs, rotation_weight=0.0) == 1


def test_difix_ref_with_poses_picks_nearest_reference(nvidia_difix_ref_dir: Path, tmp_path: Path):
    renders, refs = tmp_path / "renders", tmp_path / "refs"
    renders.mkdir()
    refs.mkdir()
    for i, name in enumerate(["f0.png", "f1.png"]):
        _write(renders / name, (20, 12), seed=i)
    _write(refs / "r0.png", (10, 6), seed=5)
    _write(refs / "r1.png", (30, 18), seed=6)
    transforms = {"frames": [
        {"file_path": "images/f0.png", "transform_matrix": _pose(0.1)},
        {"file_path": "images/f1.png", "transform_matrix": _pose(4.9)},
        {"file_path": "images/r0.png", "transform_matrix": _pose(0.0)},
        {"file_path": "images/r1.png", "transform_matrix": _pose(5.0)},
    ]}  # fmt: skip
    (tmp_path / "transforms.json").write_text(json.dumps(transforms))
    common = dict(input=renders, backend="difix", checkpoint=str(nvidia_difix_ref_dir), ref=refs, device="cpu",
                  quiet=True)  # fmt: skip
    summary = FixCommandConfig(output=tmp_path / "o1", poses=tmp_path / "transforms.json", **common).main()
    assert summary.reference_of == {"f0.png": "r0.png", "f1.png": "r1.png"}
    assert sorted(summary.written) == ["f0.png", "f1.png"] and not summary.failed
    with Image.open(tmp_path / "o1/f1.png") as img:
        assert img.size == (20, 12)
    fixed = FixCommandConfig(output=tmp_path / "o2", **common).main()
    assert fixed.reference_of == {"f0.png": "r0.png", "f1.png": "r0.png"}


def test_video_roundtrip(tmp_path: Path):
    import imageio.v3 as iio

    video = tmp_path / "clip.mp4"
    frames = np.random.default_rng(0).integers(0, 256, (5, 32, 48, 3), dtype=np.uint8)
    with iio.imopen(video, "w", plugin="pyav") as writer:
        writer.init_video_stream("libx264", fps=10)
        for frame in frames:
            writer.write_frame(frame)
    summary = FixCommandConfig(input=video, output=tmp_path / "out", backend="identity", device="cpu", quiet=True,
                               batch_size=2).main()  # fmt: skip
    assert summary.written == ["clip.mp4"]
    out = iio.imread(tmp_path / "out/clip.mp4", plugin="pyav")
    assert out.shape == frames.shape


def test_tyro_command_line_and_light_import(frames: Path, tmp_path: Path):
    code = (
        "import sys, tyro\n"
        "from difix_ns.fix_command import FixCommandConfig\n"
        "heavy = {'diffusers', 'transformers', 'peft', 'PIL', 'imageio'} & set(sys.modules)\n"
        "assert not heavy, f'heavy import at module level: {heavy}'\n"
        "cfg = tyro.cli(FixCommandConfig, args=sys.argv[1:])\n"
        "summary = cfg.main()\n"
        "assert 'diffusers' not in sys.modules\n"
        "print(len(summary.written), sorted(summary.failed))\n"
    )
    args = ["--input", str(frames), "--output", str(tmp_path / "cli"), "--backend", "identity", "--device", "cpu"]
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "5 ['broken.png']" in result.stdout
    assert "broken.png" in result.stderr  # the failure table
