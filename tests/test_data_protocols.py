"""Kaggle-format CSVs (export, reload, malformed files, ptb), verified downloads and the integrity check."""
from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

import commander
from loaders import download, kaggle, mitdb
from loaders.export_csv import export
from tests.conftest import link_mitdb, one_line_error, run_cli, write_ptb_csvs
from toolbox.utils import ECGError

SHORT = ["--model-name", "cnn1d_3", "--short-run", "--epochs", "1"]


# --- Kaggle-format CSVs -------------------------------------------------------------------------------------

def test_export_then_reload_equals_the_extracted_beats(tmp_path: Path, cache_root: Path, beats: dict) -> None:
    rows = export(tmp_path, cache_root, split_seed=0, records=["100", "208", "232"])
    keep = np.flatnonzero(np.isin(beats["record"], [100, 208, 232]))
    assert sum(rows.values()) == len(keep)
    x_tr, y_tr = kaggle.read_csv(tmp_path / "mitbih_train.csv", 5)
    x_te, y_te = kaggle.read_csv(tmp_path / "mitbih_test.csv", 5)
    split = mitdb.intra_patient_split(beats["label"][keep], 0)
    for x, y, part in ((x_tr, y_tr, np.concatenate([split["train"], split["val"]])), (x_te, y_te, split["test"])):
        idx = keep[np.sort(part)]
        np.testing.assert_array_equal(x, beats["x"][idx])  # float32 survives '%.18e' exactly
        np.testing.assert_array_equal(y, beats["label"][idx])
    line = (tmp_path / "mitbih_test.csv").read_text().splitlines()[0].split(",")
    assert len(line) == 188 and line[0].count("e") == 1


def test_ecg_trains_on_kaggle_csvs_in_the_data_folder(tmp_path: Path, cache_root: Path, capsys,
                                                      monkeypatch) -> None:
    data = tmp_path / "data" / "mitdb"
    export(data, cache_root, split_seed=0, records=["100", "101", "119", "208"])
    root = tmp_path / "root"
    monkeypatch.setenv("ECG_DATA_ROOT", str(tmp_path / "data"))
    assert commander.main(["--dataset", "ecg", *SHORT, "--root-dir", str(root)]) == 0
    assert "mitbih-kaggle-csv" in capsys.readouterr().out
    run = next((root / "ecg" / "runs").iterdir())
    splits = json.loads((run / "splits.json").read_text())
    assert splits["files"]["train"]["name"] == "mitbih_train.csv" and len(splits["files"]["test"]["sha256"]) == 64
    n_train = len(kaggle.read_csv(data / "mitbih_train.csv", 5)[1])
    assert len(splits["rows"]["train"]) + len(splits["rows"]["val"]) == n_train
    assert not set(splits["rows"]["train"]) & set(splits["rows"]["val"])
    assert commander.main(["--dataset", "ecg", *SHORT, "--root-dir", str(root), "--test"]) == 0
    assert commander.main(["--dataset", "ecg", *SHORT, "--root-dir", str(root), "--split", "inter"]) == 2
    assert "carry no record ids" in capsys.readouterr().err


def test_a_rewritten_csv_builds_a_new_cache(tmp_path: Path, beats: dict, caplog) -> None:
    path = tmp_path / "mitbih_train.csv"
    kaggle.write_csv(path, beats["x"][:30], beats["label"][:30])
    first = kaggle.load_csv(path, tmp_path / "cache", 5)[1]
    kaggle.write_csv(path, beats["x"][:30], np.full(30, 3))  # same size, other labels
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    with caplog.at_level(logging.WARNING):
        again = kaggle.load_csv(path, tmp_path / "cache", 5)[1]
    assert (first == beats["label"][:30]).all() and (again == 3).all()
    assert f"{path} changed since the cache" in caplog.text


def test_ptb_trains_on_ptbdb_csvs(tmp_path: Path, beats: dict, capsys) -> None:
    write_ptb_csvs(tmp_path / "data" / "ptbdb", beats, 1500, 3000)
    root = tmp_path / "root"
    proc = run_cli("--dataset", "ptb", *SHORT, "--root-dir", str(root), env={"ECG_DATA_ROOT": str(tmp_path / "data")})
    assert proc.returncode == 0, proc.stderr
    run = next((root / "ptb" / "runs").iterdir())
    splits = json.loads((run / "splits.json").read_text())
    assert splits["database"] == "ptbdb-kaggle-csv"
    sizes = {k: sum(v.values()) for k, v in splits["counts"].items()}
    assert sizes["test"] == 900 and sizes["val"] == 360 and sizes["train"] == 3240
    assert splits["counts"]["test"] == {"normal": 300, "abnormal": 600}  # stratified
    assert json.loads((run / "config.json").read_text())["dataset"]["classes"] == ["normal", "abnormal"]


