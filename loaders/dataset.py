"""In-memory ECG datasets and the DataLoader that feeds them in whole batches."""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset, Sampler

from toolbox.utils import ECGError, atomic_write

log = logging.getLogger(__name__)


class ECGDataset(Dataset):
    """Examples ``x`` of shape (n, leads, samples) with class indices ``labels``, held in memory.

    ``meta`` holds per-example arrays for reports (for MIT-BIH: record id and annotation sample).
    """

    def __init__(self, x: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                 meta: dict[str, np.ndarray] | None = None) -> None:
        if x.ndim != 3 or len(x) != len(labels):
            raise ValueError(f"expected x of shape (n, leads, samples) and n labels, got {x.shape}, {labels.shape}")
        self.x = torch.as_tensor(x, dtype=torch.float32)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.classes = list(classes)
        self.meta = meta or {}

    @property
    def in_channels(self) -> int:
        return int(self.x.shape[1])

    def class_counts(self) -> np.ndarray:
        """Number of examples of each class."""
        return np.bincount(self.labels.numpy(), minlength=len(self.classes))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.labels[i]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole-batch indexing: one tensor gather instead of a Python loop and a collate."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.x[idx], self.labels[idx]


def holdout(idx: np.ndarray, labels: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded: (kept, held out) sorted indices of ``idx``, about ``frac`` of them held out."""
    kept, held = train_test_split(idx, test_size=frac, stratify=labels, random_state=seed)
    return np.sort(kept), np.sort(held)


def cached_arrays(cache: Path, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Arrays from the ``.npz`` file ``cache``; else ``build()`` them and write the cache atomically.

    A damaged cache is rebuilt, not trusted; a cache that cannot be written is an ECGError.
    """
    if cache.is_file():
        try:
            with np.load(cache) as z:
                return {k: z[k] for k in z.files}
        except Exception as exc:  # numpy raises many types for a damaged file
            log.warning("ignoring unreadable cache %s (%s)", cache, exc)
    arrays = build()
    try:
        atomic_write(cache, lambda tmp: np.savez(open(tmp, "wb"), **arrays))
    except OSError as exc:
        raise ECGError(f"cannot write the cache {cache} ({exc.strerror}); choose a writable --root-dir") from None
    return arrays


def _keep_batch(batch: Any) -> Any:
    """Collate for ``__getitems__``: the dataset already returns stacked tensors."""
    return batch


def make_dataloader(dataset: ECGDataset, batch_size: int, *, shuffle: bool = False,
                    sampler: Sampler | None = None, workers: int = 0,
                    generator: torch.Generator | None = None, pin_memory: bool = False) -> DataLoader:
    """A DataLoader that fetches whole batches from an in-memory dataset."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=workers, collate_fn=_keep_batch, generator=generator,
                      pin_memory=pin_memory, persistent_workers=workers > 0)


@dataclass
class DataSplits:
    """What a loader hands to the commander: the three datasets and the manifest for splits.json."""

    train: ECGDataset
    val: ECGDataset
    test: ECGDataset
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return self.train.classes

    @property
    def in_channels(self) -> int:
        return self.train.in_channels

    def counts_table(self) -> str:
        """A small text table: examples per class and split."""
        names = ["train", "val", "test"]
        width = max(6, *(len(c) for c in self.classes))
        lines = [f"{'class':<{width}} " + " ".join(f"{n:>8}" for n in names)]
        counts = [getattr(self, n).class_counts() for n in names]
        for k, c in enumerate(self.classes):
            lines.append(f"{c:<{width}} " + " ".join(f"{cnt[k]:>8}" for cnt in counts))
        lines.append(f"{'total':<{width}} " + " ".join(f"{cnt.sum():>8}" for cnt in counts))
        return "\n".join(lines)
