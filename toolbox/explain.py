"""Saliency over the input signal: which samples of which lead drove a class's logit.

Two methods, selected by name (``METHODS``; the flag parser lists them as ``args.EXPLAIN_METHODS``):

- ``ig``, integrated gradients (Sundararajan et al. 2017), for every model (recurrent ones too): the input minus a
  baseline (zeros: the isoelectric line, or the mean of standardised inputs) times the mean gradient of the class's
  logit along the straight path from the baseline to the input. Signed (positive: the sample raised the logit), per
  lead and sample, and complete: an example's attributions sum to logit(input) - logit(baseline), up to the error of
  the ``steps``-point midpoint rule.
- ``gradcam``, Grad-CAM (Selvaraju et al. 2017), for models whose ``head`` pools a (batch, channels, time) feature
  map (every convolutional model here): the ReLU of that map's channels weighted by their mean gradient, linearly
  upsampled to the input length. Non-negative and the same for every lead (the first convolution mixes the leads).

Both explain logits, in float32 with the model in eval mode, and leave no gradient in the model's parameters.
:func:`explain_test` (commander.py --test --explain), :func:`explain_beats` and :func:`explain_records`
(predict.py --explain) choose the examples; an :class:`Explainer` draws them (:func:`toolbox.plotter.saliency_png`)
and writes their index.
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.fusion import FeatureFusion
from toolbox.plotter import saliency_png
from toolbox.utils import ECGError, read_json, write_json

if TYPE_CHECKING:
    from loaders.dataset import DataSplits

IG_STEPS = 32
WINDOW_BATCH = 64  # windows per forward pass when a record's best window is looked for
# the lead a beat dataset's examples come from (MIT-BIH: MLII, lead 0 of records 102 and 104; Kaggle's PTB beats:
# lead II, Kachuee et al. 2018); record datasets name their leads in DataSplits.preprocess["leads"]
BEAT_LEADS = {"ecg": "MLII", "ecg_bin": "MLII", "ptb": "II"}
BEAT_FS = 125.0  # every beat dataset's rate (loaders.mitdb.BeatParams.fs, the Kaggle CSVs)
LEAD_DISPLAY = {"AVR": "aVR", "AVL": "aVL", "AVF": "aVF"}
SELECTION = ("round by round: the most confident remaining correct decision of each class (classes in order), then "
             "the most confident remaining wrong one (single-label: a wrong predicted class; multi-label: a predicted "
             "label the record lacks); ties by example order")


def _targets(target: int | Sequence[int] | torch.Tensor, n: int) -> list[int]:
    """One class index per example."""
    if isinstance(target, int | np.integer):
        return [int(target)] * n
    out = [int(t) for t in (target.tolist() if isinstance(target, torch.Tensor) else target)]
    if len(out) != n:
        raise ValueError(f"expected {n} targets, got {len(out)}")
    return out


@contextlib.contextmanager
def _scoring(model: nn.Module) -> Iterator[None]:
    """The model in eval mode without gradients; its previous mode comes back afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """The model in eval mode with gradients on, inside ``torch.inference_mode`` too (cuDNN off for recurrent
    layers, whose cuDNN backward needs training mode); its previous mode comes back afterwards. A model built under
    inference mode cannot be explained: its parameters are inference tensors, which autograd refuses."""
    was_training = model.training
    recurrent = any(isinstance(m, nn.RNNBase) for m in model.modules())
    if any(p.is_inference() for p in model.parameters()):
        raise ValueError("the model was built under torch.inference_mode; build it outside to explain it")
    cudnn_off = torch.backends.cudnn.flags(enabled=False) if recurrent else contextlib.nullcontext()
    model.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad(), cudnn_off:
            yield
    finally:
        model.train(was_training)


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: int | Sequence[int] | torch.Tensor,
                         steps: int = IG_STEPS, baseline: torch.Tensor | None = None,
                         batch_size: int = IG_STEPS) -> torch.Tensor:
    """Integrated-gradient attributions of the ``target`` logit (one class, or one per example), like ``x``
    (batch, leads, samples); ``baseline`` (default zeros) broadcasts to ``x``. The ``steps`` path points of an
    example go through the model ``batch_size`` at a time."""
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    targets = _targets(target, len(x))
    with _evaluating(model):
        x = x.detach().float().clone()  # (a clone is an ordinary tensor even when x is an inference tensor)
        base = torch.zeros_like(x) if baseline is None else baseline.detach().to(x).expand_as(x).clone()
        alphas = (torch.arange(steps, device=x.device, dtype=x.dtype) + 0.5) / steps  # midpoints of the path
        out = torch.empty_like(x)
        for i, t in enumerate(targets):
            delta = x[i] - base[i]
            total = torch.zeros_like(delta)
            for chunk in alphas.split(batch_size):
                path = (base[i] + chunk[:, None, None] * delta).requires_grad_(True)
                (grad,) = torch.autograd.grad(model(path)[:, t].sum(), path)
                total += grad.sum(dim=0)
            out[i] = delta * total / steps
    return out


