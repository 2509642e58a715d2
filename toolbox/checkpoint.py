"""Checkpoints: plain dicts of tensors and built-in types, written atomically, read with weights_only=True."""
from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toolbox.utils import ECGError, atomic_write

LAST = "checkpoint.pth.tar"
BEST = "model_best.pth.tar"
KEEP_EVERY = 5


def epoch_name(epoch: int) -> str:
    return f"checkpoint_epoch{epoch}.pth.tar"


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Python, NumPy, torch (CPU, CUDA) and DataLoader generator states as tensors and built-ins."""
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(), "generator": generator.get_state(),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    """Restore what :func:`rng_state` saved."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(state: dict[str, Any], run_dir: Path, *, is_best: bool) -> None:
    """Write ``checkpoint.pth.tar``; also ``model_best.pth.tar`` when best and every 5th epoch's copy."""
    def write(name: str) -> None:
        try:
            atomic_write(run_dir / name, lambda tmp: torch.save(state, tmp))
        except OSError as exc:
            raise ECGError(f"cannot write checkpoint {run_dir / name} ({exc.strerror}); the previous one is "
                           f"intact; free space and resume with --resume latest") from None

    write(LAST)
    if is_best:
        write(BEST)
    if state["epoch"] % KEEP_EVERY == 0:
        write(epoch_name(state["epoch"]))


def resolve(run_dir: Path, which: str) -> Path:
    """Path of checkpoint ``which`` (``best``, ``latest`` or an epoch number) in ``run_dir``; must exist."""
    name = {"best": BEST, "latest": LAST}.get(which) or epoch_name(int(which))
    path = run_dir / name
    if not path.is_file():
        kept = sorted(p.name for p in run_dir.glob("*.pth.tar"))
        raise ECGError(f"no checkpoint {path}; this run holds: {', '.join(kept) or 'none'}")
    return path


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint safely (no code runs); a file that is not one is an ECGError naming it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ECGError(f"{path} is not a readable checkpoint ({first[:160]})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ECGError(f"{path} is not a pytorch-ecg checkpoint (no model state)")
    return state


def check_compatible(state: dict[str, Any], path: Path, *, model_name: str, in_channels: int,
                     num_classes: int) -> None:
    """Refuse a checkpoint of another architecture, lead count or class count."""
    want = {"model_name": model_name, "in_channels": in_channels, "num_classes": num_classes}
    for key, value in want.items():
        if state.get(key) != value:
            raise ECGError(f"{path} holds {key}={state.get(key)!r} but this run needs {key}={value!r}")
