"""The per-scene self-trained fixer: a small NAFNet trained on leave-out pairs made from the scene's own training
views, for machines without pretrained diffusion weights (`fixer: self` in difix-splatfacto / difix-nerfacto).

Only training views are used (`difix_ns.data.curate` reads `train_filenames` and nothing else), so evaluation
images never reach the fixer's training data. With `warped_references` K > 0 the NAFNet trains on the inputs it
gets at run time: each leave-out pair also carries the K nearest remaining training photos of its fold warped into
the left-out view by that fold's reconstruction depth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple

__all__ = [
    "NOVEL_VIEW_STRATEGIES", "OWN_VIEW_STRATEGIES", "SELF_FIXER_CHECKS", "SelfFixerCheck", "SelfFixerConfig",
    "failed_self_fixer_checks", "self_fixer_scores", "self_fixer_validation", "train_self_fixer",
]  # fmt: skip

NOVEL_VIEW_STRATEGIES = ("leave-out",)
"""Curation strategies whose pairs are renders of views the reconstruction never saw: what the progressive update
fixes."""
OWN_VIEW_STRATEGIES = ("leave-out-own", "underfit")
"""Curation strategies whose pairs are renders of views the reconstruction trained on (under-fit, and near-perfect
at its full budget): renders post-processing must not make worse."""


@dataclass(frozen=True)
class SelfFixerCheck:
    """One check a self fixer must pass before a stage uses it: beat doing nothing on some of its validation
    pairs."""

    stage: Literal["update", "postprocess"]
    """The stage it gates: the progressive update or post-processing."""
    prefix: str
    """Prefix of its scores in a decision record (`{prefix}validation_psnr`, `{prefix}validation_psnr_unfixed`)."""
    strategies: Optional[Tuple[str, ...]]
    """Curation strategies of its pairs (None: all pairs; all pairs too when the fixer has none of these)."""
    pairs: str
    """Its pairs, in words."""


SELF_FIXER_CHECKS = (
    # The update fixes views the model never saw: the held-out views of the leave-out folds.
    SelfFixerCheck("update", "novel_view_", NOVEL_VIEW_STRATEGIES, "its held-out-view validation pairs"),
    # Post-processing fixes any render of a model that fits its training views: gain on all pairs, and lose
    # nothing on near-perfect renders (beer's fixer took them from 39 dB to 30.6 dB).
    SelfFixerCheck("postprocess", "", None, "all its validation pairs"),
    SelfFixerCheck("postprocess", "own_view_", OWN_VIEW_STRATEGIES, "the validation pairs of the folds' own views"),
)
"""Every check of the self fixer, in the order they are reported."""


@dataclass(frozen=True)
class SelfFixerConfig:
    """How the self-trained fixer is made: leave-out curation on the training views, then a short NAFNet run."""

    strategies: Tuple[Literal["leave-out", "underfit", "cross-reference"], ...] = ("leave-out",)
    """Curation strategies (only training views are ever read)."""
    method: str = "difix-splatfacto"
    """ns-train method for the leave-out reconstructions (no fixer stage)."""
    iterations: int = 300
    """Iterations of each leave-out reconstruction."""
    num_folds: int = 4
    """Number of leave-out folds (each left out once)."""
    own_fractions: Tuple[float, ...] = (0.5, 1.0)
    """Each fold also renders its own training views at these fractions of its iterations (under-fit and
    near-perfect renders: pairs that teach the fixer to leave good renders alone); empty: leave-out pairs only."""
    ns_train_args: str = ""
    """Extra ns-train options for the reconstructions, one string (e.g. "--pipeline.model.sh-degree 1")."""
    steps: int = 1500
    """NAFNet optimizer steps (upper bound; `max_seconds` may stop earlier)."""
    max_seconds: Optional[float] = 300.0
    """Time budget of the NAFNet training in seconds (None = no limit)."""
    nafnet_width: int = 16
    """NAFNet channels at full resolution."""
    warped_references: int = 2
    """Number K of depth-warped reference views the NAFNet takes (curated with each pair from the other training
    views of its reconstruction); 0 = none."""
    batch_size: int = 4
    """Triplets per step."""
    crop_size: int = 64
    """Random crop size."""
    lr: float = 1e-3
    """AdamW learning rate."""
    val_fraction: float = 0.1
    """Triplets held out for validation."""
    perceptual: Literal["auto", "off"] = "auto"
    """LPIPS + Gram when VGG16 weights exist, else L2 + SSIM."""
    seed: int = 0
    """Seed of reconstructions and training."""
    require_gain: bool = True
    """Use the self fixer only if it beats doing nothing (PSNR of fixed vs degraded) on its validation pairs;
    otherwise warn and use the identity fixer."""
    cpu: bool = False
    """Train the fixer on the CPU even with a GPU."""


def train_self_fixer(data: Path, out: Path, config: SelfFixerConfig = SelfFixerConfig()) -> Path:
    """Curate pairs from the training views of the dataset `data` into `out/pairs` and train a NAFNet into
    `out/train`; returns the fixer folder (`FixerConfig(backend="nafnet", checkpoint=...)` loads it).

    Resumable: finished curation units and training checkpoints under `out` are reused."""
    from difix_ns.data.curate import CurateConfig, curate
    from difix_ns.training.train_fixer import TrainFixerConfig, train_fixer

    out = Path(out)
    curated = curate(
        CurateConfig(
            data=Path(data),
            out=out / "pairs",
            strategies=tuple(config.strategies),
            method=config.method,
            iterations=config.iterations,
            num_folds=config.num_folds,
            leave_out_own_fractions=tuple(config.own_fractions),
            ns_train_args=config.ns_train_args,
            seed=config.seed,
            warped_references=config.warped_references,
        )
    )
    train = TrainFixerConfig(
        manifests=(curated.manifest,),
        out=out / "train",
        backend="nafnet",
        nafnet_width=config.nafnet_width,
        warped_references=config.warped_references,
        steps=config.steps,
        max_seconds=config.max_seconds,
        batch_size=config.batch_size,
        crop_size=config.crop_size,
        lr=config.lr,
        val_fraction=config.val_fraction,
        val_every=max(config.steps // 5, 1),
        save_every=max(config.steps // 10, 1),  # killed mid-training, a rerun resumes from the last of these
        perceptual=config.perceptual,
        seed=config.seed,
        cpu=config.cpu,
    )
    return train_fixer(train)


def self_fixer_validation(
    fixer_dir: Path, strategies: Optional[Tuple[str, ...]] = None
) -> Optional[Tuple[float, float]]:
    """(PSNR of the fixed, PSNR of the degraded images) on the self fixer's held-out validation pairs, from the
    training summary next to `fixer_dir`; None when it has no validation. `strategies`: only the pairs of those
    curation strategies (mean over their pairs), when the summary has such pairs; else all pairs."""
    import json

    summary = Path(fixer_dir).parent / "summary.json"
    if not summary.is_file():
        return None
    summary = json.loads(summary.read_text())
    by_strategy = summary.get("validation_by_strategy") or {}
    chosen = [by_strategy[s] for s in strategies or () if by_strategy.get(s, {}).get("pairs")]
    if chosen:
        pairs = sum(c["pairs"] for c in chosen)
        fixed, degraded = (sum(float(c[k]) * c["pairs"] for c in chosen) / pairs for k in ("psnr", "psnr_degraded"))
        return fixed, degraded
    validation = summary.get("validation") or {}
    if "psnr" not in validation or "psnr_degraded" not in validation:
        return None
    return float(validation["psnr"]), float(validation["psnr_degraded"])


def self_fixer_scores(fixer_dir: Path) -> Dict[str, Optional[float]]:
    """The scores of every check in `SELF_FIXER_CHECKS` (None where the fixer has no validation), keyed as in a
    decision record."""
    scores: Dict[str, Optional[float]] = {}
    for check in SELF_FIXER_CHECKS:
        fixed, unfixed = self_fixer_validation(fixer_dir, check.strategies) or (None, None)
        scores.update({f"{check.prefix}validation_psnr": fixed, f"{check.prefix}validation_psnr_unfixed": unfixed})
    return scores


def failed_self_fixer_checks(scores: dict, stage: Optional[str] = None) -> List[SelfFixerCheck]:
    """The checks (of `stage`, or all) whose scores in `scores` (as `self_fixer_scores` gives them) show no gain
    over doing nothing; a check without scores (no validation, an older record) passes."""
    failed = []
    for check in SELF_FIXER_CHECKS:
        fixed = scores.get(f"{check.prefix}validation_psnr")
        unfixed = scores.get(f"{check.prefix}validation_psnr_unfixed")
        if (stage is None or check.stage == stage) and fixed is not None and unfixed is not None and fixed <= unfixed:
            failed.append(check)
    return failed