def _head(model: nn.Module) -> nn.Module:
    net = model.backbone if isinstance(model, FeatureFusion) else model
    head = getattr(net, "head", None)
    if not isinstance(head, nn.Module):
        raise ECGError(f"Grad-CAM reads the feature map a model's head pools; {type(net).__name__} has no head: "
                       f"use --explain-method ig")
    return head


def grad_cam(model: nn.Module, x: torch.Tensor, target: int | Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Grad-CAM of the ``target`` logit, like ``x``: the same map on every signal lead, zero on per-example
    feature channels. An ECGError when the model's head does not take a (batch, channels, time) map."""
    classes = _targets(target, len(x))
    maps: list[torch.Tensor] = []
    handle = _head(model).register_forward_pre_hook(lambda _module, inputs: maps.append(inputs[0]))
    try:
        with _evaluating(model):
            x = x.detach().float().clone().requires_grad_(True)
            targets = torch.as_tensor(classes, device=x.device)
            logits = model(x)
            fmap = maps[0]
            if fmap.dim() != 3:
                raise ECGError(f"Grad-CAM needs a feature map over time before the head; {type(model).__name__}'s "
                               f"head takes {fmap.dim()}-D input (a recurrent model): use --explain-method ig")
            (grad,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), fmap)
            cam = torch.relu((grad.mean(dim=2, keepdim=True) * fmap).sum(dim=1, keepdim=True)).detach()
            cam = F.interpolate(cam, size=x.shape[-1], mode="linear", align_corners=False)
            out = torch.zeros_like(x, requires_grad=False)
            signal = x.shape[1] - (model.features if isinstance(model, FeatureFusion) else 0)
            out[:, :signal] = cam
    finally:
        handle.remove()
    return out


METHODS: dict[str, Callable[[nn.Module, torch.Tensor, Any], torch.Tensor]] = {
    "ig": integrated_gradients,
    "gradcam": grad_cam,
}
SIGNED = {"ig": True, "gradcam": False}
TITLES = {"ig": "integrated gradients", "gradcam": "Grad-CAM"}


def saliency(method: str, model: nn.Module, x: torch.Tensor, target: int | Sequence[int] | torch.Tensor
             ) -> torch.Tensor:
    """``METHODS[method]`` of ``model`` at ``x`` for ``target``: a tensor like ``x``."""
    if method not in METHODS:
        raise ECGError(f"unknown explanation method '{method}'; valid: {', '.join(METHODS)}")
    return METHODS[method](model, x, target)


def check_method(method: str, model: nn.Module, example: torch.Tensor) -> None:
    """Refuse, before any work, a method the model cannot give (Grad-CAM of a recurrent model): one forward
    and backward pass on ``example`` (leads, samples)."""
    saliency(method, model, example[None], 0)


# ---- which examples and classes ----

