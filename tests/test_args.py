"""Flag validation, run naming and versioning (bump, latest, N, concurrent claims) on a fresh root."""
from __future__ import annotations

import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

import args as args_module
from args import (
    claim_run,
    existing_versions,
    get_args_parser,
    given_flags,
    naming_flags,
    parse_args,
    reconcile,
    run_name,
    select_run,
)
from tests.conftest import REPO
from toolbox.utils import ECGError


def test_help_has_argument_groups_and_every_flag() -> None:
    text = get_args_parser().format_help()
    for group in ("data:", "model:", "run:", "optimisation:", "schedule:", "class imbalance:", "misc:"):
        assert group in text
    for flag in ("--dataset", "--test", "--verbose", "--root-dir", "--model-name", "--version", "--resume",
                 "--pretrained", "--num-classes", "--workers", "--start-epoch", "--step", "--batch-size",
                 "--epochs", "--optimizer", "--scheduler", "--lr", "--momentum", "--weight-decay", "--lr-decay",
                 "--criterion", "--class-balance", "--sampler", "--seed", "--short-run", "--disable-cuda",
                 "--tensorboard", "--rr-features", "--augment", "--label-smoothing", "--folds", "--fold",
                 "--override", "--bootstrap"):
        assert flag in text, flag


def test_the_parser_imports_nothing_heavy() -> None:
    """``--help`` answers at once because neither args.py nor the entry points import torch or scipy first."""
    code = ("import sys, args; "
            "print([m for m in ('torch', 'scipy', 'pandas', 'sklearn', 'wfdb') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    for script in ("commander.py", "driver.py", "predict.py"):
        proc = subprocess.run([sys.executable, "-X", "importtime", str(REPO / script), "--help"], cwd=REPO,
                              capture_output=True, text=True)
        assert proc.returncode == 0 and "usage:" in proc.stdout
        imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if "|" in line}
        heavy = {"torch", "scipy", "pandas", "sklearn", "wfdb", "numpy", "neurokit2", "edfio"}
        assert "json" in imported and not imported & heavy, script


