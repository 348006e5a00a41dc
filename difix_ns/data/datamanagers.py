"""Data managers of the difix methods.

Both hold the real training views as nerfstudio does; the Difix3D progressive update adds pseudo views (fixed
renders of novel cameras) to them. difix-splatfacto samples whole images (`FullImageDatamanager`); difix-nerfacto
samples rays from images held in the main process (`VanillaDataManager`: nerfacto's default
`ParallelDataManager` caches images inside worker processes, where views added later would be invisible).

Before nerfstudio parses the dataset and caches any image, `validate_data` checks it
(`difix_ns.data.validate`): every unreadable, truncated, missing or mis-sized image, bad pose or intrinsics and
empty split is listed in one `DatasetError`, within seconds of start and before the model is built. The parser
outputs of that check are what nerfstudio's constructor then uses: the dataset is parsed once.

Pseudo views (`difix_ns.progressive.PseudoViews`) are handed over with `set_pseudo_views` and kept apart from the
real views (nerfstudio's own lists and cameras stay untouched, so its reloads cannot drop them). While there are
any, a share `pseudo_fraction` of the training signal comes from them:
- full images: each step draws a pseudo view with probability `pseudo_fraction` (seeded); its batch has the fixed
  image, `mask` (render alpha >= threshold) and `difix_pseudo=True`; its camera carries no `cam_idx`;
- rays: `pseudo_fraction` of each ray batch is sampled uniformly from the pseudo images; the batch gains
  `difix_pseudo` [N] and `difix_mask` [N, 1], and pseudo rays carry their nearest training view's camera index.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Dict, Generic, List, Literal, Optional, Tuple, Type, Union

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from torch import Tensor

from nerfstudio.data.datamanagers.base_datamanager import (
    DataManagerConfig,
    TDataset,
    VanillaDataManager,
    VanillaDataManagerConfig,
)
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager, FullImageDatamanagerConfig
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataparserOutputs
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

from difix_ns.data.validate import DatasetError, validate_dataset
from difix_ns.errors import install_user_error_hook
from difix_ns.progressive.state import PseudoViews

__all__ = [
    "check_data_path",
    "DifixFullImageDatamanager",
    "DifixFullImageDatamanagerConfig",
    "DifixVanillaDataManager",
    "DifixVanillaDataManagerConfig",
    "ValidatedDatamanager",
    "validate_data",
]


def check_data_path(config: DataManagerConfig) -> None:
    """Fail early, with the path and a way out, when `--data` points at nothing usable."""
    data: Optional[Path] = config.data if config.data is not None else getattr(config.dataparser, "data", None)
    if data is None:
        return
    data = Path(data)
    hint = "Give --data a nerfstudio dataset folder (e.g. from ns-process-data, or `difix-ns synth --out DIR`)."
    if not data.exists():
        raise FileNotFoundError(f"data folder {data} does not exist. {hint}")
    if (
        isinstance(config.dataparser, NerfstudioDataParserConfig)
        and data.is_dir()
        and not (data / "transforms.json").is_file()
    ):
        raise FileNotFoundError(f"data folder {data} has no transforms.json. {hint}")


def validate_data(config: DataManagerConfig, test_mode: str) -> Dict[str, DataparserOutputs]:
    """Check the dataset before nerfstudio loads it: a `DatasetError` lists every problem with its file name.

    Parses the training split and the split nerfstudio evaluates on ("val" while training, "test" in ns-eval) with
    the configured parser and checks images, cameras and splits (`difix_ns.data.validate`); returns the parser
    outputs per split ({} when skipped: test_mode "inference", where no image is read, or `validate_data=False`).
    Uncaught, the error prints as one message without a traceback (`difix_ns.errors.install_user_error_hook`).
    """
    check_data_path(config)
    if test_mode == "inference" or not getattr(config, "validate_data", True):
        return {}
    data = config.data if config.data is not None else config.dataparser.data
    try:
        return validate_dataset(data, config.dataparser, splits=("train", "test" if test_mode == "test" else "val"),
                                quiet=False)  # fmt: skip
    except DatasetError:
        install_user_error_hook()
        raise


def _reusing(
    parse: Callable[..., DataparserOutputs], outputs: Dict[str, DataparserOutputs]
) -> Callable[..., DataparserOutputs]:
    """`parse` (a parser's `get_dataparser_outputs`) that first hands out `outputs`, each split once."""

    def get_dataparser_outputs(split: str = "train", **kwargs) -> DataparserOutputs:
        if split in outputs and not kwargs:
            return outputs.pop(split)
        return parse(split=split, **kwargs)

    return get_dataparser_outputs


class ValidatedDatamanager:
    """Mixin listed before a nerfstudio data manager: `validate_data` runs before nerfstudio's constructor parses
    the dataset and caches any image, and the constructor's parser gets the checked outputs instead of parsing
    again; `_after_init` then sets the subclass's own state."""

    _validated: Dict[str, DataparserOutputs] = {}

    @property
    def dataparser(self) -> DataParser:
        return self.__dict__["_difix_dataparser"]

    @dataparser.setter
    def dataparser(self, parser: DataParser) -> None:
        # nerfstudio's constructor sets up the parser, then asks it for the train and eval splits
        if self._validated:
            parser.get_dataparser_outputs = _reusing(parser.get_dataparser_outputs, self._validated)
        self.__dict__["_difix_dataparser"] = parser

    def __init__(
        self,
        config: DataManagerConfig,
        device: Union[torch.device, str] = "cpu",
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        **kwargs,
    ) -> None:
        self._validated = dict(validate_data(config, test_mode))
        super().__init__(config, device, test_mode, world_size, local_rank, **kwargs)
        self._validated = {}
        self._after_init()

    def _after_init(self) -> None:
        """The subclass's state, once nerfstudio's constructor has loaded the data."""


def _check_fraction(value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"pseudo_fraction must be in [0, 1], got {value}")


class _PseudoViewHolder:
    """Pseudo views of a data manager: the set, its device copies, and a seeded draw order."""

    def __init__(self, fraction: float, seed: int) -> None:
        _check_fraction(fraction)
        self.fraction = fraction
        self.views: Optional[PseudoViews] = None
        self.images: List[Tensor] = []
        self.masks: List[Tensor] = []
        self.rng = random.Random(seed)
        self.unseen: List[int] = []
        self.stacked: Optional[Tuple[Tensor, Tensor]] = None

    def set(self, views: Optional[PseudoViews], device) -> None:
        self.views = views if views is not None and len(views) > 0 else None
        self.images = [] if self.views is None else [im.to(device) for im in self.views.images]
        self.masks = [] if self.views is None else [m.to(device) for m in self.views.masks]
        self.stacked = None
        if len({tuple(im.shape) for im in self.images}) == 1:  # one tensor (the lists become views of it)
            self.stacked = (torch.stack(self.images), torch.stack(self.masks))
            self.images, self.masks = list(self.stacked[0].unbind(0)), list(self.stacked[1].unbind(0))
        self.unseen = []

    def draw(self) -> bool:
        """Whether the next training sample is a pseudo view."""
        return self.views is not None and self.rng.random() < self.fraction

    def next_index(self) -> int:
        if not self.unseen:
            self.unseen = list(range(len(self.images)))
            self.rng.shuffle(self.unseen)
        return self.unseen.pop(0)


@dataclass
class DifixFullImageDatamanagerConfig(FullImageDatamanagerConfig):
    """Full-image data manager of difix-splatfacto."""

    _target: Type = field(default_factory=lambda: DifixFullImageDatamanager)
    pseudo_fraction: float = 0.3
    """Share of training steps that draw a pseudo view while there are any (the paper's 70% real / 30% pseudo)."""
    validate_data: bool = True
    """Check every image, camera and split before loading (one error listing every problem with its file name)."""


class DifixFullImageDatamanager(ValidatedDatamanager, FullImageDatamanager, Generic[TDataset]):
    """Real training images and pseudo views, whole-image batches (see module docstring)."""

    config: DifixFullImageDatamanagerConfig

    def _after_init(self) -> None:
        self._pseudo = _PseudoViewHolder(self.config.pseudo_fraction, self.config.train_cameras_sampling_seed)

    @property
    def pseudo_views(self) -> Optional[PseudoViews]:
        """The current pseudo views (None when there are none)."""
        return self._pseudo.views

    def set_pseudo_views(self, views: Optional[PseudoViews]) -> None:
        """Replace the pseudo views (None or an empty set: none)."""
        self._pseudo.set(views, self.device)

    def training_image(self, index: int) -> Tensor:
        """Real training image `index` [H, W, 3] (uint8 or float), from the image cache."""
        return self.cached_train[index]["image"]

    def next_train(self, step: int) -> Tuple[Cameras, Dict]:
        if not self._pseudo.draw():
            return super().next_train(step)
        index = self._pseudo.next_index()
        views = self._pseudo.views
        assert views is not None
        camera = views.cameras[index : index + 1].to(self.device)
        data = {
            "image": self._pseudo.images[index],
            "mask": self._pseudo.masks[index],
            "image_idx": int(views.reference_indices[index]),
            "difix_pseudo": True,
        }
        return camera, data


@dataclass
class DifixVanillaDataManagerConfig(VanillaDataManagerConfig):
    """Ray-sampling data manager of difix-nerfacto (images held in the main process)."""

    _target: Type = field(default_factory=lambda: DifixVanillaDataManager)
    pseudo_fraction: float = 0.3
    """Share of each ray batch sampled from pseudo views while there are any (the paper's 70% real / 30% pseudo)."""
    pseudo_sampling_seed: int = 42
    """Seed of the pseudo-ray sampling."""
    validate_data: bool = True
    """Check every image, camera and split before loading (one error listing every problem with its file name)."""


def _cat_ray_bundles(a: RayBundle, b: RayBundle) -> RayBundle:
    """Two flat ray bundles as one (RayBundle has no concatenate helper)."""
    values = {}
    for f in fields(RayBundle):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, Tensor) and isinstance(y, Tensor):
            values[f.name] = torch.cat([x, y])
        elif isinstance(x, dict) and isinstance(y, dict):
            values[f.name] = {k: torch.cat([x[k], y[k]]) for k in x if k in y}
        elif x is None and y is None:
            values[f.name] = None
        else:
            raise ValueError(
                f"cannot concatenate ray bundles: field {f.name} is {type(x).__name__} and {type(y).__name__}"
            )
    return RayBundle(**values)


