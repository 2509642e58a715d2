"""ECG datasets over arrays (in memory or memory-mapped) and the DataLoader that feeds them in whole batches."""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.signal import resample_poly
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

from loaders.mapped import RecordStore
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


def resample(signal: np.ndarray, fs: float, target: float, axis: int = -1, padtype: str = "constant") -> np.ndarray:
    """Polyphase resampling along ``axis`` from ``fs`` to ``target`` Hz; a rate that is not a whole number is
    taken as the nearest fraction with a denominator up to 1000. Unchanged when the rates are equal. ``padtype``
    is scipy's: how the signal is extended past its ends ("line" keeps an offset from ramping in)."""
    if fs == target:
        return signal
    up, down = _ratio(fs, target)
    return resample_poly(signal, up, down, axis=axis, padtype=padtype)


def resampled_index(index: np.ndarray, fs: float, target: float) -> np.ndarray:
    """Sample indices at ``target`` Hz of the samples ``index`` at ``fs`` Hz (the inverse of :func:`resample`'s
    time axis), rounded."""
    up, down = _ratio(fs, target)
    return np.round(np.asarray(index) * (up / down)).astype(np.int64)


def _ratio(fs: float, target: float) -> tuple[int, int]:
    ratio = Fraction(target).limit_denominator(1000) / Fraction(fs).limit_denominator(1000)
    return ratio.numerator, ratio.denominator


