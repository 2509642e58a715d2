"""Apply a trained model (or the shipped one) to new recordings.

    python predict.py INPUT... --out OUT_DIR [--run RUN_DIR] [--checkpoint best] [--fs HZ] [--lead NAME]

INPUT: WFDB records (.hea, or the record's path without extension), EDF/EDF+ (.edf), CSV (.csv: a header row
naming the leads, one column per lead) or NumPy (.npy: (samples,) or (samples, leads)); folders and glob
patterns of them. CSV and .npy need --fs.

A beat model (a run of --dataset ecg or ecg_bin; by default the model shipped in models/shipped/) detects the
R peaks of one lead, cuts the beats with the training code and writes, per recording, <record>_beats.csv,
<record>.pred (WFDB annotations), <record>_summary.json and <record>_strip.png. With --reference EXT the beats
are scored against the recording's reference annotations <record>.EXT (EC57 style), printed and written to
OUT_DIR/ec57.json. A record model (--dataset cinc2020 or ptbxl) writes OUT_DIR/predictions.csv: per
recording, each class's probability and label at the checkpoint's validation thresholds. --explain N adds saliency
maps (toolbox.explain) in OUT_DIR/explain/ with their index.json.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from args import EXPLAIN_METHODS, POSITIVE_INT, DefaultsHelpFormatter, OneLineParser, number, word_or_number
from loaders import DETECTOR_NAMES

SHIPPED = Path(__file__).resolve().parent / "models" / "shipped" / "mitbih_inter_cnn1d_3.pth.tar"
BEAT_DATASETS = ("ecg", "ecg_bin")
RECORD_DATASETS = ("cinc2020", "cinc2021", "ptbxl")
ANNOTATION_EXT = "pred"
MIN_SECONDS = 2.0  # a recording shorter than this holds no beat with its neighbours


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="predict.py", formatter_class=DefaultsHelpFormatter,
                      description="Annotate recordings with a trained beat model (labelled beats, summary, strip "
                                  "plot; EC57 scores with --reference) or score them with a record model.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="recordings: WFDB (.hea or the record path), .edf, .csv, .npy; folders or glob patterns")
    p.add_argument("--out", required=True, type=Path, help="folder for the outputs")
    p.add_argument("--run", type=Path, default=None,
                   help="run folder of a trained model (default: the shipped MIT-BIH beat model, "
                        "models/shipped/MODEL_CARD.md)")
    p.add_argument("--checkpoint", default="best", type=word_or_number("resume"), metavar="{best,latest,N}",
                   help="which checkpoint of --run to apply")
    p.add_argument("--fs", type=number(float, low=0, low_open=True), default=None, metavar="HZ",
                   help="sampling rate of CSV and .npy inputs (WFDB and EDF store theirs)")
    p.add_argument("--lead", default=None, metavar="NAME",
                   help="lead to annotate, by name or index (default: the model's training lead, else MLII, II, "
                        "then the first lead; the choice is printed)")
    p.add_argument("--detector", default="wfdb-gqrs", choices=list(DETECTOR_NAMES),
                   help="R-peak detector; wfdb-gqrs runs on the lead resampled to 120 Hz (docs/benchmarks.md, "
                        "'R-peak detectors', compares them on MIT-BIH)")
    p.add_argument("--reference", default=None, metavar="EXT",
                   help="score the beats against reference annotations <record>.EXT (e.g. atr) and write ec57.json")
    p.add_argument("--explain", default=None, type=POSITIVE_INT, metavar="N",
                   help="draw saliency maps (PNG, leads labelled) into OUT_DIR/explain/: a record model, each "
                        "recording's N most probable predicted labels (its top label when none is predicted) in the "
                        "window scoring the label highest; a beat model, N beats per recording, round by round the "
                        "most confident beat of each predicted class")
    p.add_argument("--explain-method", default=None, choices=list(EXPLAIN_METHODS),
                   help="--explain: ig (integrated gradients, the default: signed, per lead and sample) or gradcam "
                        "(Grad-CAM: convolutional models, one map for all leads)")
    p.add_argument("--overwrite", action="store_true", help="replace outputs already in --out")
    p.add_argument("--batch-size", default=1024, type=POSITIVE_INT, help="beats or windows per forward pass")
    p.add_argument("--disable-cuda", action="store_true", help="run on the CPU even when CUDA is available")
    return p


if __name__ == "__main__":  # --help and flag errors answer before the heavy imports below
    get_args_parser().parse_args()

import numpy as np
import torch
from tqdm import tqdm

import trainer
from loaders import detect, mitdb, recording
from loaders.dataset import ECGDataset, RecordDataset, Standardizer, make_dataloader
from loaders.preprocess import Preprocess
from models import from_checkpoint
from toolbox import beat_report, checkpoint, ec57, explain
from toolbox.utils import ECGError, ensure_writable, inference_main, read_json, setup_env, write_json


def load_model(run: Path | None, which: str) -> tuple[dict, Path, str]:
    """The checkpoint state, its path and a name for reports: ``run``'s checkpoint ``which``, or the shipped model."""
    if run is None:
        if not SHIPPED.is_file():
            raise ECGError(f"the shipped model {SHIPPED} is missing; restore it (git checkout {SHIPPED.name}) "
                           f"or give --run RUN_DIR")
        path, name = SHIPPED, f"shipped:{SHIPPED.name.split('.')[0]}"
    else:
        if not run.is_dir():
            raise ECGError(f"--run {run}: no such run folder; give a folder under <root-dir>/<dataset>/runs/")
        path = checkpoint.resolve(run, which)
        name = f"{run.name}/{path.name}"
    state = checkpoint.load(path)
    dataset = (state.get("args") or {}).get("dataset")
    if dataset not in BEAT_DATASETS + RECORD_DATASETS:
        raise ECGError(f"{path} was trained on --dataset {dataset}; predict.py applies MIT-BIH beat models "
                       f"({', '.join(BEAT_DATASETS)}) and twelve-lead record models ({', '.join(RECORD_DATASETS)})")
    return state, path, name