def test_predict_flag_errors_are_one_line(tmp_path: Path, capsys) -> None:
    import predict

    for argv in (["x.csv", "--out", str(tmp_path), "--fs", "0"], ["x.csv"], ["x.csv", "--out", str(tmp_path),
                 "--detector", "nope"], ["x.csv", "--out", str(tmp_path), "--batch-size", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            predict.get_args_parser().parse_args(argv)
        assert exit_info.value.code == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and err[0].startswith("predict.py: error: "), err


def test_the_parser_offers_exactly_the_selectors_names() -> None:
    from loaders import BEAT_FORMAT_NAMES, mitdb
    from toolbox.augment import AUGMENTATIONS
    from toolbox.losses import BALANCE_POWERS, CRITERIA
    from toolbox.metrics import THRESHOLD_OBJECTIVES
    from toolbox.optimizers import OPTIMIZERS, SCHEDULERS

    assert args_module.OPTIMIZERS == tuple(OPTIMIZERS) and args_module.SCHEDULERS == tuple(SCHEDULERS)
    assert args_module.CRITERIA == tuple(CRITERIA) and args_module.BALANCE == tuple(BALANCE_POWERS)
    assert args_module.AUGMENTATIONS == tuple(AUGMENTATIONS)
    assert args_module.THRESHOLD_OBJECTIVES == tuple(THRESHOLD_OBJECTIVES)
    assert BEAT_FORMAT_NAMES == tuple(mitdb.BEAT_FORMATS)
    from tasks.pretrain import PRETEXTS

    assert args_module.PRETEXTS == tuple(PRETEXTS)


@pytest.mark.parametrize("argv,message", [
    (["--sampler", "equal", "--class-balance", "equal"], "use one of them"),
    (["--batch-size", "0"], "must be positive"),
    (["--epochs", "-1"], "must be positive"),
    (["--lr", "0"], "must be positive"),
    (["--lr", "nan"], "must be positive"),
    (["--weight-decay=-1e-4"], "must be 0 or more"),
    (["--optimizer", "sgd", "--momentum", "1.5"], "must be at least 0 and below 1"),
    (["--momentum", "0.5"], "--momentum applies to --optimizer sgd, not adamw"),
    (["--step", "3"], "--step applies to StepLR and ReduceLROnPlateau, not OneCycleLR"),
    (["--lr-decay", "0.5", "--scheduler", "CosineAnnealingLR"], "--lr-decay applies to StepLR, ExponentialLR"),
    (["--lr-decay", "2", "--scheduler", "StepLR"], "must be above 0 and at most 1"),
    (["--lr-decay", "1", "--scheduler", "ReduceLROnPlateau"], "must be below 1 for ReduceLROnPlateau"),
    (["--seed", "-1"], "must be an integer from 0 to 2**32 - 1"),
    (["--split-seed", "4294967296"], "must be an integer from 0 to 2**32 - 1"),
    (["--workers", "-2"], "must be 0 or more"),
    (["--start-epoch", "3"], "--start-epoch confirms where a resumed run continues (with --resume)"),
    (["--split", "inter", "--folds", "23", "--fold", "1"], "--folds 23: DS1 has 22 records"),
    (["--version", "newest"], "expected latest or bump or a positive integer"),
    (["--resume", "latest", "--version", "bump"], "--version bump makes a new run"),
    (["--model-name", "vgg"], "invalid choice"),
    (["--pretrained", "no/such/file.pth.tar"], "--pretrained no/such/file.pth.tar: no such file"),
    (["--dataset", "ptbxl", "--rr-features"], "--rr-features applies to the MIT-BIH beats"),
    (["--dataset", "ptbxl", "--data-url", "http://127.0.0.1/x"], "--data-url is for the databases that download"),
    (["--data-url", "ftp://mirror/mitdb"], "expected an http://, https:// or file:// URL"),
    (["--dataset", "cinc2020", "--fs", "10", "--seq-len", "1"], "windows of 10 samples; the models need at least 16"),
    (["--fs", "250"], "--fs applies to the record datasets"),
    (["--augment", "flip"], "invalid choice: 'flip'"),
    (["--label-smoothing", "1"], "must be at least 0 and below 1"),
    (["--label-smoothing", "0.1", "--criterion", "focal"], "--label-smoothing applies to --criterion crossentropy"),
    (["--dataset", "ptbxl", "--label-smoothing", "0.1"], "--label-smoothing applies to --criterion crossentropy"),
    (["--folds", "4"], "--folds K and --fold I go together"),
    (["--folds", "4", "--fold", "5"], "--fold 5 is not one of the 4 folds"),
    (["--split", "inter", "--folds", "4", "--fold", "5"], "--fold 5 is not one of the 4 folds"),
    (["--split", "inter", "--folds", "1", "--fold", "1"], "must be 2 or more"),
    (["--dataset", "cinc2020", "--folds", "2", "--fold", "1"], "--folds applies to the MIT-BIH beats"),
    (["--bootstrap", "100"], "--bootstrap sets the confidence intervals of --test"),
    (["--override", "lr=0.1"], "--override changes a run being continued"),
    (["--resume", "latest", "--override", "lr=0.1"], "OneCycleLR fixed its rates when the run started"),
    (["--resume", "latest", "--override", "gamma=0.1"], "expected NAME=VALUE with NAME one of lr, weight-decay"),
    (["--resume", "latest", "--override", "weight-decay=-1"], "--override weight-decay=-1: must be 0 or more"),
    (["--resume", "latest", "--override", "step=2"], "--override step does not apply to --scheduler OneCycleLR"),
])
def test_bad_flags_exit_2_with_one_line(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_given_flags_are_those_written_even_at_their_defaults() -> None:
    parser = get_args_parser()
    assert given_flags(parser, ["--lr", "0.003", "--model", "cnn1d_3", "--no-amp", "--rr-features", "-j", "2"]) == [
        "amp", "lr", "model_name", "rr_features", "workers"]  # --model abbreviates --model-name
    a = parse_args(["--resume", "latest", "--scheduler", "StepLR", "--override", "lr=1e-4", "weight-decay=0"])
    assert a.override == {"lr": 1e-4, "weight_decay": 0.0} and a.given == ["override", "resume", "scheduler"]
    # a run trained at another rate is found by its own --lr; the override is the new rate
    b = parse_args(["--resume", "latest", "--scheduler", "StepLR", "--lr", "0.01", "--override", "lr=1e-4"])
    assert b.lr == 0.01 and b.override == {"lr": 1e-4} and "_lr0.01_" in run_name(b)


def test_version_defaults_depend_on_the_action() -> None:
    assert parse_args([]).version == "bump"
    assert parse_args(["--resume", "latest"]).version == "latest"
    test = parse_args(["--test"])
    assert test.version == "latest" and test.resume == "best"


def test_run_name_holds_what_changes_training_but_not_epochs_or_seed() -> None:
    a = parse_args(["--model-name", "cnn1d_3", "--lr", "0.01", "--epochs", "3", "--seed", "4"])
    b = parse_args(["--model-name", "cnn1d_3", "--lr", "0.01", "--epochs", "30"])
    assert run_name(a) == run_name(b) == "cnn1d_3_intra_adamw_lr0.01_bs128_OneCycleLR_crossentropy"
    assert "sampler-equal" in run_name(parse_args(["--sampler", "equal"]))
    named = {
        ("--weight-decay", "0.1"): "_adamw_lr0.003_wd0.1_bs128",
        ("--optimizer", "sgd", "--momentum", "0.5"): "_sgd_lr0.003_mom0.5_bs128",
        ("--scheduler", "StepLR", "--step", "2", "--lr-decay", "0.5"): "_StepLR_step2_decay0.5_",
        ("--split-seed", "3"): "_intra_ss3_adamw",
        ("--split", "inter", "--folds", "4", "--fold", "2"): "_inter_cv2of4_adamw",
        ("--dataset", "cinc2020", "--threshold-metric", "f1"): "_500hz-10s_thr-f1",
        ("--pretrained", str(REPO / "README.md")): "_crossentropy_ft",
    }
    for flags, part in named.items():
        name = run_name(parse_args(list(flags)))
        assert part in name, (flags, name)
    assert "thr-" not in run_name(parse_args(["--dataset", "cinc2020"]))  # the dataset's default is not named


def test_naming_flags_find_the_run_again() -> None:
    a = parse_args(["--model-name", "cnn1d_3", "--weight-decay", "0.1", "--split", "inter", "--folds", "4",
                    "--fold", "2", "--rr-features", "--augment", "noise", "--seed", "3", "--epochs", "5"])
    flags = naming_flags(a)
    assert "--seed" not in flags and "--epochs" not in flags
    assert run_name(parse_args(flags)) == run_name(a)


def test_versioning_on_a_fresh_root(tmp_path: Path) -> None:
    runs = tmp_path / "ecg" / "runs"
    assert select_run(runs, "m", "bump", existing=False) is None  # claimed when the run starts writing
    assert select_run(runs, "m", "latest", existing=False) is None  # a fresh root: the first version is claimed
    assert claim_run(runs, "m").name == "m_1"
    with pytest.raises(ECGError, match="no run named n_<N>"):
        select_run(runs, "n", "latest", existing=True)
    for v in (2, 4):
        (runs / f"m_{v}").mkdir(parents=True)
    (runs / "m_x").mkdir()
    (runs / "mm_9").mkdir()
    assert existing_versions(runs, "m") == [1, 2, 4]
    assert claim_run(runs, "m").name == "m_5"
    assert select_run(runs, "m", "latest", existing=True).name == "m_5"
    assert select_run(runs, "m", "2", existing=True).name == "m_2"
    with pytest.raises(ECGError, match="existing versions: 1, 2, 4, 5"):
        select_run(runs, "m", "3", existing=True)
    with pytest.raises(ECGError, match="--resume and --test need latest or a number"):
        select_run(runs, "m", "bump", existing=True)


def test_a_finished_run_is_never_trained_into_again(tmp_path: Path) -> None:
    run = tmp_path / "m_1"
    run.mkdir()
    assert select_run(tmp_path, "m", "latest", existing=False) == run  # empty: may be reused
    (run / "checkpoint.pth.tar").write_bytes(b"x")
    with pytest.raises(ECGError, match="already holds a trained run"):
        select_run(tmp_path, "m", "latest", existing=False)
    with pytest.raises(ECGError, match="already holds a trained run"):
        select_run(tmp_path, "m", "1", existing=False)


def _claim(runs: str, out: multiprocessing.Queue) -> None:
    out.put([claim_run(Path(runs), "m").name for _ in range(20)])


def test_concurrent_bumps_claim_different_versions(tmp_path: Path) -> None:
    queue: multiprocessing.Queue = multiprocessing.Queue()
    jobs = [multiprocessing.Process(target=_claim, args=(str(tmp_path), queue)) for _ in range(4)]
    for job in jobs:
        job.start()
    names = [name for _ in jobs for name in queue.get(timeout=60)]
    for job in jobs:
        job.join()
    assert len(names) == 80 and len(set(names)) == 80  # no two claims share a folder
    assert existing_versions(tmp_path, "m") == list(range(1, 81))


def test_a_missing_run_names_the_flag_that_differs(tmp_path: Path) -> None:
    runs = tmp_path / "ecg" / "runs"
    (runs / "cnn1d_3_intra_adamw_lr0.003_bs128_OneCycleLR_crossentropy_1").mkdir(parents=True)
    (runs / "cnn1d_3_intra_adamw_lr0.003_bs128_OneCycleLR_crossentropy_1" / "config.json").write_text(
        '{"flags": {"model_name": "cnn1d_3", "weight_decay": 0.0001, "split": "intra", "lr": 0.003}}')
    a = parse_args(["--model-name", "cnn1d_3", "--weight-decay", "0.1", "--resume", "latest"])
    with pytest.raises(ECGError, match=r"has --weight-decay 0.0001 \(you gave 0.1\).*--override NAME=VALUE"):
        select_run(runs, run_name(a), "latest", existing=True, args=a)


def test_reconcile_takes_unwritten_flags_from_the_run_and_refuses_conflicts() -> None:
    recorded = {"seed": 3, "short_run": True, "amp": True, "epochs": 30, "pretrained": None}
    a = parse_args(["--resume", "latest"])
    reconcile(a, recorded, {"amp": False}, "run_1/checkpoint.pth.tar")
    assert (a.seed, a.short_run, a.amp, a.epochs) == (3, True, False, 30)  # overrides win over the record
    a = parse_args(["--resume", "latest", "--epochs", "40"])
    reconcile(a, recorded, {}, "x")
    assert a.epochs == 40
    with pytest.raises(ECGError, match=r"--seed 1 differs from the run's --seed 3 \(x\); pick the version"):
        reconcile(parse_args(["--resume", "latest", "--seed", "1"]), recorded, {}, "x")
    with pytest.raises(ECGError, match="--short-run True differs from the run's --short-run False .*drop the flag"):
        reconcile(parse_args(["--resume", "latest", "--short-run"]), {**recorded, "short_run": False}, {}, "x")
    with pytest.raises(ECGError, match="--amp False differs from the run's --amp True .*--override amp=False"):
        reconcile(parse_args(["--resume", "latest", "--no-amp"]), recorded, {}, "x")
    test = parse_args(["--test", "--no-amp"])  # on --test only the seed is compared
    reconcile(test, recorded, {}, "x")
    assert test.amp is False and test.seed == 0
    test = parse_args(["--test"])  # and the run's autocast is kept unless given
    reconcile(test, recorded, {"amp": False}, "x")
    assert test.amp is False



def _bad_values(action) -> list[str]:
    """Values a flag must refuse: outside its choices, not a number, out of range, a missing file."""
    if action.dest == "pretrained":
        return ["missing/model_best.pth.tar"]
    if action.choices:
        return ["no-such-choice"]
    values = ["abc"]
    if action.dest in ("split_seed", "seed", "batch_size", "epochs", "workers", "bootstrap", "num_classes",
                       "folds", "fold", "fs", "step", "start_epoch"):
        values.append("-7")
    if action.dest in ("lr", "seq_len", "momentum", "lr_decay", "label_smoothing"):
        values.append("-0.5")
    return values


def test_every_commander_flag_refuses_a_bad_value_in_one_line(capsys) -> None:
    checked = 0
    for action in get_args_parser()._actions:
        if not action.option_strings or action.nargs == 0 or action.dest in ("help", "root_dir"):
            continue  # switches take no value; --root-dir is any path (checked for writing when a run starts)
        for value in _bad_values(action):
            with pytest.raises(SystemExit) as exc:
                parse_args([action.option_strings[-1], value])
            err = capsys.readouterr().err
            assert exc.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err, (action.dest, err)
            checked += 1
    assert checked >= 35


def test_every_driver_flag_refuses_a_bad_value_in_one_line(tmp_path: Path, capsys) -> None:
    import driver

    for flags in (["--checkpoint", "first"], ["--batch-size", "0"], ["--batch-size", "x"], []):
        argv = [str(tmp_path), str(tmp_path / "out"), *flags] + (["--run", str(tmp_path)] if flags else [])
        with pytest.raises(SystemExit) as exc:
            driver.get_args_parser().parse_args(argv)
        assert exc.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    assert driver.main([str(tmp_path), str(tmp_path / "out"), "--run", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_recipe_is_its_flags_and_the_command_line_wins() -> None:
    from args import RECIPES

    for name, flags in RECIPES.items():
        recipe = parse_args(["--recipe", name])
        assert run_name(recipe) == run_name(parse_args(flags)) and recipe.recipe == name
        tuned = parse_args(["--recipe", name, "--lr", "0.02", "--seed", "2"])
        assert tuned.lr == 0.02 and "_lr0.02_" in run_name(tuned)
        hint = naming_flags(tuned)
        assert hint[:2] == ["--recipe", name] and "--lr" in hint and run_name(parse_args(hint)) == run_name(tuned)


def test_the_flags_page_is_generated_from_the_parsers() -> None:
    """docs/flags.md is what ``python -m toolbox.flagsdoc`` prints: every flag of each entry point, as in --help."""
    from toolbox import flagsdoc

    page = (REPO / "docs" / "flags.md").read_text()
    assert page == flagsdoc.markdown(), "docs/flags.md is stale: run python -m toolbox.flagsdoc > docs/flags.md"
    import predict

    for action in predict.get_args_parser()._actions:
        for option in action.option_strings if action.dest != "help" else []:
            assert f"`{option}`" in page, option