def select(probs: np.ndarray, n: int, *, targets: np.ndarray | None = None,
           thresholds: np.ndarray | Sequence[float] | None = None) -> list[tuple[int, int, str]]:
    """Up to ``n`` (example, class, kind) to explain, deterministically (``SELECTION``).

    A decision is an example's predicted class (single-label, ``thresholds`` None: the arg-max) or each class at or
    above its threshold (multi-label). With ``targets`` (class indices, or multi-hot rows), decisions are correct
    ("true positive") or wrong ("false positive", "error"); without, every decision is "predicted" and none wrong.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if thresholds is None:
        pred = probs.argmax(axis=1)
        decisions = [(i, int(c)) for i, c in enumerate(pred)]
    else:
        rows, cols = np.nonzero(probs >= np.asarray(thresholds, dtype=np.float64)[None, :])
        decisions = [(int(i), int(c)) for i, c in zip(rows, cols, strict=True)]

    def correct(i: int, c: int) -> bool:
        if targets is None:
            return True
        return bool(targets[i, c]) if thresholds is not None else int(targets[i]) == c

    by_confidence = sorted(decisions, key=lambda d: (-probs[d], d[0]))
    pools = [[d for d in by_confidence if d[1] == c and correct(*d)] for c in range(probs.shape[1])]
    wrong = [d for d in by_confidence if not correct(*d)]
    right_kind = "predicted" if targets is None else "true positive"
    wrong_kind = "false positive" if thresholds is not None else "error"
    chosen: list[tuple[int, int, str]] = []
    for r in range(max([len(p) for p in pools] + [len(wrong)], default=0)):  # round r: the r-th of each pool
        chosen += [(*p[r], right_kind) for p in pools if r < len(p)]
        chosen += [(*wrong[r], wrong_kind)] if r < len(wrong) else []
    return chosen[:n]


def top_labels(probs: np.ndarray, thresholds: Sequence[float], n: int) -> list[int]:
    """A record's labels to explain: its predicted labels by decreasing probability, at most ``n``; the most
    probable class when none reaches its threshold."""
    order = [int(c) for c in np.argsort(-np.asarray(probs), kind="stable")]
    positive = [c for c in order if probs[c] >= thresholds[c]]
    return (positive or order[:1])[:n]


# ---- drawing and the index ----

def safe_name(text: str) -> str:
    """``text`` usable in a file name (letters, digits, - and _)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", str(text)).strip("_") or "x"


def display_leads(leads: Sequence[str]) -> list[str]:
    """Lead names as clinicians write them (aVR, aVL, aVF)."""
    return [LEAD_DISPLAY.get(str(lead).upper(), str(lead)) for lead in leads]


def clear_previous(index: Path) -> None:
    """Remove the pictures an earlier index in the same folder lists (and the index), so none outlives it."""
    if not index.is_file():
        return
    try:
        files = [e["file"] for e in read_json(index).get("examples", [])]
    except (ECGError, AttributeError, KeyError, TypeError):
        files = []
    for name in files:
        if isinstance(name, str) and "/" not in name and "\\" not in name:
            (index.parent / name).unlink(missing_ok=True)
    index.unlink()