def output_name(path: Path) -> str:
    """The record name of ``path``'s outputs: its stem, with characters WFDB does not allow in a record name
    (anything but letters, digits, - and _) replaced by _."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", path.stem)


def planned_outputs(names: list[str], beat_model: bool, reference: str | None) -> list[str]:
    """Every file this call writes in the output folder."""
    if not beat_model:
        return ["predictions.csv"]
    files = [f for n in names for f in beat_report.output_names(n, ANNOTATION_EXT)]
    return files + (["ec57.json"] if reference else [])


def check_outputs(out: Path, files: list[str], overwrite: bool) -> None:
    """Refuse to replace files already in ``out`` unless ``overwrite``."""
    clash = [f for f in files if (out / f).exists()]
    if clash and not overwrite:
        more = f" (and {len(clash) - 1} more)" if len(clash) > 1 else ""
        raise ECGError(f"{out} already holds {clash[0]}{more}; choose another --out or add --overwrite")
    ensure_writable(out, "--out")


def beat_leads(rec: recording.Recording, lead: int, leads: int) -> np.ndarray:
    """What beats are cut from: lead ``lead`` (samples,), or for a format of several ``leads`` (beatgan) that lead
    and the recording's next ones of the same rate and length, (samples, leads)."""
    if leads == 1:
        return rec.signals[lead]
    same = [i for i in range(len(rec.leads)) if i != lead and rec.fs[i] == rec.fs[lead]
            and len(rec.signals[i]) == len(rec.signals[lead]) and np.isfinite(rec.signals[i]).all()]
    if len(same) < leads - 1:
        raise ECGError(f"{rec.path}: the model's beats have {leads} leads, but beside {rec.leads[lead]} it holds "
                       f"{len(same)} complete lead(s) of the same rate; give a recording of {leads} leads")
    return np.stack([rec.signals[i] for i in [lead, *same[:leads - 1]]], axis=1)


