"""python -m loaders.fetch_test_data against a local mirror of $ECG_DATA_ROOT: verified, resumable, idempotent."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from loaders import fetch_test_data as ftd
from loaders.download import sha256_file


def test_the_manifest_lists_every_file_of_the_data_root_with_its_digest(data_root: Path) -> None:
    listed = ftd.manifest()
    present = {str(p.relative_to(data_root)) for p in data_root.rglob("*") if p.is_file() and p.name != "PROVENANCE.md"}
    assert set(listed) == present and len(listed) == 1781
    for rel in ("mitdb/232.dat", "cinc2020/scoring/weights.csv", "ptbxl/ptbxl_database.csv",
                "cinc2021/records/A0689.mat"):
        assert sha256_file(data_root / rel) == listed[rel]


def test_a_mirror_fills_an_empty_root_and_a_second_call_downloads_nothing(http_server, data_root: Path,
                                                                          tmp_path: Path, capsys) -> None:
    mirror = http_server(data_root)
    only = ["mitdb/100.", "cinc2020/scoring/", "ptbxl/scp_statements.csv", "ptbxl/records100/00000/00001_lr"]
    assert ftd.main(["--root", str(tmp_path), "--data-url", mirror, "--only", *only]) == 0
    got = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert got == sorted(r for r in ftd.manifest() if any(r.startswith(o) for o in only)) and len(got) == 9
    assert (tmp_path / "mitdb" / "100.dat").read_bytes() == (data_root / "mitdb" / "100.dat").read_bytes()
    assert ftd.fetch_test_data(tmp_path, mirror, only, progress=False) == []  # all present: nothing fetched
    (tmp_path / "mitdb" / "100.atr").write_bytes(b"damaged")  # a damaged file is fetched again
    assert ftd.fetch_test_data(tmp_path, mirror, only, progress=False) == ["mitdb/100.atr"]
    capsys.readouterr()


def test_a_mirror_serving_another_file_is_refused_and_nothing_is_saved(http_server, data_root: Path,
                                                                      tmp_path: Path, capsys) -> None:
    served = tmp_path / "mirror"
    shutil.copytree(data_root / "cinc2020" / "scoring", served / "cinc2020" / "scoring")
    (served / "cinc2020" / "scoring" / "weights.csv").write_text("not the Challenge's table\n")
    root = tmp_path / "root"
    assert ftd.main(["--root", str(root), "--data-url", http_server(served), "--only", "cinc2020/scoring/w"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "does not match its known SHA-256" in err[0]
    assert not (root / "cinc2020" / "scoring" / "weights.csv").exists()


def test_offline_is_one_line(tmp_path: Path, capsys) -> None:
    from tests.conftest import closed_port

    offline = f"http://127.0.0.1:{closed_port()}/"
    assert ftd.main(["--root", str(tmp_path), "--data-url", offline, "--only", "mitdb/100."]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "offline?" in err[0]


def test_the_ptbxl_table_is_cut_to_the_test_rows_byte_for_byte(data_root: Path) -> None:
    cut = (data_root / "ptbxl" / "ptbxl_database.csv").read_text()
    header, *rows = cut.splitlines(keepends=True)
    extra = rows[0].replace(rows[0].split(",", 1)[0], "999999", 1)  # a row of a record the suite does not use
    full = header + "".join(rows[:10]) + extra + "".join(rows[10:])
    ids = {r.split(",", 1)[0] for r in rows}
    assert ftd.cut_rows(full, ids) == cut


def test_publisher_urls() -> None:
    challenge = {"E03823.hea": "training/georgia/g4/E03823.hea"}
    assert ftd.publisher_url("mitdb/100.dat", challenge) == "https://physionet.org/files/mitdb/1.0.0/100.dat"
    assert ftd.publisher_url("ptbxl/records100/00000/00001_lr.hea", challenge).endswith(
        "ptb-xl/1.0.3/records100/00000/00001_lr.hea")
    assert ftd.publisher_url("cinc2021/records/E03823.hea", challenge) == (
        "https://physionet.org/files/challenge-2021/1.0.3/training/georgia/g4/E03823.hea")
    with pytest.raises(KeyError):
        ftd.publisher_url("cinc2020/records/Z9.hea", challenge)
