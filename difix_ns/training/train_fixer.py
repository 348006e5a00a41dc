"""`difix-ns train-fixer`: train the NAFNet fixer from scratch or fine-tune Difix on curated triplets.

Data-parallel through Hugging Face Accelerate: one process runs as is; several processes (GPUs or machines) start
with `accelerate launch` or `torchrun`, e.g.

    torchrun --nproc_per_node 8 -m difix_ns.training.train_fixer --manifests pairs/manifest.jsonl --out fixer/

and every rank ends with identical weights (DDP all-reduces the gradients; gloo on CPU, NCCL on GPUs).

Loss: L2 + LPIPS + 0.5 x Gram(VGG16) after a warm-up, or L2 + SSIM where the VGG16 weights are absent (said once;
see `losses.FixerLoss`). AdamW, random crops, tensorboard logs (`out/logs`), validation PSNR/SSIM every
`val_every` steps, checkpoints (`out/checkpoints/step-N`, Accelerate state: model, optimizer, RNG) and resume
from the newest one. The trained fixer is written to `out/fixer/`, loadable with
`FixerConfig(backend=..., checkpoint="out/fixer")`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple

__all__ = ["TrainFixerConfig", "train_fixer", "validation_per_pair", "weights_digest"]


@dataclass(frozen=True)
class TrainFixerConfig:
    """Train a fixer (NAFNet from scratch, or Difix fine-tuning) on triplets from `difix-ns curate`."""

    manifests: Tuple[Path, ...] = (Path("outputs/pairs/manifest.jsonl"),)
    """manifest.jsonl files of `difix-ns curate` (several scenes: list several)."""
    out: Path = Path("outputs/fixer")
    """Output folder: fixer/ (the trained fixer), checkpoints/, logs/ (tensorboard), summary.json."""
    backend: Literal["nafnet", "difix"] = "nafnet"
    """nafnet: train the small CNN restorer from scratch; difix: fine-tune a Difix checkpoint (`init_checkpoint`)."""
    init_checkpoint: Optional[str] = None
    """Start from this fixer folder (required for difix: a local folder or hub id; optional for nafnet)."""
    nafnet_width: int = 16
    """NAFNet: channels at full resolution."""
    nafnet_enc_blocks: Tuple[int, ...] = (1, 1, 1)
    """NAFNet: blocks per encoder level (its length = number of downsamplings)."""
    nafnet_middle_blocks: int = 1
    """NAFNet: blocks at the lowest resolution."""
    nafnet_dec_blocks: Tuple[int, ...] = (1, 1, 1)
    """NAFNet: blocks per decoder level."""
    use_reference: bool = False
    """Feed the reference view to the fixer (NAFNet reference input; Difix only if the checkpoint is difix_ref)."""
    warped_references: int = 0
    """nafnet: number K of depth-warped reference views (and masks, from the manifest's `warped` lists) the
    NAFNet takes as input; triplets with fewer get views that see nothing. 0 = none."""
    zero_init_residual: bool = True
    """NAFNet from scratch: zero-initialise the last conv so the untrained fixer is the identity."""
    unet: Literal["full", "lora", "frozen"] = "full"
    """difix: train the whole UNet (paper), a LoRA on its attention projections (cheaper), or keep it frozen."""
    unet_lora_rank: int = 8
    """difix with unet=lora: LoRA rank."""
    difix_noise_start: Optional[bool] = None
    """difix: train (and save for) NiFi's start from an intermediate noise level (`FixerConfig.noise_start`) at the
    checkpoint's timestep or `difix_timestep`; None: as the checkpoint was saved."""
    difix_timestep: Optional[int] = None
    """difix: the single-step timestep t0 to train at (None: the checkpoint's)."""
    steps: int = 2000
    """Optimizer steps (total, counting resumed ones)."""
    max_seconds: Optional[float] = None
    """Stop early after this many seconds of training in this call (time budget); None = no limit."""
    batch_size: int = 4
    """Triplets per step and process."""
    crop_size: int = 64
    """Random square crops of this size (padded where an image is smaller)."""
    lr: Optional[float] = None
    """AdamW learning rate (None: 1e-3 for nafnet, 2e-5 for difix as in the paper)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Clip the gradient norm to this value (0 = off)."""
    perceptual: Literal["auto", "off"] = "auto"
    """auto: L2 + LPIPS + Gram when the VGG16 weights are present, else L2 + SSIM (said once); off: L2 + SSIM."""
    lpips_weight: float = 1.0
    """Weight of LPIPS."""
    gram_weight: float = 0.5
    """Weight of the VGG16 Gram loss (paper: 0.5)."""
    gram_warmup_steps: int = 1000
    """Steps before the Gram loss is switched on."""
    ssim_weight: float = 0.5
    """Weight of (1 - SSIM) in the fallback loss."""
    val_fraction: float = 0.1
    """Fraction of triplets held out for validation (by a hash of their id)."""
    val_every: int = 200
    """Validation PSNR/SSIM every this many steps (and at the end)."""
    save_every: int = 500
    """Checkpoint every this many steps (and at the end)."""
    keep_checkpoints: int = 2
    """Number of newest checkpoints kept."""
    log_every: int = 10
    """Log losses to tensorboard every this many steps."""
    resume: bool = True
    """Continue from the newest checkpoint in out/checkpoints if there is one."""
    num_workers: int = 0
    """DataLoader worker processes."""
    seed: int = 0
    """Random seed (crops, initialisation)."""
    cpu: bool = False
    """Train on the CPU even when a GPU is present."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Accelerate mixed precision (GPU)."""

    def validate(self) -> None:
        """Raise ValueError naming the first bad option."""
        for name in ("steps", "batch_size", "crop_size", "val_every", "save_every", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.backend == "difix" and self.init_checkpoint is None:
            raise ValueError("backend=difix fine-tunes an existing model: set init_checkpoint (folder or hub id)")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"max_seconds must be > 0, got {self.max_seconds}")
        if self.warped_references < 0:
            raise ValueError(f"warped_references must be >= 0, got {self.warped_references}")
        if self.warped_references > 0 and self.backend != "nafnet":
            raise ValueError(
                f"warped_references={self.warped_references} needs backend=nafnet (the only back-end with warped "
                f"inputs), got backend={self.backend!r}"
            )

    def main(self) -> None:
        """Train and report where the fixer went."""
        from rich.console import Console

        console = Console()
        try:
            folder = train_fixer(self)
        except ValueError as err:
            console.print(f"[bold red]difix-ns train-fixer: {err}")
            raise SystemExit(2) from err
        console.print(f"[bold green]Trained fixer:[/] [cyan]{folder}")


# ------------------------------------------------------------------------------------------------ building


def _build_fixer(config: TrainFixerConfig) -> Tuple[Any, List[Any]]:
    """The fixer in train mode and its trainable parameters."""
    import torch

    if config.backend == "nafnet":
        from difix_ns.fixers.nafnet import NAFNet, NAFNetFixer

        if config.init_checkpoint is not None:
            fixer = NAFNetFixer.from_pretrained(config.init_checkpoint)
            if fixer.warped_references != config.warped_references:
                raise ValueError(
                    f"init_checkpoint {config.init_checkpoint!r} takes warped_references={fixer.warped_references}, "
                    f"but warped_references={config.warped_references} was asked for"
                )
        else:
            net = NAFNet(
                width=config.nafnet_width,
                enc_blk_nums=tuple(config.nafnet_enc_blocks),
                middle_blk_num=config.nafnet_middle_blocks,
                dec_blk_nums=tuple(config.nafnet_dec_blocks),
                use_reference=config.use_reference,
                warped_references=config.warped_references,
            )
            if config.zero_init_residual:
                # start as the identity (NAFNet adds its output to the input): training can only move away from
                # "no change" where the loss says so, instead of starting from a random residual
                torch.nn.init.zeros_(net.ending.weight)
                torch.nn.init.zeros_(net.ending.bias)
            fixer = NAFNetFixer(net)
        fixer.requires_grad_(True)
        return fixer.train(), list(fixer.parameters())
    from difix_ns.fixers.difix import DifixFixer
    from difix_ns.training.difix_finetune import prepare_difix_for_training

    fixer = DifixFixer.from_pretrained(config.init_checkpoint, merge_vae_lora=False, timestep=config.difix_timestep,
                                       noise_start=config.difix_noise_start)  # fmt: skip
    params = prepare_difix_for_training(fixer, config.unet, config.unet_lora_rank)
    return fixer.train(), params


def _default_lr(config: TrainFixerConfig) -> float:
    if config.lr is not None:
        return config.lr
    return 1e-3 if config.backend == "nafnet" else 2e-5


def _save_fixer(fixer: Any, folder: Path, backend: str) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    if backend == "nafnet":
        fixer.save_pretrained(folder)
    else:
        import copy

        from difix_ns.training.difix_finetune import export_difix

        export_difix(copy.deepcopy(fixer), folder)


def weights_digest(module: Any) -> str:
    """sha256 of all parameters and buffers (names and bytes): equal digests mean identical weights."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ loop helpers


def _latest_checkpoint(folder: Path) -> Optional[Path]:
    found = [p for p in folder.glob("step-*") if (p / "train_state.json").is_file()]
    return max(found, key=lambda p: int(p.name.split("-")[1])) if found else None


def _ended_on_time_budget(out: Path, config: TrainFixerConfig) -> Optional[int]:
    """The step at which an earlier call with a time budget stopped on it (and saved its fixer), else None."""
    latest = _latest_checkpoint(out / "checkpoints") if config.resume else None
    if latest is None or config.max_seconds is None or not (out / "fixer").is_dir():
        return None
    state = json.loads((latest / "train_state.json").read_text())
    return int(state["step"]) if state.get("time_budget_spent") else None


def _batches(loader: Any):
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        for batch in loader:
            yield batch
        epoch += 1


def _fix_args(batch: Dict[str, Any], use_reference: bool) -> Tuple[Any, Any, Any]:
    """The fixer's (images, refs, warped) of a batch (warped: a WarpedViews when the batch holds warped views)."""
    from difix_ns.fixers.base import WarpedViews

    warped = WarpedViews(batch["warped"], batch["warped_mask"]) if "warped" in batch else None
    return batch["degraded"], batch["reference"] if use_reference else None, warped


def validation_per_pair(fixer: Any, dataset: Any, use_reference: bool, device: Any) -> List[Dict[str, float]]:
    """PSNR/SSIM of fixed vs clean, and of degraded vs clean (the baseline), of each full validation image of
    `dataset` in order (with its warped references when the dataset has them)."""
    import torch

    from difix_ns.metrics import psnr
    from difix_ns.training.losses import ssim

    scores = []
    was_training = fixer.training
    fixer.eval()
    with torch.no_grad():
        for i in range(len(dataset)):
            item = {k: v[None].to(device) for k, v in dataset[i].items()}
            degraded, refs, warped = _fix_args(item, use_reference)
            clean = item["clean"]
            fixed = fixer(degraded, refs, warped).clamp(0, 1)
            scores.append(
                {
                    "psnr": psnr(fixed, clean),
                    "ssim": float(ssim(fixed, clean).mean()),
                    "psnr_degraded": psnr(degraded, clean),
                    "ssim_degraded": float(ssim(degraded, clean).mean()),
                }
            )
    fixer.train(was_training)
    return scores


def _mean_scores(scores: Sequence[Dict[str, float]]) -> Dict[str, float]:
    """Means of `validation_per_pair`'s scores."""
    keys = ("psnr", "ssim", "psnr_degraded", "ssim_degraded")
    return {k: sum(float(s[k]) for s in scores) / max(len(scores), 1) for k in keys}


# ------------------------------------------------------------------------------------------------ training


@dataclass
class _Session:
    """Everything one `train_fixer` call trains with (built by `_setup_session`)."""

    config: TrainFixerConfig
    out: Path
    accelerator: Any
    model: Any
    params: List[Any]
    optimizer: Any
    loader: Any
    loss_fn: Any
    val_set: Any
    use_reference: bool
    num_train: int
    num_val: int

    @property
    def checkpoints(self) -> Path:
        return self.out / "checkpoints"


def _setup_session(config: TrainFixerConfig, out: Path) -> _Session:
    """Pairs, fixer, loss, optimizer and data loader, prepared by Accelerate."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from torch.utils.data import DataLoader

    from difix_ns.training.losses import FixerLoss
    from difix_ns.training.pairs import PairDataset, load_pairs, split_pairs

    train_records, val_records = split_pairs(load_pairs([Path(m) for m in config.manifests]), config.val_fraction)
    if not train_records:
        raise ValueError(f"no training triplets left after holding out val_fraction={config.val_fraction}")
    accelerator = Accelerator(
        cpu=config.cpu,
        mixed_precision=config.mixed_precision,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
    )
    set_seed(config.seed)  # same initial weights on every rank (DDP also broadcasts them)
    fixer, params = _build_fixer(config)
    loss_fn = FixerLoss(
        config.perceptual, config.lpips_weight, config.gram_weight, config.gram_warmup_steps, config.ssim_weight
    ).to(accelerator.device)
    optimizer = torch.optim.AdamW(params, lr=_default_lr(config), weight_decay=config.weight_decay)
    train_set = PairDataset(
        train_records, crop_size=config.crop_size, augment=True, warped_references=config.warped_references
    )
    loader = DataLoader(
        train_set,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=len(train_set) >= config.batch_size * accelerator.num_processes,
        num_workers=config.num_workers,
    )
    use_reference = config.use_reference and fixer.supports_refs
    model, optimizer, loader = accelerator.prepare(fixer, optimizer, loader)
    return _Session(
        config, out, accelerator, model, params, optimizer, loader, loss_fn,
        PairDataset(val_records, warped_references=config.warped_references),
        use_reference, len(train_records), len(val_records),
    )  # fmt: skip


def _resume(session: _Session) -> int:
    """Load the latest checkpoint when resuming; start the trackers; returns the step to continue from."""
    config, accelerator, out = session.config, session.accelerator, session.out
    step = 0
    latest = _latest_checkpoint(session.checkpoints) if config.resume else None
    if latest is not None:
        accelerator.load_state(str(latest))
        step = json.loads((latest / "train_state.json").read_text())["step"]
        accelerator.print(f"train-fixer: resumed from {latest} (step {step})")
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        hparams = {k: (str(v) if not isinstance(v, (int, float, str, bool)) else v) for k, v in asdict(config).items()}
        accelerator.init_trackers("train_fixer", config={k: v for k, v in hparams.items() if v is not None})
    accelerator.print(
        f"train-fixer: {config.backend}, {session.num_train} train / {session.num_val} val triplets, "
        f"loss {session.loss_fn.mode}, {accelerator.num_processes} process(es) on {accelerator.device}"
    )
    return step


def _save_checkpoint(session: _Session, at: int, time_budget_spent: bool = False) -> None:
    """Training state at step `at`; only the newest `keep_checkpoints` are kept."""
    accelerator, checkpoints = session.accelerator, session.checkpoints
    folder = checkpoints / f"step-{at:07d}"
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        state = {"step": at, "time_budget_spent": time_budget_spent}
        (folder / "train_state.json").write_text(json.dumps(state) + "\n")
        for old in sorted(checkpoints.glob("step-*"), key=lambda p: p.name)[: -session.config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _train_step(session: _Session, batch: Dict[str, Any], step: int) -> Tuple[Any, Dict[str, Any]]:
    """One optimizer step; returns the loss and its terms."""
    import torch

    accelerator = session.accelerator
    degraded, refs, warped = _fix_args(batch, session.use_reference)
    with accelerator.autocast():
        pred = session.model(degraded, refs, warped)
        loss, terms = session.loss_fn(pred, batch["clean"], step)
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"train-fixer: non-finite loss at step {step}: { {k: float(v) for k, v in terms.items()} }"
        )
    session.optimizer.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    if session.config.grad_clip > 0:
        accelerator.clip_grad_norm_(session.params, session.config.grad_clip)
    session.optimizer.step()
    return loss, terms


def _time_is_up(session: _Session, start: float) -> bool:
    """Whether any rank has spent the time budget (all ranks stop together)."""
    import torch

    limit = session.config.max_seconds
    over = limit is not None and time.perf_counter() - start > limit
    flag = session.accelerator.reduce(torch.tensor([float(over)], device=session.accelerator.device), reduction="sum")
    return float(flag) > 0


def _train_loop(session: _Session, step: int, start: float) -> Dict[str, Any]:
    """Train from `step` to `config.steps` or the time budget, with logging, validation and checkpoints."""
    config, accelerator = session.config, session.accelerator
    history: List[Dict[str, float]] = []
    val_scores: List[Dict[str, float]] = []  # per validation pair, at `val_step`
    val_step = -1
    batches = _batches(session.loader)
    last_saved, spent = step, False
    while step < config.steps:
        loss, terms = _train_step(session, next(batches), step)
        step += 1
        if step % config.log_every == 0 or step == 1:
            logs = {"train/loss": float(loss.detach()), **{f"train/{k}": float(v.detach()) for k, v in terms.items()}}
            accelerator.log(logs, step=step)
            history.append({"step": step, **{k.split("/")[1]: v for k, v in logs.items()}})
        if session.num_val and (step % config.val_every == 0):
            val_scores = _validate(accelerator, session.model, session.val_set, session.use_reference, step)
            val_step = step
        if step % config.save_every == 0:
            _save_checkpoint(session, step)
            last_saved = step
        if _time_is_up(session, start):
            accelerator.print(f"train-fixer: time budget of {config.max_seconds:g} s reached at step {step}")
            spent = True
            break
    if session.num_val and val_step != step:
        val_scores = _validate(accelerator, session.model, session.val_set, session.use_reference, step)
    if last_saved != step or spent:
        _save_checkpoint(session, step, time_budget_spent=spent)
    validation = _mean_scores(val_scores) if val_scores else {}
    return {"step": step, "history": history, "validation": validation, "validation_per_pair": val_scores}


def _validation_by_strategy(session: _Session, scores: Sequence[Dict[str, float]]) -> Dict[str, Dict[str, float]]:
    """The final validation's `scores` (one per validation pair) per curation strategy ({strategy: mean metrics and
    `pairs`}): held-out views and a reconstruction's own views are different renders, and the self fixer's gates
    judge each stage of a run on the renders it meets."""
    groups: Dict[str, List[Dict[str, float]]] = {}
    for record, score in zip(session.val_set.records, scores):
        groups.setdefault(str(record.get("strategy", "unknown")), []).append(score)
    return {strategy: {**_mean_scores(group), "pairs": len(group)} for strategy, group in sorted(groups.items())}


def _export(session: _Session, result: Dict[str, Any], start: float) -> Path:
    """Save the trained fixer (`out/fixer`), each rank's weights digest and `summary.json`."""
    import torch

    accelerator, out = session.accelerator, session.out
    unwrapped = accelerator.unwrap_model(session.model)
    digest = weights_digest(unwrapped)
    (out / "ranks").mkdir(parents=True, exist_ok=True)
    rank_file = out / "ranks" / f"rank{accelerator.process_index}.json"
    rank_file.write_text(json.dumps({"step": result["step"], "sha256": digest}))
    fixer_dir = out / "fixer"
    if accelerator.is_main_process:
        _save_fixer(unwrapped, fixer_dir, session.config.backend)
        summary = {
            "step": result["step"],
            "seconds": round(time.perf_counter() - start, 2),
            "loss": session.loss_fn.mode,
            "processes": accelerator.num_processes,
            "distributed_backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
            "train_pairs": session.num_train,
            "val_pairs": session.num_val,
            "warped_references": session.config.warped_references,
            "validation": result["validation"],
            "validation_by_strategy": _validation_by_strategy(session, result["validation_per_pair"]),
            "history": result["history"],
            "fixer": str(fixer_dir),
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return fixer_dir


def train_fixer(config: TrainFixerConfig) -> Path:
    """Train as `config` says (resuming when asked); returns the folder of the trained fixer (`out/fixer`)."""
    config.validate()
    out = Path(config.out).resolve()
    ended = _ended_on_time_budget(out, config)
    if ended is not None:
        # A run stopped by its time budget is finished: resuming it would train (and change) the fixer again.
        print(f"train-fixer: {out} spent its time budget at step {ended}; keeping {out / 'fixer'}")
        return out / "fixer"
    session = _setup_session(config, out)
    step = _resume(session)
    start = time.perf_counter()
    result = _train_loop(session, step, start)
    return _export(session, result, start)


def _validate(accelerator: Any, model: Any, val_set: Any, use_reference: bool, step: int) -> List[Dict[str, float]]:
    """Validation scores per pair (main process; other ranks get []), logged and printed as their mean."""
    scores: List[Dict[str, float]] = []
    if accelerator.is_main_process:
        scores = validation_per_pair(accelerator.unwrap_model(model), val_set, use_reference, accelerator.device)
        metrics = _mean_scores(scores)
        accelerator.log({f"val/{k}": v for k, v in metrics.items()}, step=step)
        accelerator.print(
            f"train-fixer: step {step} validation PSNR {metrics['psnr']:.2f} dB "
            f"(degraded {metrics['psnr_degraded']:.2f}), "
            f"SSIM {metrics['ssim']:.4f} (degraded {metrics['ssim_degraded']:.4f})"
        )
    accelerator.wait_for_everyone()
    return scores


def _entrypoint() -> None:
    import tyro

    tyro.cli(TrainFixerConfig).main()


if __name__ == "__main__":
    _entrypoint()