def annotate(rec: recording.Recording, state: dict, model: torch.nn.Module, device: torch.device,
             args: argparse.Namespace) -> dict:
    """Detect, cut and classify the beats of one recording: samples (at the lead's rate), labels, probabilities."""
    flags = state.get("args") or {}
    beat_format = flags.get("beat_format") or "kaggle"
    lead, why = recording.choose_lead(rec, args.lead, mitdb.BEAT_FORMATS[beat_format].lead)
    signal, fs = rec.signals[lead], rec.fs[lead]
    if len(signal) < MIN_SECONDS * fs:
        raise ECGError(f"{rec.path}: {len(signal) / fs:.2f} s is too short to annotate; give at least "
                       f"{MIN_SECONDS:.0f} s")
    if not np.isfinite(signal).all():
        raise ECGError(f"{rec.path}: lead {rec.leads[lead]} holds missing (NaN) or infinite samples; fill or cut "
                       f"them out first")
    try:
        peaks = detect.align(signal, fs, detect.detect(signal, fs, args.detector), detect.ALIGN_BEFORE_S,
                             detect.ALIGN_AFTER_S, detect.ALIGN_SHIFT_S)
    except ECGError as exc:
        raise ECGError(f"{rec.path}: {exc}") from None
    if len(peaks) == 0:
        raise ECGError(f"{rec.path}: {args.detector} found no beats in lead {rec.leads[lead]}; check the lead "
                       f"(--lead) and --fs")
    steps = Preprocess.from_dict({"steps": flags.get("preprocess"), "bandpass": flags.get("bandpass")})
    x = mitdb.beats_at(beat_leads(rec, lead, mitdb.BEAT_FORMATS[beat_format].leads), fs, peaks,
                       beat_format=beat_format, median_beat=bool(flags.get("median_beat")),
                       rr_features=bool(flags.get("rr_features")), preprocess=steps)
    classes = state["classes"]
    data = ECGDataset(x, np.zeros(len(x), np.int64), classes)
    probs = trainer.predict(model, make_dataloader(data, args.batch_size), device, amp=bool(flags.get("amp")),
                            progress=False, multilabel=False)
    return {"samples": peaks, "labels": probs.argmax(axis=1), "probs": probs, "fs": fs, "lead": rec.leads[lead],
            "lead_choice": why, "signal": signal, "x": x}


def score_reference(rec: recording.Recording, result: dict, ext: str, classes: list[str]) -> dict:
    """EC57 counts of one recording's beats against its reference annotations ``<record>.ext``."""
    ref = recording.read_reference(rec.path, ext, result["fs"], len(result["signal"]))
    binary = classes == mitdb.BINARY_CLASSES
    ref_labels = np.array([mitdb.REFERENCE_MAP[s] for s in ref["symbols"]], dtype=np.int64)
    if binary:
        ref_labels = (ref_labels > 0).astype(np.int64)
    keep_ref = np.isin(ref["samples"], detect.outside(ref["samples"], ref["flutter"]))
    keep_det = np.isin(result["samples"], detect.outside(result["samples"], ref["flutter"]))
    return ec57.compare(ref["samples"][keep_ref], ref_labels[keep_ref], result["samples"][keep_det],
                        result["labels"][keep_det], result["fs"], len(classes))


