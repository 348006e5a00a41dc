"""A stand-in for the one open3d call that training on a synthetic scene makes, for the GPU run only.

nerfstudio reads a dataset's initial point cloud with `open3d.io.read_point_cloud(path)` and takes
`np.asarray(pcd.points)` and `np.asarray(pcd.colors)` (colors in [0, 1]). The open3d wheel (~400 MB) cannot travel
to the GPU machine, so benchmarks/gpu/steps.py puts this folder on PYTHONPATH for the progressive_overhead step.
It reads PLY vertex x, y, z (float/double) and red, green, blue (uchar) in ascii or binary little-endian format,
which covers what difix_ns.data.synth writes; anything else raises NotImplementedError.
"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np

_TYPES = {"float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8", "uchar": "u1", "uint8": "u1",
          "char": "i1", "int8": "i1", "short": "<i2", "ushort": "<u2", "int": "<i4", "uint": "<u4"}  # fmt: skip


class PointCloud:
    def __init__(self, points: np.ndarray, colors: np.ndarray) -> None:
        self.points, self.colors = points, colors


def read_point_cloud(filename: str) -> PointCloud:
    data = Path(filename).read_bytes()
    end = data.index(b"end_header") + len(b"end_header")
    end = data.index(b"\n", end) + 1
    header = data[:end].decode("ascii").splitlines()
    fmt, count, props, element = None, 0, [], None
    for line in header:
        parts = line.split()
        if parts[:1] == ["format"]:
            fmt = parts[1]
        elif parts[:1] == ["element"]:
            element = parts[1]
            if element == "vertex":
                count = int(parts[2])
        elif parts[:1] == ["property"] and element == "vertex":
            if parts[1] == "list" or parts[1] not in _TYPES:
                raise NotImplementedError(f"PLY property {line!r} is not supported by this stand-in")
            props.append((parts[2], _TYPES[parts[1]]))
    if fmt == "binary_little_endian":
        vertices = np.frombuffer(data, dtype=np.dtype(props), count=count, offset=end)
    elif fmt == "ascii":
        rows = np.loadtxt(data[end:].decode("ascii").splitlines()[:count], ndmin=2)
        vertices = np.zeros(count, dtype=np.dtype(props))
        for i, (name, _) in enumerate(props):
            vertices[name] = rows[:, i]
    else:
        raise NotImplementedError(f"PLY format {fmt!r} is not supported by this stand-in")
    names = vertices.dtype.names
    points = np.stack([vertices[k] for k in ("x", "y", "z")], axis=1).astype(np.float64)
    if all(k in names for k in ("red", "green", "blue")):
        colors = np.stack([vertices[k] for k in ("red", "green", "blue")], axis=1).astype(np.float64) / 255.0
    else:
        colors = np.zeros((0, 3))
    return PointCloud(points, colors)


io = types.SimpleNamespace(read_point_cloud=read_point_cloud)
