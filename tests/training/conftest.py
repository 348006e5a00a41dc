"""Toy triplet manifests (no reconstruction needed) for the fixer-training tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


def write_toy_manifest(folder: Path, count: int = 6, size: int = 32, seed: int = 0) -> Path:
    """`count` triplets: clean = smooth colour pattern, degraded = clean box-blurred + noise, reference = clean
    shifted by a few pixels; manifest.jsonl in the curate format."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    lines = []
    for i in range(count):
        f = rng.uniform(2, 6, size=3)
        phase = rng.uniform(0, 6.3, size=3)
        clean = np.stack([0.5 + 0.4 * np.sin(f[c] * 6.3 * (xx + yy * (c - 1) * 0.5) + phase[c]) for c in range(3)], -1)
        blurred = sum(np.roll(np.roll(clean, dy, 0), dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9
        degraded = np.clip(blurred + rng.normal(0, 0.05, clean.shape), 0, 1)
        reference = np.roll(clean, 2, axis=1)
        record = {"id": f"toy/{i}", "strategy": "leave-out", "source_scene": "toy", "height": size, "width": size}
        for key, image in (("degraded", degraded), ("clean", clean), ("reference", reference)):
            name = f"{i:03d}_{key}.png"
            Image.fromarray((image * 255).round().astype(np.uint8)).save(folder / name)
            record[key] = name
        lines.append(json.dumps(record))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "manifest.jsonl"


@pytest.fixture(scope="session")
def toy_manifest(tmp_path_factory) -> Path:
    return write_toy_manifest(tmp_path_factory.mktemp("toy_pairs"))


@pytest.fixture(autouse=True)
def _few_threads():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