def run_beats(args: argparse.Namespace, paths: list[Path], state: dict, model: torch.nn.Module, name: str,
              device: torch.device) -> int:
    classes = state["classes"]
    scored = ("N", "S", "V", "F") if classes == mitdb.AAMI_CLASSES else tuple(classes)
    flags = state.get("args") or {}
    counts, rows = {}, {}
    beat = mitdb.BEAT_FORMATS[flags.get("beat_format") or "kaggle"]
    channels = ["beat", "second lead"] if beat.leads == 2 else ["beat", "median beat"]
    shown = explainer(args, state, model, device, channels, beat.fs,
                      features=mitdb.RR_FEATURES if flags.get("rr_features") else [])
    for path in tqdm(paths, desc="annotate", unit="recording", disable=None if len(paths) > 1 else True):
        start = time.perf_counter()
        rec = recording.read_recording(path, args.fs)
        rec.name = output_name(path)
        result = annotate(rec, state, model, device, args)
        samples, labels, fs = result["samples"], result["labels"], result["fs"]
        beat_report.write_beats_csv(args.out / f"{rec.name}_beats.csv", samples, fs, labels, result["probs"],
                                    classes)
        beat_report.write_annotations(args.out, rec.name, ANNOTATION_EXT, samples, fs, labels, classes)
        summary = beat_report.summary(samples, fs, labels, classes, len(result["signal"]) / fs)
        summary.update(input=str(rec.path), lead=result["lead"], lead_choice=result["lead_choice"], fs=fs,
                       model={"name": name, "epoch": state["epoch"], "dataset": flags.get("dataset"),
                              "beat_format": flags.get("beat_format"), "median_beat": flags.get("median_beat"),
                              "rr_features": flags.get("rr_features"), "preprocess": flags.get("preprocess") or [],
                              "classes": classes},
                       detector={"name": args.detector, "lead": result["lead"], "fs": fs,
                                 "library": "wfdb" if args.detector.startswith("wfdb") else "neurokit2",
                                 "settings": "the library's defaults" + (f", run at {detect.gqrs_rate(fs):g} Hz"
                                                                         if args.detector == "wfdb-gqrs" else ""),
                                 "aligned_to_largest_abs_deviation_s": [-detect.ALIGN_BEFORE_S, detect.ALIGN_AFTER_S],
                                 "then_shifted_s": round(detect.ALIGN_SHIFT_S, 6)})
        beat_report.plot_strips(args.out / f"{rec.name}_strip.png", result["signal"], fs, result["lead"], samples,
                                labels, classes, f"{rec.name}: {name}, {args.detector}")
        seconds = time.perf_counter() - start
        summary["seconds"] = round(seconds, 2)  # reading, detection, classification and the files above
        write_json(args.out / f"{rec.name}_summary.json", summary)
        per_class = ", ".join(f"{n} {c}" for c, n in summary["beats_per_class"].items() if n)
        tqdm.write(f"{rec.name}: lead {result['lead']} ({result['lead_choice']}), {len(samples)} beats ({per_class}), "
                   f"{seconds:.1f} s")
        if shown is not None:
            explain.explain_beats(shown, rec.name, result["x"], result["probs"], samples, fs, result["lead"],
                                  args.explain)
        if args.reference:
            counts[rec.name] = score_reference(rec, result, args.reference, classes)
            rows[rec.name] = ec57.scores(counts[rec.name], classes, scored)
    print(f"{len(paths)} recording(s) annotated in {args.out} with {name} (epoch {state['epoch']}), "
          f"detector {args.detector}")
    finish_explaining(args, shown, name, "beats")
    if args.reference:
        rows["gross"] = ec57.scores(ec57.pool(list(counts.values())), classes, scored)
        write_json(args.out / "ec57.json", {
            "reference": args.reference, "match_window_s": ec57.MATCH_WINDOW_S, "model": name,
            "detector": args.detector, "classes": classes, "scores": rows,
            "counts": {k: {m: np.asarray(v).tolist() for m, v in c.items()} for k, c in counts.items()}})
        print(ec57.table(rows, scored))
    return 0


def run_records(args: argparse.Namespace, paths: list[Path], state: dict, model: torch.nn.Module, name: str,
                device: torch.device) -> int:
    prep, thresholds, classes = state.get("preprocess") or {}, state.get("thresholds"), state["classes"]
    if not prep.get("fs") or not isinstance(thresholds, list):
        raise ECGError(f"{name} holds no preprocessing or thresholds; train it again with this version")
    leads = prep.get("leads") or []
    steps = Preprocess.from_dict(prep)  # the run's --preprocess, as its cache applied it (after resampling)
    signals = []
    for path in tqdm(paths, desc="read", unit="recording", disable=None if len(paths) > 1 else True):
        rec = recording.read_recording(path, args.fs)
        signals.append(steps.recording(recording.twelve_leads(rec, leads, prep["fs"]), prep["fs"]))
    data = RecordDataset.from_signals(signals, np.zeros((len(paths), len(classes)), dtype=np.float32), classes,
                                      prep["window"], stride=prep["stride"],
                                      aggregate=prep.get("aggregate", "mean"),
                                      standardize=Standardizer.from_dict(prep.get("standardize")))
    probs = trainer.predict(model, make_dataloader(data, args.batch_size), device,
                            amp=bool((state.get("args") or {}).get("amp")))
    manifest = args.run / "splits.json" if args.run is not None else None
    names = read_json(manifest).get("class_names") if manifest is not None and manifest.is_file() else None
    recording.write_record_predictions(args.out / "predictions.csv", [p.stem for p in paths], classes, names, probs,
                                       thresholds)
    print(f"{len(paths)} recording(s) scored with {name} (epoch {state['epoch']}): {args.out / 'predictions.csv'}")
    shown = explainer(args, state, model, device, leads, prep["fs"], names=names)
    if shown is not None:
        explain.explain_records(shown, [output_name(p) for p in paths], data, probs, thresholds, args.explain)
    finish_explaining(args, shown, name, "records")
    return 0


