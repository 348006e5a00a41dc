"""Latency and peak memory of the Difix fixer against a plain diffusers-style call of the same weights.

    python benchmarks/fixer_latency.py                 # CUDA: 576x1024, full SD-Turbo size, random weights
    python benchmarks/fixer_latency.py --tiny          # CPU-friendly: tiny model, 256x256, about a minute
    python benchmarks/fixer_latency.py --checkpoint nvidia/difix   # real weights instead of random ones
    python benchmarks/fixer_latency.py --sizes 576x1024 512x512 --precision bf16 --also-compile --json out.json
                                                       # several sizes, eager and compiled, one model build

"ours"  = `DifixFixer.fix`: prompt embedding cached, VAE LoRA merged, PyTorch SDPA attention, channels-last,
          bf16/fp16 autocast on CUDA (fp32 on CPU), optional torch.compile.
"plain" = what a plain diffusers call does per frame: tokenize + encode the prompt, fp32, diffusers' default
          (classic) attention processor, peft LoRA unmerged, `DDPMScheduler.step` for the x0 update.
Both run the same weights on the same input; the script prints ms/frame, peak memory and the speed-up ratio.
Target on GPU: <= 20 ms/frame at 576x1024 and >= 1.5x faster than the plain call.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import torch


def _rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class _PeakMemory:
    """Peak CUDA allocation, or on CPU the peak resident set size above the level at entry (sampled)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def __enter__(self) -> "_PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes() - self._base)
            time.sleep(0.005)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._stop.set()
            self._thread.join()


def _time(fn: Callable[[], object], device: torch.device, warmup: int, iters: int) -> tuple[float, int]:
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        with _PeakMemory(device) as mem:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            for _ in range(iters):
                fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - start
    return elapsed / iters, mem.peak


def _build(args: argparse.Namespace, device: torch.device, workdir: Path):
    """Ours (merged LoRA, SDPA) and the plain parts (peft LoRA, classic attention, tokenizer + text encoder)."""
    from transformers import CLIPTextModel, CLIPTokenizer

    from difix_ns.fixers.difix import DifixFixer
    from difix_ns.fixers.testing import write_nvidia_layout

    if args.checkpoint is None:
        folder = write_nvidia_layout(workdir / "difix", size="tiny" if args.tiny else "full", seed=0)
    else:
        from difix_ns.fixers.difix_checkpoint import resolve_difix_source

        folder = resolve_difix_source(args.checkpoint)
    plain = DifixFixer.from_pretrained(folder, merge_vae_lora=False, attention="classic", device=device)
    ours = DifixFixer.from_pretrained(folder, merge_vae_lora=True, attention="sdpa", device=device)
    ours.configure(chunk_size=args.batch, precision=args.precision, channels_last=True, compile=args.compile)
    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    text_encoder = CLIPTextModel.from_pretrained(str(folder / "text_encoder")).to(device).eval()
    return ours, plain, tokenizer, text_encoder


def _plain_call(plain, tokenizer, text_encoder, scheduler, x: torch.Tensor) -> torch.Tensor:
    """The per-frame work of a plain pipeline call (as in the public reference's `Difix.forward`)."""
    ids = tokenizer(
        plain.prompt, max_length=tokenizer.model_max_length, padding="max_length", truncation=True,
        return_tensors="pt",
    ).input_ids.to(x.device)  # fmt: skip
    emb = text_encoder(ids)[0].expand(x.shape[0], -1, -1)
    z, skips = plain.vae.encode_with_skips(x * 2 - 1)
    z = z * plain.vae.config.scaling_factor
    t = torch.full((x.shape[0],), plain.timestep, device=x.device, dtype=torch.long)
    eps = plain.unet(z, t, encoder_hidden_states=emb).sample
    x0 = scheduler.step(eps, plain.timestep, z).prev_sample
    out = plain.vae.decode_with_skips(x0 / plain.vae.config.scaling_factor, skips)
    return (out / 2 + 0.5).clamp(0, 1)


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW (e.g. 576x1024), got {text!r}") from None
    return h, w


