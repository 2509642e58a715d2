"""How the record pipeline scales: synthetic Challenge databases of N records built from the real ones.

    python benchmarks/scale.py [--sizes 1000 5000 20000] [--rounds 3] [--seq-len 2.5] [--work-dir DIR] [--keep]

For each N it writes a Challenge-format database (copies of the real cinc2020 records under new names, each
scaled by 0.9-1.1 and offset by up to +-20 counts, with the length mix of the Challenge 2020 training data:
75% 10 s, 23.5% 6-60 s, 1.2% 60-120 s and 0.3% 30 min, the long ones tiled from the real records), then
measures, each step in a fresh process:

- the cache build (:mod:`loaders.mapped`): seconds, records/s, MB/s, peak RSS of the main process and of its
  largest worker;
- one training epoch of cnn1d_3 on random ``--seq-len`` crops (batch 64) through ``trainer.train``, on the memory
  map and on the same array read into RAM, alternated ``--rounds`` times (medians), with ``-j 0``, and on the map
  with ``-j 2``:
  samples/s and peak RSS (the largest of the process and its DataLoader workers);
- the cache's size on disk;
- at the smallest N, one epoch through ``commander.py`` alone and under ``torchrun --nproc_per_node 2`` (gloo):
  the training seconds each logs.

It prints a Markdown table and how each figure grows from the smallest to the largest N, then deletes what it
wrote (unless ``--keep``). Needs ``$ECG_DATA_ROOT/cinc2020``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
LENGTHS = ((0.75, 10, 10), (0.235, 6, 60), (0.012, 60, 120), (0.003, 1800, 1800))  # share, shortest, longest (s)
FS = 500


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/scale.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000], help="database sizes N (records)")
    p.add_argument("--seq-len", type=float, default=2.5, help="training crops in seconds")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3, help="map and RAM epochs, alternated, per N (medians)")
    p.add_argument("--work-dir", type=Path, default=None, help="where the databases go (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the databases and caches")
    p.add_argument("--no-ddp", action="store_true", help="skip the torchrun comparison")
    p.add_argument("--step", choices=["build", "train"], help=argparse.SUPPRESS)  # one measurement, in a child
    p.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--ram", action="store_true", help=argparse.SUPPRESS)
    return p


# ---- the synthetic database ----

def _real_records(folder: Path) -> list[tuple[list[str], np.ndarray]]:
    """(header lines, val) of every real record at 500 Hz."""
    import scipy.io

    from loaders import cinc2020

    out = []
    for name in cinc2020.list_records(folder):
        header = cinc2020.read_header(folder / f"{name}.hea")
        if header.fs == FS:
            lines = (folder / f"{name}.hea").read_text().splitlines()
            out.append((lines, scipy.io.loadmat(folder / f"{name}.mat")["val"]))
    return out


def _lengths(n: int, rng: np.random.Generator) -> np.ndarray:
    kind = rng.choice(len(LENGTHS), size=n, p=[s for s, _, _ in LENGTHS])
    lo, hi = np.array([lo for _, lo, _ in LENGTHS])[kind], np.array([hi for _, _, hi in LENGTHS])[kind]
    return np.round(rng.uniform(lo, hi) * FS).astype(int)


def synthesize(real: Path, dest: Path, n: int, seed: int = 0) -> int:
    """Write ``n`` Challenge records into ``dest/cinc2020/records`` (and the scoring tables); bytes written."""
    import scipy.io

    rng = np.random.default_rng(seed)
    records = dest / "cinc2020" / "records"
    records.mkdir(parents=True)
    shutil.copytree(real / "scoring", dest / "cinc2020" / "scoring")
    sources = _real_records(real / "records")
    for i, length in enumerate(_lengths(n, rng)):
        lines, val = sources[i % len(sources)]
        name = f"SYN{i:06d}"
        reps = -(-length // val.shape[1])
        signal = np.tile(val, (1, reps))[:, :length].astype(np.float64) * rng.uniform(0.9, 1.1)
        signal = np.clip(np.rint(signal + rng.integers(-20, 21)), -32768, 32767).astype(np.int16)
        leads = [line.split() for line in lines[1:13]]
        text = [f"{name} 12 {FS} {length}"]
        text += [f"{name}.mat 16+24 {f[2]} 16 0 {signal[k, 0]} 0 0 {f[8]}" for k, f in enumerate(leads)]
        text += [line for line in lines if line.startswith("#")]
        (records / f"{name}.hea").write_text("\n".join(text) + "\n")
        scipy.io.savemat(records / f"{name}.mat", {"val": signal}, do_compression=False)
    return sum(f.stat().st_size for f in records.iterdir())


# ---- measurements, each in a process of its own ----

def _peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (Linux: ru_maxrss in kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_build(root: Path) -> dict:
    from loaders import cinc2020

    start = time.perf_counter()
    store = cinc2020.load_records(root / "cinc2020" / "records", root / "cache", FS, progress=False)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "records": len(store), "mb": store.signal.nbytes / 1e6, "rss_self": _peak_rss_mb()}


def measure_train(root: Path, seq_len: float, batch_size: int, workers: int, ram: bool) -> dict:
    import torch

    import trainer
    from loaders import cinc2020
    from loaders.dataset import make_dataloader
    from models import get_model

    torch.manual_seed(0)
    data = cinc2020.build(root / "cinc2020", root / "cache", split_seed=0, seq_len=seq_len, progress=False)
    if ram:  # the same array read whole into memory (np.load without a map)
        data.train.store.signal = np.load(data.train.store.signal.filename)
    model = get_model("cnn1d_3", 12, len(data.classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = make_dataloader(data.train, batch_size, shuffle=True, generator=torch.Generator().manual_seed(0),
                             workers=workers)
    start = time.perf_counter()
    trainer.train(model, loader, torch.nn.BCEWithLogitsLoss(), optimizer, torch.device("cpu"), 1, data.classes,
                  multilabel=True, progress=False)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "samples": len(data.train), "samples_per_s": len(data.train) / seconds,
            "rss_self": _peak_rss_mb()}


def _tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            children.setdefault(int(stat.read_text().rsplit(")", 1)[1].split()[1]), []).append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    todo, found = [pid], []
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def _peak_kb(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in kB; 0 once it is gone."""
    try:
        line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmHWM"))
        return int(line.split()[1])
    except (OSError, StopIteration):
        return 0