def explainer(args: argparse.Namespace, state: dict, model: torch.nn.Module, device: torch.device,
              leads: list[str], fs: float, names: list[str] | None = None,
              features: list[str] | None = None) -> explain.Explainer | None:
    """With --explain, what draws the saliency maps into OUT_DIR/explain/ (``leads``: the model's signal
    channels, cut to their number); otherwise None."""
    if args.explain is None:
        return None
    signal = state["in_channels"] - state.get("feature_channels", 0)
    return explain.Explainer(model, args.explain_method or "ig", device, state["classes"], leads[:signal], fs,
                             args.out / "explain", names=names, features=features or [],
                             units=explain.trace_units(state.get("preprocess") or {}))


def finish_explaining(args: argparse.Namespace, shown: explain.Explainer | None, name: str, kind: str) -> None:
    """Write OUT_DIR/explain/index.json and say where the maps are."""
    if shown is None:
        return
    shown.write_index(args.out / "explain" / "index.json", model=name, selection=explain.PREDICT_SELECTION[kind],
                      requested=args.explain)
    print(f"{len(shown.entries)} saliency map(s) ({explain.TITLES[shown.method]}): {args.out / 'explain'}")


def run(args: argparse.Namespace) -> int:
    state, path, name = load_model(args.run, args.checkpoint)
    if (state.get("args") or {}).get("task", "classify") != "classify":
        raise ECGError(f"{path} is a generative run of --task {state['args']['task']}; predict.py applies classifiers "
                       f"(score new beats with commander.py --test on a dataset, see docs/anomaly.md)")
    beat_model = state["args"]["dataset"] in BEAT_DATASETS
    paths = recording.list_inputs(args.inputs, skip=("_beats.csv", "predictions.csv"))
    names = [output_name(p) for p in paths]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice and beat_model:
        raise ECGError(f"two inputs are both named {twice[0]}; their outputs would collide: annotate them in "
                       f"separate calls with different --out folders")
    if args.reference and not beat_model:
        raise ECGError("--reference scores beat annotations; it needs a beat model (--dataset ecg or ecg_bin)")
    for path in paths if args.reference else []:
        recording.reference_file(path, args.reference)
    if args.explain_method and args.explain is None:
        raise ECGError("--explain-method chooses how --explain N draws its maps; add --explain N")
    planned = planned_outputs(names, beat_model, args.reference) + (["explain/index.json"] if args.explain else [])
    check_outputs(args.out, planned, args.overwrite)
    device = setup_env(0, args.disable_cuda)
    with torch.inference_mode(not args.explain):  # saliency needs a model whose parameters autograd accepts
        model = from_checkpoint(state)
        checkpoint.load_weights(state, path, model)
        model.to(device)
    if args.explain:  # a method the model cannot give fails before any work; maps an earlier call drew go
        length = (state.get("preprocess") or {}).get("window") or mitdb.BeatParams().length
        explain.check_method(args.explain_method or "ig", model, torch.zeros(state["in_channels"], length,
                                                                               device=device))
        explain.clear_previous(args.out / "explain" / "index.json")
    go = run_beats if beat_model else run_records
    return go(args, paths, state, model, name, device)


def main(argv: Sequence[str] | None = None) -> int:
    return inference_main("predict.py", get_args_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