def resampled_length(n: int, fs: float, target: float) -> int:
    """How many samples :func:`resample` makes of ``n`` (known before reading a signal)."""
    if fs == target:
        return n
    up, down = _ratio(fs, target)
    return -(-n * up // down)


def cache_key(*parts: Any) -> str:
    """A short digest of everything a cache file depends on (parameters, file names, sizes, times)."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]


def fingerprint(paths: Iterable[Path]) -> str:
    """A short digest of the files' names, sizes and modification times: it changes when any of them is
    replaced or edited (symbolic links are followed, so links to the same files give the same digest)."""
    stamps = []
    for path in paths:
        st = Path(path).stat()
        stamps.append((Path(path).name, st.st_size, st.st_mtime_ns))
    return cache_key(sorted(stamps))


def cached_arrays(cache_dir: Path, name: str, inputs: str, build: Callable[[], dict[str, np.ndarray]], *,
                  what: str = "its input files") -> dict[str, np.ndarray]:
    """Arrays from ``cache_dir/<name>_<inputs>.npz``; else ``build()`` them and write that cache atomically.

    ``name`` covers the processing parameters and ``inputs`` the fingerprint of every input file and table
    (:func:`fingerprint`), so changed data builds a new cache, and a warning says so when a cache of the
    same parameters exists for other inputs. A damaged cache is rebuilt, not trusted; a cache that cannot be
    written is an ECGError.
    """
    cache = cache_dir / f"{name}_{inputs}.npz"
    if cache.is_file():
        try:
            with np.load(cache) as z:
                return {k: z[k] for k in z.files}
        except Exception as exc:  # numpy raises many types for a damaged file
            log.warning("ignoring unreadable cache %s (%s)", cache, exc)
    elif cache_dir.is_dir():
        stale = sorted(p.name for p in cache_dir.glob(f"{name}_*.npz"))
        if stale:
            log.warning("%s changed since the cache %s was made; building a new cache", what, stale[-1])
    arrays = build()
    try:
        atomic_write(cache, lambda tmp: np.savez(open(tmp, "wb"), **arrays))
    except OSError as exc:
        raise ECGError(f"cannot write the cache {cache} ({exc.strerror}); choose a writable --root-dir") from None
    return arrays


def _keep_batch(batch: Any) -> Any:
    """Collate for ``__getitems__``: the dataset already returns stacked tensors."""
    return batch


class SeededBatch(list):
    """The indices of one training batch and the seed of its random draws (crops).

    Under several processes each takes a share of one global batch: ``positions`` are the places of its
    indices in that batch of ``size`` examples, so each example draws what it would draw in one process.
    """

    def __init__(self, indices: Iterable[int], seed: int, positions: Sequence[int] | None = None,
                 size: int | None = None) -> None:
        super().__init__(indices)
        self.seed = seed
        self.positions = list(range(len(self))) if positions is None else list(positions)
        self.size = len(self) if size is None else size


class SeededBatches(Sampler[list[int]]):
    """Batches of ``sampler``, each carrying a seed drawn in the main process from ``generator``.

    Per epoch, one draw from ``generator`` (whose state checkpoints save) gives the seeds of every batch,
    and the whole order is drawn before the first batch; so the order and random crops do not depend on
    the number of DataLoader workers (which read ahead), nor on how many batches of an epoch are used, and
    a resumed run draws what an uninterrupted one draws.

    With ``world`` > 1 processes (DDP), every process draws the same order, padded with its first examples to
    a multiple of ``world`` (as torch's DistributedSampler pads), and takes every ``world``-th example of each
    global batch of ``batch_size`` from place ``rank``: the processes see disjoint shares of the same
    batches, equal in number and size, so their gradient steps stay in step. A last batch that would give each
    process a single example is left out (batch norm cannot train on one example; the next epoch's order differs).
    """

    def __init__(self, sampler: Sampler[int], batch_size: int, generator: torch.Generator, rank: int = 0,
                 world: int = 1) -> None:
        if batch_size % world:
            raise ECGError(f"--batch-size {batch_size} does not divide among {world} processes; use a multiple of "
                           f"{world} (it is the batch of all processes together)")
        self.sampler, self.batch_size, self.generator = sampler, batch_size, generator
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return self._batches(len(self.sampler))

    def _padded(self, n: int) -> int:
        return -(-n // self.world) * self.world

    def _batches(self, n: int) -> int:
        """How many batches an epoch of ``n`` examples gives (without a last one of one example per process)."""
        full, rest = divmod(self._padded(n), self.batch_size)
        return full + (1 if rest and (rest > self.world or not full) else 0)

    def __iter__(self) -> Iterator[SeededBatch]:
        seed = int(torch.randint(0, 2**62, (), generator=self.generator))
        order = list(self.sampler)  # drawn whole now: the generator's state never depends on how far it is read
        batches = self._batches(len(order))
        order += order[: self._padded(len(order)) - len(order)]
        for number, start in enumerate(range(0, batches * self.batch_size, self.batch_size)):
            batch = order[start:start + self.batch_size]
            if self.world == 1:
                yield SeededBatch(batch, seed + number)
            else:
                places = range(self.rank, len(batch), self.world)
                yield SeededBatch([batch[i] for i in places], seed + number, places, len(batch))


class EvaluationShards(Sampler[list[int]]):
    """Evaluation batches in order; with ``world`` processes, process ``rank`` takes batches rank, rank + world,
    ... (:func:`trainer.gather_batches` puts them back in order, so every example is scored exactly once)."""

    def __init__(self, n: int, batch_size: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.batch_size, self.rank, self.world = n, batch_size, rank, world

    def _numbers(self) -> range:
        return range(self.rank, -(-self.n // self.batch_size), self.world)

    def __len__(self) -> int:
        return len(self._numbers())

    def __iter__(self) -> Iterator[list[int]]:
        for b in self._numbers():
            yield list(range(b * self.batch_size, min((b + 1) * self.batch_size, self.n)))


def make_dataloader(dataset: ECGDataset | RecordDataset, batch_size: int, *, shuffle: bool = False,
                    sampler: Sampler | None = None, workers: int = 0, generator: torch.Generator | None = None,
                    pin_memory: bool = False, rank: int = 0, world: int = 1) -> DataLoader:
    """A DataLoader that fetches whole batches from a dataset of arrays (in memory or memory-mapped).

    Training (``shuffle`` or a ``sampler``) needs ``generator``: it orders the examples and seeds each
    batch's random draws (:class:`SeededBatches`). Workers start anew each epoch and draw nothing
    themselves, so results are the same for any ``workers``. Under DDP (``world`` > 1) each process reads its
    share of every batch (training) or every ``world``-th batch (evaluation, :class:`EvaluationShards`).
    """
    if shuffle or sampler is not None:
        if generator is None:
            raise ValueError("a shuffled or sampled DataLoader needs a generator")
        order = sampler if sampler is not None else RandomSampler(dataset, generator=generator)
        batches: Sampler = SeededBatches(order, batch_size, generator, rank, world)
    else:
        batches = EvaluationShards(len(dataset), batch_size, rank, world)
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=_keep_batch,
                      generator=generator, pin_memory=pin_memory)


@dataclass
class DataSplits:
    """What a loader hands to the commander: the three datasets and the manifest for splits.json.

    Multi-label datasets also say how windows were made (``preprocess``, kept in checkpoints so a model can
    be applied to new records), which validation score picks the best epoch (``selection``), and, for the
    PhysioNet/CinC Challenge, the reward matrix in class order and the index of the normal class.
    Beats may carry per-example features as constant channels after the signal (``feature_channels``).
    ``resample_records``: the test split's records are the unit of its bootstrap intervals (patients are
    disjoint across splits); otherwise examples are (multi-label rows are records already).
    """

    train: ECGDataset | RecordDataset
    val: ECGDataset | RecordDataset
    test: ECGDataset | RecordDataset
    manifest: dict[str, Any] = field(default_factory=dict)
    multilabel: bool = False
    selection: str = "macro_f1"
    preprocess: dict[str, Any] = field(default_factory=dict)
    challenge_weights: np.ndarray | None = None
    normal_index: int | None = None
    feature_channels: int = 0  # trailing input channels that hold per-example features, not signal
    resample_records: bool = False  # confidence intervals resample whole records (test.meta["record"])

    @property
    def signal_channels(self) -> int:
        return self.in_channels - self.feature_channels

    @property
    def classes(self) -> list[str]:
        return self.train.classes

    @property
    def in_channels(self) -> int:
        return self.train.in_channels

    def counts_table(self) -> str:
        """A small text table: examples (multi-label: records carrying each class) per class and split."""
        names = ["train", "val", "test"]
        width = max(6, *(len(c) for c in self.classes))
        lines = [f"{'class':<{width}} " + " ".join(f"{n:>8}" for n in names)]
        counts = [getattr(self, n).class_counts() for n in names]
        for k, c in enumerate(self.classes):
            lines.append(f"{c:<{width}} " + " ".join(f"{cnt[k]:>8}" for cnt in counts))
        sizes = [len(getattr(self, n).labels) for n in names]  # examples, or records when multi-label
        lines.append(f"{'records' if self.multilabel else 'total':<{width}} " + " ".join(f"{s:>8}" for s in sizes))
        return "\n".join(lines)


class RecordDataset(Dataset):
    """Multi-lead records of any length with multi-hot labels, cut into fixed windows on the fly.

    The records are rows ``rows`` of a :class:`loaders.mapped.RecordStore` (memory-mapped, or in memory); a
    window is read from the store when a batch asks for it, so no record is copied up front. ``leads`` picks
    the store's columns the model sees (default: all).
    ``random_crop``: one window per record per pass, at an offset drawn from the batch's seed
    (:class:`SeededBatch`; a plain list of indices draws from torch's global generator). Otherwise every
    record is cut into windows ``stride`` apart, the last one flush with the record's end; ``groups`` maps
    each window to its record, and ``aggregate`` (mean or max) says how its windows' scores make the record's.
    Records shorter than ``window`` are zero-padded at the end. ``standardize`` (mean, sd: one value, or one per
    model input lead) is subtracted and divided from the recorded samples, the padding staying zero.
    """

    def __init__(self, store: RecordStore, rows: Sequence[int], labels: np.ndarray, classes: Sequence[str],
                 window: int, *, random_crop: bool, stride: int | None = None, leads: Sequence[int] | None = None,
                 meta: dict[str, np.ndarray] | None = None, aggregate: str = "mean",
                 standardize: Standardizer | None = None) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) != len(labels) or labels.ndim != 2 or labels.shape[1] != len(classes):
            raise ValueError(f"expected one multi-hot row of {len(classes)} per record, got {labels.shape} "
                             f"for {len(rows)} records")
        self.store, self.rows = store, rows
        self.lead_index = None if leads is None else list(leads)
        self.lengths = store.lengths[rows]
        self.labels = torch.as_tensor(labels, dtype=torch.float32)  # multi-hot, per record
        self.classes = list(classes)
        self.window = window
        self.random_crop = random_crop
        self.meta = meta or {}
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {', '.join(AGGREGATES)}, not {aggregate}")
        self.aggregate = aggregate
        self.standardize = standardize
        if random_crop:
            self.groups = np.arange(len(rows))
            self.starts = np.zeros(len(rows), dtype=np.int64)
        else:
            stride = stride or window
            per = [_window_starts(int(n), window, stride) for n in self.lengths]
            self.groups = np.repeat(np.arange(len(rows)), [len(s) for s in per])
            self.starts = np.array([s for starts in per for s in starts], dtype=np.int64)

    @classmethod
    def from_signals(cls, signals: Sequence[np.ndarray], labels: np.ndarray, classes: Sequence[str], window: int, *,
                     random_crop: bool = False, stride: int | None = None,
                     meta: dict[str, np.ndarray] | None = None, aggregate: str = "mean",
                     standardize: Standardizer | None = None) -> RecordDataset:
        """A dataset of in-memory float32 ``signals`` (leads, samples) in mV: recordings to predict, tests."""
        leads = [str(i) for i in range(signals[0].shape[0])] if len(signals) else []
        store = RecordStore.from_signals(signals, [str(i) for i in range(len(signals))], 0.0, leads)
        return cls(store, np.arange(len(signals)), labels, classes, window, random_crop=random_crop, stride=stride,
                   meta=meta, aggregate=aggregate, standardize=standardize)

    @property
    def in_channels(self) -> int:
        return self.store.signal.shape[1] if self.lead_index is None else len(self.lead_index)

    def class_counts(self) -> np.ndarray:
        """Number of records carrying each class."""
        return self.labels.sum(dim=0).numpy().astype(np.int64)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([i])
        return x[0], y[0]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of windows; random crops draw all their offsets in one call (see :class:`SeededBatch`)."""
        records = self.groups[indices]
        if self.random_crop:
            room = np.maximum(self.lengths[records] - self.window + 1, 1)
            starts = (draws(indices) * torch.as_tensor(room)).long().numpy()
        else:
            starts = self.starts[indices]
        x = self.store.windows(self.rows[records], starts, self.window, self.lead_index)
        if self.standardize is not None:
            x = self.standardize.apply(x, self.lengths[records] - starts)
        return torch.from_numpy(x), self.labels[torch.as_tensor(records, dtype=torch.long)]


AGGREGATES = ("mean", "max")
STANDARDIZE_MOST = 2000  # records a standardisation is fitted on at most (evenly spaced over the training split)


@dataclass(frozen=True)
class Standardizer:
    """Subtract ``mean`` and divide by ``sd`` (one value for all leads, or one per lead) from windows."""

    how: str  # global | lead
    mean: tuple[float, ...]
    sd: tuple[float, ...]

    def apply(self, x: np.ndarray, recorded: np.ndarray) -> np.ndarray:
        """``x`` (windows, leads, samples) standardised where ``recorded[i]`` samples of window i hold signal."""
        mean = np.asarray(self.mean, dtype=np.float32).reshape(1, -1, 1)
        sd = np.asarray(self.sd, dtype=np.float32).reshape(1, -1, 1)
        inside = np.arange(x.shape[-1])[None, None, :] < np.asarray(recorded).reshape(-1, 1, 1)
        return np.where(inside, (x - mean) / sd, np.float32(0)).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"how": self.how, "mean": list(self.mean), "sd": list(self.sd)}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Standardizer | None:
        return None if not d else cls(d["how"], tuple(d["mean"]), tuple(d["sd"]))


def fit_standardizer(data: RecordDataset, how: str, most: int = STANDARDIZE_MOST) -> Standardizer:
    """The mean and sd of the recorded samples of ``data``'s records (at most ``most`` of them, evenly spaced),
    over all leads together (``global``) or per lead (``lead``), as the model sees them (its lead selection)."""
    if how not in ("global", "lead"):
        raise ValueError(f"standardize must be global or lead, not {how}")
    picked = np.unique(np.linspace(0, len(data.rows) - 1, min(most, len(data.rows))).round().astype(int))
    total, square, count = 0.0, 0.0, 0
    for r in data.rows[picked]:
        x = data.store.record(int(r)).astype(np.float64)
        if data.lead_index is not None:
            x = x[data.lead_index]
        axis = None if how == "global" else 1
        total, square = total + x.sum(axis=axis), square + (x * x).sum(axis=axis)
        count += x.shape[1] * (x.shape[0] if how == "global" else 1)
    mean = np.atleast_1d(total / count)
    sd = np.sqrt(np.maximum(np.atleast_1d(square / count) - mean ** 2, 0.0))
    return Standardizer(how, tuple(float(m) for m in mean), tuple(float(max(v, 1e-6)) for v in sd))


def check_standardization(saved: dict[str, Any], now: dict[str, Any], path: Path) -> None:
    """A resumed or tested run refits its standardisation on the same training records: it must be the one its
    checkpoint's ``preprocess`` holds (``saved``, which predict.py applies), else the records changed."""
    saved, now = saved.get("standardize"), now.get("standardize")
    if saved is None or now is None:
        return
    same = saved["how"] == now["how"] and all(
        np.allclose(saved[k], now[k], rtol=1e-5, atol=1e-7) for k in ("mean", "sd"))
    if not same:
        raise ECGError(f"the standardisation fitted on the training records now (mean {now['mean'][0]:.6g}, sd "
                       f"{now['sd'][0]:.6g}) is not the one {path.name} was trained with (mean {saved['mean'][0]:.6g}, "
                       f"sd {saved['sd'][0]:.6g}): the training records changed; restore them or start a new run "
                       f"with --version bump")


def with_record_options(data: DataSplits, aggregate: str = "mean", standardize: str | None = None) -> DataSplits:
    """``data`` whose record datasets aggregate windows by ``aggregate`` and, with ``standardize``, standardise
    by statistics of the training split only; both go into ``preprocess`` (and so into checkpoints)."""
    scaler = fit_standardizer(data.train, standardize) if standardize else None
    for part in (data.train, data.val, data.test):
        part.aggregate, part.standardize = aggregate, scaler
    extra = {"aggregate": aggregate, **({"standardize": scaler.to_dict()} if scaler else {})}
    return replace(data, preprocess={**data.preprocess, **extra})


def draws(batch: Sequence[int]) -> torch.Tensor:
    """One uniform draw in [0, 1) per example of ``batch``: from its seed when it is a :class:`SeededBatch`
    (the draw of each example depends on its place in the whole batch, not on how the batch is shared
    between processes), else from torch's global generator."""
    if isinstance(batch, SeededBatch):
        generator = torch.Generator().manual_seed(batch.seed)
        return torch.rand(batch.size, generator=generator, dtype=torch.float64)[batch.positions]
    return torch.rand(len(batch), dtype=torch.float64)


def _window_starts(n: int, window: int, stride: int) -> list[int]:
    """Starts of windows ``stride`` apart covering ``n`` samples, the last one ending at ``n``."""
    starts = list(range(0, n - window + 1, stride)) or [0]  # a record shorter than a window: one, padded
    if starts[-1] != max(n - window, 0):
        starts.append(n - window)
    return starts


def multilabel_holdout(labels: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Iterative stratification (Sechidis et al. 2011) of multi-hot ``labels``: sorted (kept, held out) row indices.

    Rarest labels are placed first, each of their records going to the side that still needs most of that
    label; records without labels fill the sides up to their sizes.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=bool)
    n = len(labels)
    need = np.stack([(1 - frac) * labels.sum(0), frac * labels.sum(0)]).astype(np.float64)  # [kept, held] x class
    size = np.array([(1 - frac) * n, frac * n])
    side = np.full(n, -1)
    left = rng.permutation(n)
    while True:
        free = left[side[left] < 0]
        counts = labels[free].sum(0)
        if not counts.any():
            break
        c = int(np.flatnonzero(counts == counts[counts > 0].min())[0])
        for r in free[labels[free, c]]:
            s = int(np.lexsort((rng.random(2), -size, -need[:, c]))[0])  # most need, then most room
            side[r] = s
            need[s] -= labels[r]
            size[s] -= 1
    for r in left[side[left] < 0]:
        s = int(np.argmax(size))
        side[r] = s
        size[s] -= 1
    return np.flatnonzero(side == 0), np.flatnonzero(side == 1)


class PooledDataset(Dataset):
    """The examples of several datasets of one shape in one index, for pretraining (labels are not pooled: every
    example's label is 0). A training batch keeps its seed (:class:`SeededBatch`), so random crops of the pooled
    record datasets draw what they would draw alone."""

    def __init__(self, parts: Sequence[ECGDataset | RecordDataset], names: Sequence[str]) -> None:
        shapes = {name: tuple(part[0][0].shape) for name, part in zip(names, parts, strict=True) if len(part)}
        if len(set(shapes.values())) > 1:
            raise ECGError("pooled datasets give examples of different shapes (" + ", ".join(
                f"{n}: {s[0]} leads x {s[1]} samples" for n, s in shapes.items()) + "); pool record datasets with "
                "the same --fs, --seq-len and leads")
        self.parts, self.names = list(parts), list(names)
        self.offsets = np.cumsum([0, *(len(p) for p in self.parts)])
        self.labels = torch.zeros(int(self.offsets[-1]), dtype=torch.long)
        self.classes = ["unlabelled"]
        self.meta: dict[str, np.ndarray] = {}

    @property
    def in_channels(self) -> int:
        return self.parts[0].in_channels

    @property
    def length(self) -> int:
        """Samples per example."""
        return int(next(p for p in self.parts if len(p))[0][0].shape[-1])

    def class_counts(self) -> np.ndarray:
        return np.array([len(self)])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([i])
        return x[0], y[0]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = np.asarray(indices, dtype=np.int64)
        part_of = np.searchsorted(self.offsets, index, side="right") - 1
        out: torch.Tensor | None = None
        for k in np.unique(part_of):
            where = np.flatnonzero(part_of == k)
            local = [int(index[j] - self.offsets[k]) for j in where]
            if isinstance(indices, SeededBatch):
                local = SeededBatch(local, indices.seed, [indices.positions[j] for j in where], indices.size)
            x, _ = self.parts[k].__getitems__(local)
            if out is None:
                out = x.new_empty((len(index), *x.shape[1:]))
            out[torch.as_tensor(where)] = x
        return out, torch.zeros(len(index), dtype=torch.long)


def label_subset(data: DataSplits, fraction: float, seed: int) -> DataSplits:
    """``data`` with a ``fraction`` of its training examples, drawn per class with ``seed`` (at least one of each
    class present; multi-label records grouped by their rarest label, records without one as a group); validation
    and test are unchanged. The manifest (splits.json) records the fraction, seed and counts."""
    train = data.train
    labels = train.labels.numpy()
    if labels.ndim == 2:  # multi-hot records: the rarest positive label (by training count), -1 for none
        counts = labels.sum(axis=0)
        rarity = np.where(labels > 0, counts[None, :], np.inf)
        groups = np.where(labels.any(axis=1), rarity.argmin(axis=1), -1)
    else:
        groups = labels
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([
        rng.permutation(members)[: max(1, round(fraction * len(members)))]
        for members in (np.flatnonzero(groups == g) for g in np.unique(groups))]))
    meta = {k: np.asarray(v)[keep] for k, v in train.meta.items()}
    if isinstance(train, RecordDataset):
        if not train.random_crop:
            raise ValueError("label_subset expects a training split of random crops (one window per record)")
        subset: ECGDataset | RecordDataset = RecordDataset(
            train.store, train.rows[keep], labels[keep], train.classes, train.window, random_crop=True,
            leads=train.lead_index, meta=meta, aggregate=train.aggregate, standardize=train.standardize)
    else:
        subset = ECGDataset(train.x[torch.as_tensor(keep)], labels[keep], train.classes, meta)
    note = {"fraction": fraction, "seed": seed, "examples": int(len(keep)), "of": int(len(labels)),
            "stratified_by": "rarest label" if labels.ndim == 2 else "class"}
    return replace(data, train=subset, manifest={**data.manifest, "label_fraction": note})


def split_records(manifest: dict[str, Any], part: str) -> list[str]:
    """The record ids of split ``part`` in a dataset's manifest (MIT-BIH lists them under "records")."""
    ids = manifest["records"][part] if isinstance(manifest.get("records"), dict) else manifest[part]
    return [str(r) for r in ids]