class DifixVanillaDataManager(ValidatedDatamanager, VanillaDataManager, Generic[TDataset]):
    """Real training images and pseudo views, ray batches (see module docstring)."""

    config: DifixVanillaDataManagerConfig

    def _after_init(self) -> None:
        self._pseudo = _PseudoViewHolder(self.config.pseudo_fraction, self.config.pseudo_sampling_seed)
        self._pseudo_generator = torch.Generator().manual_seed(self.config.pseudo_sampling_seed)

    @property
    def pseudo_views(self) -> Optional[PseudoViews]:
        """The current pseudo views (None when there are none)."""
        return self._pseudo.views

    def set_pseudo_views(self, views: Optional[PseudoViews]) -> None:
        """Replace the pseudo views (None or an empty set: none)."""
        self._pseudo.set(views, "cpu")

    def training_image(self, index: int) -> Tensor:
        """Real training image `index` [H, W, 3] float, read from the dataset."""
        return self.train_dataset.get_image_float32(index)

    def _sample_pseudo_rays(self, count: int) -> Tuple[RayBundle, Dict[str, Tensor]]:
        views = self._pseudo.views
        assert views is not None
        g = self._pseudo_generator
        view = torch.randint(len(views), (count,), generator=g)
        heights, widths = views.cameras.height[view, 0], views.cameras.width[view, 0]
        y = (torch.rand(count, generator=g) * heights).long().clamp(max=heights - 1)
        x = (torch.rand(count, generator=g) * widths).long().clamp(max=widths - 1)
        if self._pseudo.stacked is not None:  # the usual case (one image size): one gather
            images, masks = self._pseudo.stacked
            rgb, mask = images[view, y, x], masks[view, y, x]
        else:
            picks = list(zip(view.tolist(), y.tolist(), x.tolist()))
            rgb = torch.stack([self._pseudo.images[v][yi, xi] for v, yi, xi in picks])
            mask = torch.stack([self._pseudo.masks[v][yi, xi] for v, yi, xi in picks])
        coords = torch.stack([y, x], dim=-1).float() + 0.5
        cameras = views.cameras.to(self.device)
        bundle = cameras.generate_rays(camera_indices=view[:, None].to(self.device), coords=coords.to(self.device))
        bundle.camera_indices = views.reference_indices[view][:, None].to(self.device)
        batch = {"image": rgb.float().div(255.0).to(self.device), "difix_mask": mask.float().to(self.device)}
        return bundle, batch

    def next_train(self, step: int) -> Tuple[RayBundle, Dict]:
        ray_bundle, batch = super().next_train(step)
        if self._pseudo.views is None or self._pseudo.fraction == 0.0:
            return ray_bundle, batch
        total = ray_bundle.origins.shape[0]
        num_pseudo = int(round(total * self._pseudo.fraction))
        num_real = total - num_pseudo
        real = {k: (v[:num_real] if isinstance(v, Tensor) and v.shape[:1] == (total,) else v) for k, v in batch.items()}
        pseudo_bundle, pseudo_batch = self._sample_pseudo_rays(num_pseudo)
        device = ray_bundle.origins.device
        merged = {
            **real,
            "image": torch.cat(
                [real["image"].to(device), pseudo_batch["image"][:, : real["image"].shape[-1]].to(device)]
            ),
            "difix_pseudo": (torch.arange(total) >= num_real).to(device),
            "difix_mask": torch.cat([torch.ones(num_real, 1), pseudo_batch["difix_mask"].cpu()]).to(device),
        }
        merged.pop("indices", None)  # pixel indices of real images only; nerfacto does not use them
        return _cat_ray_bundles(ray_bundle[:num_real], pseudo_bundle), merged
