"""`ns-render interpolate` on a difix-splatfacto run writes an mp4 (ffmpeg is a system package of the set-up)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("ffmpeg") is None,
    reason="ffmpeg not found: ns-render videos need the Debian package ffmpeg (make system-deps installs it)",
)
def test_ns_render_interpolate_writes_an_mp4(tiny_run, tmp_path):
    video = tmp_path / "interpolated.mp4"
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "empty_torch_home"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [
            str(BIN / "ns-render"), "interpolate", f"--load-config={tiny_run}", f"--output-path={video}",
            "--pose-source=train", "--interpolation-steps=1", "--frame-rate=4", "--rendered-output-names", "rgb",
        ],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, f"ns-render failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    assert video.is_file() and video.stat().st_size > 0, result.stdout[-3000:]
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
         "stream=codec_name,width,height,nb_read_frames", "-of", "json", str(video)],
        capture_output=True, text=True, timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    stream = json.loads(probe.stdout)["streams"][0]
    assert (stream["width"], stream["height"]) == (48, 48), stream
    assert int(stream["nb_read_frames"]) >= 2, stream
