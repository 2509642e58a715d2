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
    """Write ``checkpoint.pth.tar``, then ``model_best.pth.tar`` when best, then every 5th epoch's copy.

    ``checkpoint.pth.tar`` comes first because it marks the epoch as complete: a run killed before it is
    resumed from the previous epoch, and no other file ever holds an epoch that is not complete. A run killed
    after it may lack this epoch's best or epoch copy; :func:`repair` writes them from it.
    """
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


def _left_out(run_dir: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """The last checkpoint's state and the copies of its epoch (best, every 5th) that a kill left out."""
    last = run_dir / LAST
    if not last.is_file():
        return None, []
    try:
        state = load(last)
    except ECGError:  # a damaged last checkpoint is reported where it is read
        return None, []
    wanted = ([BEST] if state.get("best_epoch") == state["epoch"] else []) + (
        [epoch_name(state["epoch"])] if state["epoch"] % KEEP_EVERY == 0 else [])
    return state, [n for n in wanted if not (run_dir / n).is_file() or _epoch_of(run_dir / n) != state["epoch"]]


def repair(run_dir: Path) -> None:
    """Write the copies of the last epoch (best, every 5th) that a kill between :func:`save`'s writes left out."""
    state, names = _left_out(run_dir)
    for name in names:
        try:
            atomic_write(run_dir / name, lambda tmp: torch.save(state, tmp))
        except OSError as exc:
            raise ECGError(f"cannot write checkpoint {run_dir / name} ({exc.strerror}); free space or make "
                           f"{run_dir} writable, then resume again") from None


def _epoch_of(path: Path) -> int | None:
    try:
        return torch.load(path, map_location="cpu", weights_only=True).get("epoch")
    except Exception:  # a damaged copy is rewritten
        return None


def resolve(run_dir: Path, which: str) -> Path:
    """Path of checkpoint ``which`` (``best``, ``latest`` or an epoch number) in ``run_dir``; must exist.

    Where a kill left out the best or epoch copy of the last epoch, that epoch is read from
    ``checkpoint.pth.tar``, so a stale ``model_best.pth.tar`` is never used.
    """
    name = {"best": BEST, "latest": LAST}.get(which) or epoch_name(int(which))
    if name != LAST and name in _left_out(run_dir)[1]:
        return run_dir / LAST
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
        raise ECGError(f"{path} is not a readable checkpoint ({_first_line(exc)})") from None
    if not isinstance(state, dict) or "model" not in state or not isinstance(state.get("epoch"), int):
        raise ECGError(f"{path} is not a pytorch-ecg checkpoint (no model state or epoch)")
    return state


def check_compatible(state: dict[str, Any], path: Path, **want: Any) -> None:
    """Refuse a checkpoint of another architecture, lead count, class count or feature count (``want``:
    the constructor arguments this run needs; a checkpoint without ``feature_channels`` has none)."""
    for key, value in want.items():
        have = _held(state, key)
        if have != value:
            raise ECGError(f"{path} holds {key}={have!r} but this run needs {key}={value!r}")


def compatible(state: dict[str, Any], **want: Any) -> bool:
    """Whether :func:`check_compatible` would accept the checkpoint."""
    return all(_held(state, key) == value for key, value in want.items())


def _held(state: dict[str, Any], key: str) -> Any:
    """A constructor argument of the checkpoint (``feature_channels`` 0 where an older one lacks it)."""
    return state.get(key, 0 if key == "feature_channels" else None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def load_weights(state: dict[str, Any], path: Path, model: torch.nn.Module) -> None:
    """Copy the checkpoint's weights into ``model``; tensors that do not fit are an ECGError naming the file."""
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
        raise ECGError(f"{path}: its weights do not fit this model ({_first_line(exc)})") from None


def check_world(state: dict[str, Any], path: Path, world: int, allow_change: bool) -> None:
    """A run resumes with the number of processes it was trained with (so its draws continue exactly), unless
    ``allow_change``."""
    trained = int(state.get("world_size", 1))
    if trained != world and not allow_change:
        launch = "python commander.py" if trained == 1 else f"torchrun --nproc_per_node {trained} commander.py"
        raise ECGError(f"{path} was trained by {trained} process{'es' if trained > 1 else ''}, this is {world}; "
                       f"resume with {launch} (or pass --allow-world-size-change: the order of examples then "
                       f"differs from an uninterrupted run)")


def restore_training(state: dict[str, Any], path: Path, optimizer: torch.optim.Optimizer, scheduler: Any,
                     generator: torch.Generator, rank: int = 0) -> None:
    """Restore optimizer, scheduler and random-number states from a full checkpoint; process ``rank`` takes its
    own random states (``rng_ranks``, saved by runs of several processes; ranks beyond them wrap around)."""
    try:
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        ranks = state.get("rng_ranks") or [state["rng"]]
        set_rng_state(ranks[rank % len(ranks)], generator)
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ECGError(f"{path} holds no complete training state ({_first_line(exc)}); resume from another "
                       f"checkpoint (--resume best|N) or load its weights with --pretrained") from None


def restore_optimizers(state: dict[str, Any], path: Path, optimizers: dict[str, torch.optim.Optimizer],
                       generator: torch.Generator) -> None:
    """Restore a generative run's optimisers (one per part) and random states from a full checkpoint."""
    try:
        saved = state["optimizers"]
        if set(saved) != set(optimizers):
            raise KeyError(f"optimisers {sorted(saved)}, not {sorted(optimizers)}")
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(saved[name])
        set_rng_state(state["rng"], generator)
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ECGError(f"{path} holds no complete training state of a generative run ({_first_line(exc)}); resume "
                       f"from another checkpoint (--resume best|N)") from None