def _child(args: argparse.Namespace, step: str, root: Path, *extra: str) -> dict:
    """Run one measurement in a fresh process; its peak RSS and that of the largest process it started (pool or
    DataLoader workers, wherever they hang in the tree) are read from /proc every 50 ms."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", step, "--root", str(root),
           "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    peaks: dict[int, int] = {}
    while proc.poll() is None:
        for pid in _tree(proc.pid):
            peaks[pid] = max(peaks.get(pid, 0), _peak_kb(pid))
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode:
        sys.exit(f"scale.py: {step} failed:\n{err[-2000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    main = max(peaks.pop(proc.pid, 0), int(result.pop("rss_self") * 1024))
    result.update(rss_main=main / 1024, rss_worker=max(peaks.values(), default=0) / 1024)
    return result


def _commander_epoch(root: Path, args: argparse.Namespace, ddp: bool) -> float:
    """Training seconds of one commander.py epoch (as logger.json has them), alone or under 2-process torchrun."""
    flags = ["--dataset", "cinc2020", "--model-name", "cnn1d_3", "--epochs", "1", "--seq-len", str(args.seq_len),
             "--batch-size", str(args.batch_size), "--root-dir", str(root / ("ddp" if ddp else "one"))]
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"] if ddp
              else [sys.executable])
    env = {**os.environ, "ECG_DATA_ROOT": str(root), **({"OMP_NUM_THREADS": "1"} if ddp else {})}
    (root / ("ddp" if ddp else "one")).mkdir(exist_ok=True)
    shutil.copytree(root / "cache", root / ("ddp" if ddp else "one") / "cache", dirs_exist_ok=True)
    proc = subprocess.run([*launch, str(REPO / "commander.py"), *flags], capture_output=True, text=True, cwd=REPO,
                          env=env)
    if proc.returncode:
        sys.exit(f"scale.py: commander.py{' under torchrun' if ddp else ''} failed:\n{proc.stderr[-2000:]}")
    run = next((root / ("ddp" if ddp else "one") / "cinc2020" / "runs").iterdir())
    return json.loads((run / "logger.json").read_text())["train"][0]["seconds"]


def _du(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e9


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.step == "build":
        print(json.dumps(measure_build(args.root)))
        return 0
    if args.step == "train":
        print(json.dumps(measure_train(args.root, args.seq_len, args.batch_size, args.workers, args.ram)))
        return 0
    real = Path(os.environ.get("ECG_DATA_ROOT", "ecg_data")) / "cinc2020"
    if not (real / "records").is_dir() or not (real / "scoring").is_dir():
        get_args_parser().error(f"{real} lacks records/ and scoring/; set ECG_DATA_ROOT to the folder that holds "
                                f"cinc2020/")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="ecg-scale-"))
    rows = []
    try:
        for n in sorted(args.sizes):
            root = work / f"n{n}"
            t0 = time.perf_counter()
            raw_bytes = synthesize(real, root, n)
            print(f"N={n}: {raw_bytes / 1e9:.2f} GB of records written in {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr)
            build = _child(args, "build", root)
            mapped, ram = [], []
            for _ in range(args.rounds):  # alternated, so both see the same machine state
                mapped.append(_child(args, "train", root))
                ram.append(_child(args, "train", root, "--ram"))
            workers = _child(args, "train", root, "--workers", "2")
            row = {"n": n, "raw_gb": raw_bytes / 1e9, "cache_gb": _du(root / "cache"), "build": build,
                   "map": statistics.median(m["samples_per_s"] for m in mapped),
                   "ram": statistics.median(m["samples_per_s"] for m in ram),
                   "map_rss": max(m["rss_main"] for m in mapped), "ram_rss": max(m["rss_main"] for m in ram),
                   "j2": workers["samples_per_s"], "j2_rss": max(workers["rss_main"], workers["rss_worker"]),
                   "samples": mapped[0]["samples"]}
            if n == min(args.sizes) and not args.no_ddp:
                row["one"], row["ddp"] = _commander_epoch(root, args, False), _commander_epoch(root, args, True)
            rows.append(row)
            print(f"N={n}: {json.dumps(row)}", file=sys.stderr)
            if not args.keep:
                shutil.rmtree(root)
    finally:
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(table(rows, args))
    return 0


def table(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [f"Synthetic Challenge databases (500 Hz, 12 leads, length mix of the 2020 training data); training: "
             f"cnn1d_3, {args.seq_len:g}-s crops, batch {args.batch_size}, one epoch; {os.cpu_count()} CPUs.", "",
             "| N | records GB | cache GB | build s | build records/s | build MB/s | build peak RSS MB (main / worker) "
             "| train samples | map samples/s | RAM samples/s | map / RAM | map peak RSS MB | RAM peak RSS MB "
             "| map -j 2 samples/s | -j 2 peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b = r["build"]
        lines.append(f"| {r['n']:,} | {r['raw_gb']:.2f} | {r['cache_gb']:.2f} | {b['seconds']:.1f} | "
                     f"{b['records'] / b['seconds']:.0f} | {b['mb'] / b['seconds']:.0f} | {b['rss_main']:.0f} / "
                     f"{b['rss_worker']:.0f} | {r['samples']:,} | {r['map']:.0f} | {r['ram']:.0f} | "
                     f"{r['map'] / r['ram']:.3f} | {r['map_rss']:.0f} | {r['ram_rss']:.0f} | {r['j2']:.0f} | "
                     f"{r['j2_rss']:.0f} |")
    first, last = rows[0], rows[-1]
    if len(rows) > 1:
        def grow(a: float, b: float) -> str:
            return f"x{b / a:.2f}" if a else "-"

        rate = [r["build"]["records"] / r["build"]["seconds"] for r in (first, last)]
        lines += ["", f"From N={first['n']:,} to N={last['n']:,} (x{last['n'] / first['n']:g} records): build peak RSS "
                      f"{grow(first['build']['rss_main'], last['build']['rss_main'])} (worker "
                      f"{grow(first['build']['rss_worker'], last['build']['rss_worker'])}), training peak RSS on the "
                      f"map {grow(first['map_rss'], last['map_rss'])} (-j 2 {grow(first['j2_rss'], last['j2_rss'])}), "
                      f"in RAM {grow(first['ram_rss'], last['ram_rss'])}; build records/s {grow(*rate)}, map "
                      f"samples/s {grow(first['map'], last['map'])}; cache size "
                      f"{grow(first['cache_gb'], last['cache_gb'])}."]
    if "ddp" in first:
        lines += ["", f"commander.py, one epoch at N={first['n']:,}: {first['one']:.1f} s alone, {first['ddp']:.1f} s "
                      f"under torchrun --nproc_per_node 2 (gloo): x{first['ddp'] / first['one']:.2f}."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
