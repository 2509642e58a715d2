"""Flag validation and run versioning (bump, latest, N) on a fresh root."""
from __future__ import annotations

from pathlib import Path

import pytest

from args import existing_versions, get_args_parser, parse_args, run_name, select_run
from toolbox.utils import ECGError


def test_help_has_argument_groups_and_every_flag() -> None:
    text = get_args_parser().format_help()
    for group in ("data:", "model:", "run:", "optimisation:", "schedule:", "class imbalance:", "misc:"):
        assert group in text
    for flag in ("--dataset", "--test", "--verbose", "--root-dir", "--model-name", "--version", "--resume",
                 "--pretrained", "--num-classes", "--workers", "--start-epoch", "--step", "--batch-size",
                 "--epochs", "--optimizer", "--scheduler", "--lr", "--momentum", "--weight-decay", "--lr-decay",
                 "--criterion", "--class-balance", "--sampler", "--seed", "--short-run", "--disable-cuda",
                 "--tensorboard", "--rr-features", "--augment", "--label-smoothing"):
        assert flag in text, flag


@pytest.mark.parametrize("argv,message", [
    (["--sampler", "equal", "--class-balance", "equal"], "use one of them"),
    (["--batch-size", "0"], "must be positive"),
    (["--epochs", "-1"], "must be positive"),
    (["--lr", "0"], "must be positive"),
    (["--version", "newest"], "expected latest or bump or a positive integer"),
    (["--model-name", "vgg"], "invalid choice"),
    (["--pretrained", "x.pth.tar", "--resume", "best"], "use one of them"),
    (["--dataset", "ptbxl", "--rr-features"], "--rr-features applies to the MIT-BIH beats"),
    (["--augment", "flip"], "invalid choice: 'flip'"),
    (["--label-smoothing", "1"], "must be at least 0 and below 1"),
    (["--label-smoothing", "0.1", "--criterion", "focal"], "--label-smoothing applies to --criterion crossentropy"),
    (["--dataset", "ptbxl", "--label-smoothing", "0.1"], "--label-smoothing applies to --criterion crossentropy"),
])
def test_bad_flags_exit_2_with_one_line(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_version_defaults_depend_on_the_action() -> None:
    assert parse_args([]).version == "bump"
    assert parse_args(["--resume", "latest"]).version == "latest"
    test = parse_args(["--test"])
    assert test.version == "latest" and test.resume == "best"


def test_run_name_holds_main_hyperparameters_but_not_epochs() -> None:
    a = parse_args(["--model-name", "cnn1d_3", "--lr", "0.01", "--epochs", "3"])
    b = parse_args(["--model-name", "cnn1d_3", "--lr", "0.01", "--epochs", "30"])
    assert run_name(a) == run_name(b) == "cnn1d_3_intra_adamw_lr0.01_bs128_OneCycleLR_crossentropy"
    assert "sampler-equal" in run_name(parse_args(["--sampler", "equal"]))


def test_versioning_on_a_fresh_root(tmp_path: Path) -> None:
    runs = tmp_path / "ecg" / "runs"
    assert select_run(runs, "m", "bump", existing=False).name == "m_1"
    assert select_run(runs, "m", "latest", existing=False).name == "m_1"  # a fresh root starts at 1
    with pytest.raises(ECGError, match="no run named m_<N>"):
        select_run(runs, "m", "latest", existing=True)
    for v in (1, 2, 4):
        (runs / f"m_{v}").mkdir(parents=True)
    (runs / "m_x").mkdir()
    (runs / "mm_9").mkdir()
    assert existing_versions(runs, "m") == [1, 2, 4]
    assert select_run(runs, "m", "bump", existing=False).name == "m_5"
    assert select_run(runs, "m", "latest", existing=True).name == "m_4"
    assert select_run(runs, "m", "2", existing=True).name == "m_2"
    with pytest.raises(ECGError, match="existing versions: 1, 2, 4"):
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