class _Report:
    """Rows of measurements, printed as they come and (with --json) rewritten to a file after each one, so that a
    run stopped part-way (a timeout during torch.compile) keeps what it measured."""

    def __init__(self, path: Path | None, header: dict) -> None:
        self.path, self.data = path, {**header, "rows": []}

    def add(self, **row: object) -> None:
        self.data["rows"].append(row)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.data, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=None, help="default 576 on CUDA, 256 on CPU")
    parser.add_argument("--width", type=int, default=None, help="default 1024 on CUDA, 256 on CPU")
    parser.add_argument("--sizes", type=_size, nargs="+", default=None, metavar="HxW",
                        help="several sizes in one run (one model build); overrides --height/--width")  # fmt: skip
    parser.add_argument("--batch", type=int, default=1, help="frames per call")
    parser.add_argument("--iters", type=int, default=None, help="timed calls (default 20 CUDA, 3 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 5 CUDA, 1 CPU)")
    parser.add_argument("--tiny", action="store_true", help="tiny random model (CPU-friendly)")
    parser.add_argument("--checkpoint", default=None, help="hub id or folder; default random weights")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet of 'ours'")
    parser.add_argument("--also-compile", action="store_true",
                        help="time 'ours' eager, then with torch.compile (compiled anew for each size)")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if args.compile and args.also_compile:
        parser.error("--also-compile already times the compiled model after the eager one; drop --compile")

    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    sizes = args.sizes or [(args.height or (576 if cuda else 256), args.width or (1024 if cuda else 256))]
    iters = args.iters or (20 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    from diffusers import DDPMScheduler

    with tempfile.TemporaryDirectory() as tmp:
        ours, plain, tokenizer, text_encoder = _build(args, device, Path(tmp))
    scheduler = DDPMScheduler.from_config(copy.deepcopy(dict(plain.scheduler.config)))
    scheduler.set_timesteps(timesteps=[plain.timestep], device=device)

    size_name = "tiny" if args.tiny else ("checkpoint" if args.checkpoint else "full (SD-Turbo size)")
    gpu = torch.cuda.get_device_name(device) if cuda else "cpu"
    report = _Report(args.json, {
        "device": str(device), "gpu": gpu, "model": size_name, "batch": args.batch, "iters": iters,
        "warmup": warmup, "precision": args.precision, "torch": torch.__version__,
    })  # fmt: skip
    per = 1000.0 / args.batch
    plain_ms = {}
    for h, w in sizes:
        x = torch.rand(args.batch, 3, h, w, device=device)

        def plain_call() -> torch.Tensor:
            return _plain_call(plain, tokenizer, text_encoder, scheduler, x)

        ms_plain, mem_plain = _time(plain_call, device, warmup, iters)
        ms_ours, mem_ours = _time(lambda: ours.fix(x), device, warmup, iters)
        with torch.no_grad():
            diff = (ours.fix(x) - plain_call()).abs().max().item()
        plain_ms[h, w] = ms_plain
        ours_name = "ours+compile" if args.compile else "ours"
        report.add(height=h, width=w, variant="plain", ms_per_frame=ms_plain * per, peak_mib=mem_plain / 2**20)
        report.add(height=h, width=w, variant=ours_name, ms_per_frame=ms_ours * per, peak_mib=mem_ours / 2**20,
                   ratio_vs_plain=ms_plain / ms_ours, max_abs_diff_vs_plain=diff)  # fmt: skip

        print(f"device {device} ({gpu}), model {size_name}, "
              f"{h}x{w}, batch {args.batch}, {iters} timed calls, precision {args.precision}")  # fmt: skip
        print(f"plain diffusers call : {ms_plain * per:9.2f} ms/frame   peak memory {mem_plain / 2**20:9.1f} MiB")
        print(f"difix-ns DifixFixer  : {ms_ours * per:9.2f} ms/frame   peak memory {mem_ours / 2**20:9.1f} MiB")
        print(f"speed-up ratio (plain / ours): {ms_plain / ms_ours:.2f}x   max |ours - plain| = {diff:.3g}", flush=True)

    if args.also_compile:
        for h, w in sizes:
            torch._dynamo.reset()  # each size compiled on its own (a viewer or a render runs at one size)
            ours.configure(compile=True)
            x = torch.rand(args.batch, 3, h, w, device=device)
            start = time.perf_counter()
            with torch.no_grad():
                ours.fix(x)  # the compilation, timed apart
            compile_s = time.perf_counter() - start
            ms_ours, mem_ours = _time(lambda: ours.fix(x), device, warmup, iters)
            ratio = plain_ms[h, w] / ms_ours
            report.add(height=h, width=w, variant="ours+compile", ms_per_frame=ms_ours * per,
                       peak_mib=mem_ours / 2**20, ratio_vs_plain=ratio, compile_s=compile_s)  # fmt: skip
            print(f"difix-ns DifixFixer + torch.compile at {h}x{w}: {ms_ours * per:9.2f} ms/frame   peak memory "
                  f"{mem_ours / 2**20:9.1f} MiB   speed-up {ratio:.2f}x   (compiled in {compile_s:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
