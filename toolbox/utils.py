"""Small helpers shared by several rooms: the project's error type, atomic writes, environment setup."""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


class ECGError(Exception):
    """An error the user can cause and fix; commander.py prints it as one line and exits with 2."""


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_temporaries(folder: Path) -> None:
    """Delete what :func:`atomic_write` left behind when a process was killed mid-write."""
    for tmp in Path(folder).rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def ensure_writable(folder: Path, flag: str) -> None:
    """Create ``folder`` if needed and check that files can be written in it; an ECGError otherwise."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ECGError(f"{flag} {folder} cannot be written ({exc.strerror}); choose a writable folder") from None


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def read_json(path: Path) -> Any:
    """Parse a JSON file the project wrote; a damaged one is an ECGError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ECGError(f"{path} is damaged ({exc}); restore it or start a new run with --version bump") from None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup_env(seed: int, disable_cuda: bool, local_rank: int = 0) -> torch.device:
    """Seed every generator and pick the device (CUDA when present and not disabled; under torchrun the GPU of
    this process's ``local_rank``)."""
    import torch

    seed_everything(seed % 2**32)
    if not disable_cuda and torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        return torch.device("cuda", local_rank) if local_rank else torch.device("cuda")
    return torch.device("cpu")


def environment_info() -> dict[str, Any]:
    """Code version (git commit, and whether the tree had changes) and library versions, for config.json."""
    import platform
    import subprocess
    from importlib import metadata

    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    versions = {"python": platform.python_version()}
    for lib in ("torch", "numpy", "scipy", "scikit-learn", "pandas", "wfdb"):
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    return {"git_commit": commit, "git_dirty": dirty, "libraries": versions}


def inference_main(prog: str, parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int],
                   argv: Sequence[str] | None) -> int:
    """An inference entry point (driver.py, predict.py): parse the flags, ``run`` them without autograd, and turn
    a user error into one line on stderr and exit code 2."""
    import torch

    args = parser.parse_args(argv)
    try:
        with torch.inference_mode():
            return run(args)
    except ECGError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
