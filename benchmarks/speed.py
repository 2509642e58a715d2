"""Speed of our training loop against a bare PyTorch loop, inference throughput, extraction and cache times.

    python benchmarks/speed.py [--models cnn1d_3 resnet1d_10] [--batches 60] [--rounds 3]
    python benchmarks/speed.py --augment [--models cnn1d_3] [--rounds 3] [--device cuda] [--batches N]

For each model, ``trainer.train`` (our DataLoader, metrics, progress bar off) and a bare loop (random
permutation, tensor indexing, forward, cross-entropy, backward, AdamW and OneCycleLR steps) train the
same model from the same weights on the same in-memory MIT-BIH training beats, alternately, ``--rounds``
times each; the table gives medians and their ratio. Needs ``$ECG_DATA_ROOT/mitdb``. Prints Markdown.

``--augment`` instead times one training epoch of ``trainer.train`` (the whole ``ecg`` intra-patient training
split, or its first ``--batches``) on ``--device``, as ``commander.py`` trains (pinned batches, bfloat16 autocast
on CUDA), without augmentation and with every augmenter the beats take (``--augment`` of ``args.py`` less the
record-only ones), alternately, ``--rounds`` times each, from the same weights; the table gives the medians and
their ratio.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import trainer
from args import AUGMENTATIONS, RECORD_AUGMENTATIONS
from loaders import mitdb
from loaders.dataset import make_dataloader
from models import get_model
from toolbox.augment import Augmenter


def optimiser(model: torch.nn.Module, steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)


def ours(model: torch.nn.Module, data, batch: int, batches: int) -> float:
    opt, sched = optimiser(model, batches)
    loader = make_dataloader(data, batch, shuffle=True, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    trainer.train(model, loader, torch.nn.CrossEntropyLoss(), opt, torch.device("cpu"), 1, data.classes,
                  batch_scheduler=sched, max_batches=batches, progress=False)
    return time.perf_counter() - start


def bare(model: torch.nn.Module, data, batch: int, batches: int) -> float:
    opt, sched = optimiser(model, batches)
    model.train()
    start = time.perf_counter()
    order = torch.randperm(len(data.x), generator=torch.Generator().manual_seed(0))
    for i in range(batches):
        idx = order[i * batch:(i + 1) * batch]
        loss = F.cross_entropy(model(data.x[idx]), data.labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return time.perf_counter() - start


@torch.no_grad()
def inference(model: torch.nn.Module, data, batch: int = 1024) -> float:
    """Beats per second of ``trainer.test`` over the whole split at batch ``batch``."""
    loader = make_dataloader(data, batch)
    start = time.perf_counter()
    trainer.test(model, loader, torch.nn.CrossEntropyLoss(), torch.device("cpu"), data.classes, progress=False)
    return len(data) / (time.perf_counter() - start)


def epoch(model: torch.nn.Module, data, batch: int, batches: int | None, device: torch.device,
          augment: Augmenter | None) -> float:
    """Seconds of one epoch of ``trainer.train`` (its first ``batches``, if given) on ``device``."""
    steps = math.ceil(len(data) / batch) if batches is None else min(batches, math.ceil(len(data) / batch))
    opt, sched = optimiser(model, steps)
    loader = make_dataloader(data, batch, shuffle=True, generator=torch.Generator().manual_seed(0),
                             pin_memory=device.type == "cuda")
    torch.manual_seed(0)
    start = time.perf_counter()
    trainer.train(model, loader, torch.nn.CrossEntropyLoss(), opt, device, 1, data.classes, batch_scheduler=sched,
                  amp=device.type == "cuda", max_batches=batches, progress=False, augment=augment)
    return time.perf_counter() - start  # train() ends by copying its predictions to the host: the device is done


def augmentation_table(args: argparse.Namespace, data) -> None:
    """Print the epoch times without and with every augmenter the beats take, and their ratio."""
    device = torch.device(args.device)
    names = [n for n in AUGMENTATIONS if n not in RECORD_AUGMENTATIONS]
    every = Augmenter(names, data.signal_channels, len(data.classes))
    batches = args.batches or "all"
    print(f"augmenters: {' '.join(names)}; {len(data.train)} training beats, batch {args.batch_size}, "
          f"{batches} batches per epoch, {args.rounds} rounds\n")
    print("| model | device | plain s/epoch | augmented s/epoch | ratio augmented/plain |")
    print("|---|---|---|---|---|")
    for name in args.models:
        torch.manual_seed(0)
        start_weights = get_model(name, data.in_channels, len(data.classes)).to(device)
        epoch(copy.deepcopy(start_weights), data.train, args.batch_size, 2, device, every)  # warm up
        times = {"plain": [], "augmented": []}
        for _ in range(args.rounds):
            for kind, augment in (("plain", None), ("augmented", every)):
                times[kind].append(epoch(copy.deepcopy(start_weights), data.train, args.batch_size, args.batches,
                                         device, augment))
        plain, augmented = statistics.median(times["plain"]), statistics.median(times["augmented"])
        print(f"| `{name}` | {device} | {plain:.2f} | {augmented:.2f} | {augmented / plain:.3f} |", flush=True)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["cnn1d_3", "resnet1d_10"])
    p.add_argument("--batches", type=int, default=None,
                   help="training batches per timed run (default 60; with --augment the whole epoch)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3, help="timed runs of each loop (alternating)")
    p.add_argument("--augment", action="store_true",
                   help="only time a training epoch without and with every augmenter the beats take")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where --augment trains")
    return p


def main() -> None:
    p = get_args_parser()
    args = p.parse_args()
    raw = Path(os.environ.get("ECG_DATA_ROOT", "ecg_data")) / "mitdb"
    if args.augment:
        with tempfile.TemporaryDirectory() as tmp:
            data = mitdb.build(raw, Path(tmp), binary=False, split_seed=0, progress=False)
        print(f"# Augmentation speed, {time.strftime('%Y-%m-%d')}, {platform.machine()} {os.cpu_count()} CPUs, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
        print(f"`python benchmarks/speed.py --augment --models {' '.join(args.models)} --rounds {args.rounds} "
              f"--device {args.device}{f' --batches {args.batches}' if args.batches else ''}`\n")
        augmentation_table(args, data)
        return
    args.batches = args.batches or 60
    with tempfile.TemporaryDirectory() as tmp:
        cold = []
        for _ in range(2):
            start = time.perf_counter()
            mitdb.extract_beats(raw, progress=False)
            cold.append(time.perf_counter() - start)
        mitdb.load_beats(raw, Path(tmp), progress=False)  # writes the cache
        warm = []
        for _ in range(5):
            start = time.perf_counter()
            mitdb.load_beats(raw, Path(tmp), progress=False)
            warm.append(time.perf_counter() - start)
        data = mitdb.build(raw, Path(tmp), binary=False, split_seed=0, progress=False)
    print(f"# Speed, {time.strftime('%Y-%m-%d')}, {platform.machine()} {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print(f"`python benchmarks/speed.py --models {' '.join(args.models)} --batches {args.batches} "
          f"--rounds {args.rounds}`\n")
    print(f"- cold extraction of all 48 records (no cache): median {statistics.median(cold):.2f} s of {len(cold)}")
    print(f"- warm cache load: median {statistics.median(warm):.3f} s of {len(warm)}\n")
    print("| model | params | ours s/batch | bare s/batch | ratio ours/bare | train beats/s (ours) "
          "| inference beats/s (batch 1024) |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        torch.manual_seed(0)
        start_weights = get_model(name, 1, len(data.classes))
        times = {"ours": [], "bare": []}
        for _ in range(args.rounds):
            for kind, loop in (("ours", ours), ("bare", bare)):
                times[kind].append(loop(copy.deepcopy(start_weights), data.train, args.batch_size, args.batches)
                                   / args.batches)
        mo, mb = statistics.median(times["ours"]), statistics.median(times["bare"])
        params = sum(q.numel() for q in start_weights.parameters())
        print(f"| `{name}` | {params / 1e3:.0f} k | {mo:.4f} | {mb:.4f} | {mo / mb:.3f} | "
              f"{args.batch_size / mo:,.0f} | {inference(start_weights, data.test):,.0f} |", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak resident memory of this process: {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