@dataclass
class Explainer:
    """Draws saliency PNGs of one model's examples into ``folder`` and keeps an entry per picture.

    ``leads``: names of the signal channels; ``features``: names of the per-example feature channels after them
    (their attribution sums go into the entries); ``names``: readable class names (default: ``classes``).
    """

    model: nn.Module
    method: str
    device: torch.device
    classes: list[str]
    leads: list[str]
    fs: float
    folder: Path
    names: list[str] | None = None
    features: list[str] = field(default_factory=list)
    units: str = ""  # what the traces are in, as the model sees them (preprocess: units, standardisation)
    entries: list[dict[str, Any]] = field(default_factory=list)

    def label(self, c: int) -> str:
        return str((self.names or self.classes)[c])

    def best_window(self, windows: torch.Tensor, c: int) -> int:
        """The window with the highest logit of class ``c`` (the one that drives its record score most)."""
        if len(windows) == 1:
            return 0
        with _scoring(self.model):
            logits = torch.cat([self.model(w.to(self.device).float())[:, c].cpu()
                                for w in windows.split(WINDOW_BATCH)])
        return int(logits.argmax())

    def explain(self, x: torch.Tensor, c: int, stem: str, title: str, leads: Sequence[str] | None = None,
                **details: Any) -> dict[str, Any]:
        """Explain class ``c`` at input ``x`` (leads, samples), write ``<stem>_<class>.png`` and return its entry
        (``details`` added to it); ``leads`` names this input's signal channels when they are not ``self.leads``."""
        leads = list(self.leads if leads is None else leads)
        x = x.to(self.device).float()
        s = saliency(self.method, self.model, x[None], c)[0]
        entry: dict[str, Any] = {"file": f"{stem}_{safe_name(self.label(c))}.png", **details,
                                 "class": self.classes[c], "class_name": self.label(c)}
        signal, sal = x.cpu().numpy(), s.cpu().numpy()
        if self.method == "ig":  # completeness: the sum approximates logit(x) - logit(zeros)
            with _scoring(self.model):
                pair = self.model(torch.stack([x, torch.zeros_like(x)]))[:, c].cpu().numpy()
            entry.update(logit=round(float(pair[0]), 6), attribution_sum=round(float(sal.sum()), 6),
                         logit_minus_baseline=round(float(pair[0] - pair[1]), 6))
        k = len(leads)
        if self.features and self.method == "ig":
            entry["feature_attributions"] = {name: round(float(v), 6)
                                             for name, v in zip(self.features, sal[k:].sum(axis=1), strict=True)}
        explained = f"explained: {self.label(c)}, {TITLES[self.method]}"
        if "feature_attributions" in entry:
            explained += (f"; per-beat features {sum(entry['feature_attributions'].values()):+.2f} of the logit's "
                          f"{entry['logit_minus_baseline']:+.2f} above the zero input (the signal: the rest)")
        saliency_png(signal[:k], sal[:k], display_leads(leads), self.folder / entry["file"], fs=self.fs,
                     start_s=float(details.get("window_start_s", 0.0)), title=f"{title}\n{explained}",
                     signed=SIGNED[self.method], label=f"attribution to {self.label(c)}"
                     if SIGNED[self.method] else f"Grad-CAM of {self.label(c)}", units=self.units)
        self.entries.append(entry)
        return entry

    def write_index(self, path: Path, **about: Any) -> None:
        """The index of every picture drawn: ``about`` (method, checkpoint, ...) and the entries."""
        write_json(path, {"method": self.method, "classes": self.classes, "leads": self.leads, **about,
                          "examples": self.entries})


def lead_names(dataset: str, data: DataSplits) -> tuple[list[str], float]:
    """The names of ``data``'s signal channels and their sampling rate: a record dataset's leads, or a beat
    dataset's lead (with ``--median-beat``, the record template of that lead as a second channel)."""
    if data.preprocess.get("leads"):
        return list(data.preprocess["leads"]), float(data.preprocess["fs"])
    lead = BEAT_LEADS.get(dataset, "ECG")
    extraction = data.manifest.get("extraction") or {}
    if extraction.get("leads", 1) == 2:  # --beat-format beatgan: both leads of the record, at its own rate
        return [lead, "second lead"][: data.signal_channels], float(extraction.get("fs", BEAT_FS))
    names = [lead, f"{lead} median beat"][: data.signal_channels]
    return names + [f"channel {i}" for i in range(len(names), data.signal_channels)], BEAT_FS


def _labels(row: np.ndarray, names: Sequence[str], multilabel: bool) -> str:
    if multilabel:
        return ", ".join(names[k] for k in np.flatnonzero(row)) or "none"
    return str(names[int(row)])


def trace_units(preprocess: dict[str, Any]) -> str:
    """What a record model's input is in: its cache's units, standardised when the run standardised."""
    units = str(preprocess.get("units") or "")
    scaler = preprocess.get("standardize")
    if units and scaler:
        return f"{units}, standardised (mean {scaler['mean'][0]:.3g}, sd {scaler['sd'][0]:.3g} fitted on training)"
    return units


