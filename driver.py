"""Apply a trained cinc2020 or cinc2021 run to Challenge-format records and write Challenge output files.

    python driver.py INPUT_DIR OUTPUT_DIR --run RUN_DIR [--checkpoint best|latest|N]

Every ``X.hea`` + ``X.mat`` in INPUT_DIR becomes ``OUTPUT_DIR/X.csv``: ``#X``, the class codes, the binary
labels (the checkpoint's validation thresholds) and the probabilities, the format the PhysioNet/CinC
Challenge 2020 and 2021 scoring scripts read. The checkpoint carries the model, classes, thresholds and the
preprocessing (rate, window, stride, leads: a 2021 lead-subset model reads only its leads; the --preprocess
steps), so no other flag is needed.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from args import POSITIVE_INT, DefaultsHelpFormatter, OneLineParser, word_or_number


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="driver.py", description="Write Challenge 2020/2021 output files for a folder of records.",
                      formatter_class=DefaultsHelpFormatter)
    p.add_argument("input_dir", type=Path, help="folder of Challenge-format records (X.hea + X.mat)")
    p.add_argument("output_dir", type=Path, help="folder for the output files X.csv (must not hold them already)")
    p.add_argument("--run", required=True, type=Path,
                   help="run folder of a model trained with --dataset cinc2020 or cinc2021")
    p.add_argument("--checkpoint", default="best", type=word_or_number("resume"), metavar="{best,latest,N}",
                   help="which checkpoint of the run to apply")
    p.add_argument("--batch-size", default=64, type=POSITIVE_INT, help="windows per forward pass")
    p.add_argument("--disable-cuda", action="store_true", help="run on the CPU even when CUDA is available")
    return p


if __name__ == "__main__":  # --help and flag errors answer before the heavy imports below
    get_args_parser().parse_args()

import numpy as np

import trainer
from loaders.cinc2020 import LEADS, list_records, read_folder, write_outputs
from loaders.dataset import RecordDataset, Standardizer, make_dataloader
from loaders.preprocess import Preprocess
from models import from_checkpoint
from toolbox import checkpoint
from toolbox.utils import ECGError, ensure_writable, inference_main, setup_env

CHALLENGES = ("cinc2020", "cinc2021")  # the datasets whose runs answer in Challenge classes


def run(args: argparse.Namespace) -> int:
    path = checkpoint.resolve(args.run, args.checkpoint)
    state = checkpoint.load(path)
    prep, thresholds, classes = state.get("preprocess") or {}, state.get("thresholds"), state.get("classes")
    if not prep.get("fs") or not isinstance(thresholds, list) or not classes:
        raise ECGError(f"{path} is not a multi-label record model (no preprocessing or thresholds); train one with "
                       f"--dataset cinc2020")
    if state.get("args", {}).get("dataset") not in CHALLENGES:
        raise ECGError(f"{path} was trained on --dataset {state.get('args', {}).get('dataset')}; Challenge outputs "
                       f"need the Challenge classes (--dataset {' or '.join(CHALLENGES)})")
    names = list_records(args.input_dir)
    clash = [n for n in names if (args.output_dir / f"{n}.csv").exists()]
    if clash:
        raise ECGError(f"{args.output_dir} already holds {clash[0]}.csv (and {len(clash) - 1} more); choose an empty "
                       f"output folder")
    ensure_writable(args.output_dir, "OUTPUT_DIR")
    device = setup_env(0, args.disable_cuda)
    model = from_checkpoint(state)
    checkpoint.load_weights(state, path, model)
    model.to(device)
    signals, _ = read_folder(args.input_dir, names, prep["fs"], need_dx=False, leads=prep.get("leads", LEADS))
    steps = Preprocess.from_dict(prep)  # the run's --preprocess, as its cache applied it
    signals = [steps.recording(s, prep["fs"]) for s in signals]
    dataset = RecordDataset.from_signals(signals, np.zeros((len(names), len(classes)), dtype=np.float32), classes,
                                         prep["window"], stride=prep["stride"],
                                         aggregate=prep.get("aggregate", "mean"),
                                         standardize=Standardizer.from_dict(prep.get("standardize")))
    probs = trainer.predict(model, make_dataloader(dataset, args.batch_size), device,
                            amp=bool(state.get("args", {}).get("amp", True)))
    write_outputs(args.output_dir, names, classes, probs, thresholds)
    print(f"{len(names)} output files in {args.output_dir} ({path.name} of {args.run.name}, epoch {state['epoch']})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return inference_main("driver.py", get_args_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