MALFORMED = {
    "wrong column count": (lambda rows: rows[:2] + [rows[2] + ",0.5"] + rows[3:], "row 3 has 189 columns"),
    "non-numeric cell": (lambda rows: rows[:1] + ["abc," + rows[1].split(",", 1)[1]] + rows[2:],
                         "row 2, column 1: 'abc' is not a number"),
    "NaN": (lambda rows: rows[:4] + [rows[4].replace(rows[4].split(",")[5], "nan", 1)] + rows[5:],
            "row 5, column 6 is nan"),
    "label out of range": (lambda rows: rows[:-1] + [rows[-1].rsplit(",", 1)[0] + ",7"], "label 7 is not one of 0..4"),
    "empty file": (lambda rows: [], "is empty"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_csv_is_one_line_naming_file_row_and_problem(case: str, tmp_path: Path, beats: dict) -> None:
    good = tmp_path / "good.csv"
    kaggle.write_csv(good, beats["x"][:6], beats["label"][:6])
    damage, message = MALFORMED[case]
    bad = tmp_path / "mitbih_train.csv"
    rows = damage(good.read_text().splitlines())
    bad.write_text("\n".join(rows) + ("\n" if rows else ""))
    with pytest.raises(ECGError, match=message) as exc:
        kaggle.read_csv(bad, 5)
    assert str(bad) in str(exc.value) and "\n" not in str(exc.value)


def test_malformed_csv_through_commander(tmp_path: Path, beats: dict) -> None:
    folder = tmp_path / "data" / "mitdb"
    kaggle.write_csv(folder / "mitbih_train.csv", beats["x"][:50], beats["label"][:50])
    (folder / "mitbih_test.csv").write_text("1,2,3\n")
    proc = run_cli("--dataset", "ecg", *SHORT, "--root-dir", str(tmp_path / "root"),
                   env={"ECG_DATA_ROOT": str(tmp_path / "data")})
    line = one_line_error(proc)
    assert "mitbih_test.csv: row 1 has 3 columns, expected 188" in line


# --- downloads --------------------------------------------------------------------------------------------------

def test_download_checksum_mismatch_moves_nothing_into_place(tmp_path: Path, data_root: Path, http_server) -> None:
    mirror = link_mitdb(tmp_path / "mirror", data_root)
    (mirror / "100.hea").unlink()
    (mirror / "100.hea").write_text((data_root / "mitdb" / "100.hea").read_text().replace("MLII", "MLXX"))
    url = http_server(tmp_path / "mirror") + "mitdb/"
    proc = run_cli("--root-dir", str(tmp_path / "root"), *SHORT, "--data-url", url,
                   env={"ECG_DATA_ROOT": str(tmp_path / "target")})
    assert "100.hea does not match its known SHA-256" in one_line_error(proc)
    assert list((tmp_path / "target" / "mitdb").iterdir()) == []  # neither the file nor a .part


def test_download_cut_short_is_never_used_and_resumes(tmp_path: Path, data_root: Path, http_server) -> None:
    cut_url = http_server(data_root, cut=100_000) + "mitdb/"
    target = tmp_path / "target" / "mitdb"
    with pytest.raises(ECGError, match="100.dat: transfer cut short.*resumes on the next run"):
        mitdb.ensure_records(target, cut_url, progress=False)
    assert (target / "100.hea").is_file()  # small enough to arrive whole
    assert not (target / "100.dat").exists()  # never used while incomplete
    kept = (target / "100.dat.part").stat().st_size
    assert 0 < kept < (data_root / "mitdb" / "100.dat").stat().st_size
    mitdb.ensure_records(target, http_server(data_root) + "mitdb/", progress=False)
    assert not list(target.glob("*.part"))
    for name in ("100.hea", "100.dat", "234.atr"):
        assert (target / name).read_bytes() == (data_root / "mitdb" / name).read_bytes()


def test_fetch_resumes_with_a_range_request(tmp_path: Path, data_root: Path, http_server) -> None:
    src = data_root / "mitdb" / "101.dat"
    dest = tmp_path / "101.dat"
    dest.with_name("101.dat.part").write_bytes(src.read_bytes()[:123_456])
    url = http_server(data_root) + "mitdb/101.dat"
    download.fetch(url, dest, sha256=mitdb.known_digests()["101.dat"], progress=False)
    assert dest.read_bytes() == src.read_bytes()


def test_server_down_is_the_offline_message(tmp_path: Path) -> None:
    with pytest.raises(ECGError, match=r"offline\? fill .*mitdb with the files from http://127.0.0.1:9/"):
        mitdb.ensure_records(tmp_path / "mitdb", "http://127.0.0.1:9/", progress=False)


def _zip_with(path: Path, name: str, data: bytes = b"x") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ptbdb_normal.csv", "0.5," * 187 + "0\n")
        zf.writestr(name, data)
    return path


@pytest.mark.parametrize("name", ["../evil", "/etc/evil", "sub/../../evil"])
def test_zip_with_escaping_paths_is_refused(name: str, tmp_path: Path) -> None:
    archive = _zip_with(tmp_path / "a.zip", name)
    with pytest.raises(ECGError, match="refusing to extract"):
        download.safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil").exists() and not list((tmp_path / "out").iterdir())


def test_tar_link_outside_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("link")
        info.type, info.linkname = tarfile.SYMTYPE, "../../outside"
        tf.addfile(info)
        data = b"fine"
        info = tarfile.TarInfo("ok.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with pytest.raises(ECGError, match="a link to ../../outside"):
        download.safe_extract(archive, tmp_path / "out")


def test_ptb_archive_with_evil_member_is_refused_through_commander(tmp_path: Path, http_server) -> None:
    (tmp_path / "served").mkdir()
    _zip_with(tmp_path / "served" / "archive.zip", "../evil")
    url = http_server(tmp_path / "served") + "archive.zip"
    proc = run_cli("--dataset", "ptb", *SHORT, "--root-dir", str(tmp_path / "root"), "--data-url", url,
                   env={"ECG_DATA_ROOT": str(tmp_path / "data")})
    assert "holds '../evil', a '..' component; refusing to extract it" in one_line_error(proc)
    assert not (tmp_path / "data" / "evil").exists() and not (tmp_path / "evil").exists()
    assert not list((tmp_path / "data" / "ptbdb").glob("*.zip"))


# --- integrity check --------------------------------------------------------------------------------------------

def test_integrity_check_names_the_corrupt_file_and_remembers_a_pass(tmp_path: Path, data_root: Path,
                                                                    monkeypatch) -> None:
    folder = link_mitdb(tmp_path / "data", data_root)
    shutil.copy(data_root / "mitdb" / "SHA256SUMS.txt", folder / "SHA256SUMS.txt")
    mitdb.check_integrity(folder, tmp_path / "cache")
    assert (tmp_path / "cache" / "mitdb_integrity.json").is_file()
    monkeypatch.setattr(mitdb, "sha256_file", lambda p: pytest.fail("hashed again although nothing changed"))
    mitdb.check_integrity(folder, tmp_path / "cache")
    monkeypatch.undo()

    (folder / "105.atr").unlink()
    damaged = bytearray((data_root / "mitdb" / "105.atr").read_bytes())
    damaged[100] ^= 0xFF
    (folder / "105.atr").write_bytes(bytes(damaged))
    (folder / "106.hea").unlink()
    with pytest.raises(ECGError, match=r"105.atr \(SHA-256 mismatch\), 106.hea \(missing\)"):
        mitdb.check_integrity(folder, tmp_path / "cache")


def test_integrity_failure_through_commander(tmp_path: Path, data_root: Path) -> None:
    folder = link_mitdb(tmp_path / "data", data_root)
    shutil.copy(data_root / "mitdb" / "SHA256SUMS.txt", folder / "SHA256SUMS.txt")
    (folder / "203.dat").unlink()
    damaged = bytearray((data_root / "mitdb" / "203.dat").read_bytes())
    damaged[5000] ^= 0x01
    (folder / "203.dat").write_bytes(bytes(damaged))
    proc = run_cli("--root-dir", str(tmp_path / "root"), *SHORT, env={"ECG_DATA_ROOT": str(tmp_path / "data")})
    assert "203.dat (SHA-256 mismatch)" in one_line_error(proc)