def explain_test(folder: Path, tag: str, model: nn.Module, data: DataSplits, dataset: str, probs: np.ndarray,
                 targets: np.ndarray, device: torch.device, *, n: int, method: str, checkpoint: str,
                 thresholds: Sequence[float] | None = None) -> Path:
    """Saliency PNGs of up to ``n`` test examples (:func:`select`) as ``<tag>_example<i>_<record>_<class>.png`` in
    ``folder``, and their index ``<tag>_index.json``; returns the index's path. ``probs`` and ``targets`` are the
    test predictions in loader order (multi-label: per record, ``thresholds`` the validation ones); a record is
    shown by its window with the highest logit of the explained class."""
    test, multilabel = data.test, thresholds is not None
    leads, fs = lead_names(dataset, data)
    names = data.manifest.get("class_names") or data.classes
    explainer = Explainer(model, method, device, data.classes, leads, fs, folder, names=list(names),
                          features=list(data.manifest.get("rr_features") or [])[: data.feature_channels],
                          units=trace_units(data.preprocess))
    index = folder / f"{tag}_index.json"
    clear_previous(index)
    meta = test.meta
    for i, c, kind in select(probs, n, targets=targets, thresholds=thresholds):
        record = str(meta["record"][i]) if "record" in meta else f"row{meta['row'][i]}" if "row" in meta else str(i)
        details: dict[str, Any] = {"example": i, "record": record, "kind": kind,
                                   "probability": round(float(probs[i, c]), 6)}
        if multilabel:
            positions = np.flatnonzero(test.groups == i)
            windows = test.__getitems__(list(positions))[0]
            w = explainer.best_window(windows, c)
            x, start = windows[w], float(test.starts[positions[w]]) / fs
            details.update(window_start_s=round(start, 3), windows=len(positions))
            where = f", window at {start:g} s of {len(positions)}" if len(positions) > 1 else ""
            predicted = probs[i] >= np.asarray(thresholds)
        else:
            x = test[i][0]
            where = f", sample {int(meta['sample'][i])}" if "sample" in meta else ""
            predicted = int(probs[i].argmax())
            if "sample" in meta:
                details["sample"] = int(meta["sample"][i])
        details.update(true=_labels(targets[i], names, multilabel), predicted=_labels(predicted, names, multilabel))
        title = (f"{record} (test example {i}{where}): true {details['true']} | predicted {details['predicted']} | "
                 f"p({names[c]}) = {probs[i, c]:.2f}, {kind}")
        explainer.explain(x, c, f"{tag}_example{i}_{safe_name(record)}", title, **details)
    explainer.write_index(index, checkpoint=checkpoint, selection=SELECTION, requested=n)
    return index


PREDICT_SELECTION = {"beats": "per recording, round by round: its most confident remaining beat of each predicted "
                              "class (classes in order)",
                     "records": "per recording: its predicted labels by decreasing probability, at most N (its most "
                                "probable label when none is predicted), each in the window with the label's "
                                "highest score"}


def explain_beats(explainer: Explainer, name: str, x: np.ndarray, probs: np.ndarray, samples: np.ndarray, fs: float,
                  lead: str, n: int) -> None:
    """predict.py: up to ``n`` beats of recording ``name`` (``x``: the beats as the model sees them, ``samples``:
    their R peaks at ``fs``), as ``<name>_beat<k>_<class>.png``."""
    for k, c, _kind in select(probs, n):
        t = float(samples[k]) / fs
        title = (f"{name}: beat {k} at {t:.2f} s, lead {lead} | predicted {explainer.label(c)}, "
                 f"p = {probs[k, c]:.2f}")
        explainer.explain(torch.from_numpy(np.ascontiguousarray(x[k])), c, f"{name}_beat{k}", title,
                          leads=[lead, f"{lead} median beat"][: len(explainer.leads)], recording=name, beat=k,
                          sample=int(samples[k]), time_s=round(t, 3), lead=lead,
                          probability=round(float(probs[k, c]), 6))


def explain_records(explainer: Explainer, names: Sequence[str], data: Any, probs: np.ndarray,
                    thresholds: Sequence[float], n: int) -> None:
    """predict.py: each recording's labels of :func:`top_labels` (``data``: a RecordDataset of the recordings'
    windows, ``probs``: their record scores), as ``<name>_<class>.png``."""
    for i, name in enumerate(names):
        positions = np.flatnonzero(data.groups == i)
        windows = data.__getitems__(list(positions))[0]
        predicted = ", ".join(explainer.label(k) for k in np.flatnonzero(probs[i] >= np.asarray(thresholds))) or "none"
        for c in top_labels(probs[i], thresholds, n):
            w = explainer.best_window(windows, c)
            start = float(data.starts[positions[w]]) / explainer.fs
            where = f", window at {start:g} s of {len(positions)}" if len(positions) > 1 else ""
            title = f"{name}{where}: predicted {predicted} | p({explainer.label(c)}) = {probs[i, c]:.2f}"
            explainer.explain(windows[w], c, name, title, recording=name, window_start_s=round(start, 3),
                              windows=len(positions), probability=round(float(probs[i, c]), 6),
                              predicted=predicted)
