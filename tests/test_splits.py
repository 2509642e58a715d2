"""The intra-patient split: disjoint, stratified, seeded, saved and reloaded."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loaders import mitdb
from toolbox.utils import ECGError


def test_split_is_disjoint_complete_and_sized(beats: dict) -> None:
    split = mitdb.intra_patient_split(beats["label"], seed=0)
    tr, va, te = (set(split[k].tolist()) for k in ("train", "val", "test"))
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert len(tr | va | te) == len(beats["label"])
    n = len(beats["label"])
    assert abs(len(te) - 0.2 * n) <= 1
    assert abs(len(va) - 0.1 * (n - len(te))) <= 1


def test_split_is_stratified(beats: dict) -> None:
    labels = beats["label"]
    split = mitdb.intra_patient_split(labels, seed=0)
    overall = np.bincount(labels, minlength=5) / len(labels)
    for name in ("train", "val", "test"):
        share = np.bincount(labels[split[name]], minlength=5) / len(split[name])
        np.testing.assert_allclose(share, overall, atol=0.002)


def test_split_depends_on_seed_only(beats: dict) -> None:
    a = mitdb.intra_patient_split(beats["label"], seed=0)
    b = mitdb.intra_patient_split(beats["label"], seed=0)
    c = mitdb.intra_patient_split(beats["label"], seed=1)
    np.testing.assert_array_equal(a["test"], b["test"])
    assert not np.array_equal(a["test"], c["test"])


def test_binary_dataset_shares_the_split_and_maps_labels(cache_root: Path, data_root: Path) -> None:
    five = mitdb.build(data_root / "mitdb", cache_root / "cache", binary=False, split_seed=0, progress=False)
    two = mitdb.build(data_root / "mitdb", cache_root / "cache", binary=True, split_seed=0, progress=False)
    assert two.classes == ["N", "abnormal"] and five.classes == mitdb.AAMI_CLASSES
    np.testing.assert_array_equal(five.test.meta["sample"], two.test.meta["sample"])
    np.testing.assert_array_equal(two.test.labels.numpy(), (five.test.labels.numpy() > 0).astype(int))
    assert five.in_channels == 1 and tuple(five.train.x.shape[1:]) == (1, 187)


def test_manifest_round_trip_gives_the_same_split(cache_root: Path, data_root: Path) -> None:
    first = mitdb.build(data_root / "mitdb", cache_root / "cache", binary=False, split_seed=3, progress=False)
    again = mitdb.build(data_root / "mitdb", cache_root / "cache", binary=False, split_seed=99,
                        saved_manifest=first.manifest, progress=False)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(first, name).meta["sample"], getattr(again, name).meta["sample"])
        np.testing.assert_array_equal(getattr(first, name).meta["record"], getattr(again, name).meta["record"])
    assert sum(first.manifest["counts"]["test"].values()) == len(first.test)


def test_manifest_from_other_extraction_is_refused(cache_root: Path, data_root: Path, beats: dict) -> None:
    split = mitdb.intra_patient_split(beats["label"], 0)
    manifest = mitdb._manifest(beats, split, 0, mitdb.BeatParams(length=200))
    with pytest.raises(ECGError, match="other extraction parameters"):
        mitdb.build(data_root / "mitdb", cache_root / "cache", binary=False, split_seed=0,
                    saved_manifest=manifest, progress=False)


# de Chazal et al. (2004), Table I: beats per AAMI class in DS1 and DS2 (N, S, V, F, Q).
DE_CHAZAL = {"DS1": [45_866, 944, 3_788, 415, 8], "DS2": [44_259, 1_837, 3_221, 388, 7]}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_inter_patient_split_is_record_disjoint(beats: dict, seed: int) -> None:
    split = mitdb.inter_patient_split(beats["record"], beats["label"], seed)
    records = {k: set(beats["record"][v].tolist()) for k, v in split.items()}
    ds1, ds2 = {int(r) for r in mitdb.DS1}, {int(r) for r in mitdb.DS2}
    assert records["test"] == ds2
    assert records["train"] | records["val"] == ds1
    assert not records["train"] & records["val"] and not ds1 & ds2
    assert not (records["train"] | records["val"] | records["test"]) & {int(r) for r in mitdb.PACED}
    val_counts = np.bincount(beats["label"][split["val"]], minlength=5)
    train_counts = np.bincount(beats["label"][split["train"]], minlength=5)
    assert np.all(val_counts[:3] >= 20)  # N, S and V all appear in validation
    assert np.all(val_counts[:4] <= 0.35 * (val_counts + train_counts)[:4])


def test_inter_patient_counts_match_de_chazal(beats: dict) -> None:
    split = mitdb.inter_patient_split(beats["record"], beats["label"], 0)
    ds1 = np.concatenate([split["train"], split["val"]])
    assert np.bincount(beats["label"][ds1], minlength=5).tolist() == DE_CHAZAL["DS1"]
    assert np.bincount(beats["label"][split["test"]], minlength=5).tolist() == DE_CHAZAL["DS2"]


def test_inter_patient_manifest_lists_records_and_reloads(cache_root: Path, data_root: Path) -> None:
    data = mitdb.build(data_root / "mitdb", cache_root / "cache", binary=False, split_seed=0, protocol="inter",
                       progress=False)
    m = data.manifest
    assert m["protocol"] == "inter-patient"
    assert m["records"]["test"] == sorted(mitdb.DS2)
    assert set(m["records"]["val"]) < set(mitdb.DS1)
    again = mitdb.build(data_root / "mitdb", cache_root / "cache", binary=False, split_seed=5, protocol="inter",
                        saved_manifest=m, progress=False)
    np.testing.assert_array_equal(again.val.meta["record"], data.val.meta["record"])
    with pytest.raises(ECGError, match="holds a inter-patient split, not intra-patient"):
        mitdb.build(data_root / "mitdb", cache_root / "cache", binary=False, split_seed=0, protocol="intra",
                    saved_manifest=m, progress=False)


@pytest.mark.parametrize("k,seed", [(3, 0), (4, 0), (4, 1), (5, 2), (6, 0)])
def test_ds1_folds_are_disjoint_cover_ds1_and_hold_s_and_v(beats: dict, k: int, seed: int) -> None:
    folds = mitdb.ds1_folds(beats["record"], beats["label"], k, seed)
    assert len(folds) == k and sorted(r for f in folds for r in f) == sorted(mitdb.DS1)  # a partition of DS1
    for fold in folds:
        counts = np.bincount(beats["label"][np.isin(beats["record"], [int(r) for r in fold])], minlength=5)
        assert counts[1] > 0 and counts[2] > 0, fold
    assert mitdb.ds1_folds(beats["record"], beats["label"], k, seed) == folds  # seeded
    for i in range(1, k + 1):
        split, same = mitdb.fold_split(beats["record"], beats["label"], k, i, seed)
        records = {name: set(beats["record"][idx].tolist()) for name, idx in split.items()}
        assert same == folds and records["test"] == {int(r) for r in folds[i - 1]}
        assert not records["train"] & records["val"] and not (records["train"] | records["val"]) & records["test"]
        assert records["train"] | records["val"] | records["test"] == {int(r) for r in mitdb.DS1}  # DS2 unread
        assert np.bincount(beats["label"][split["val"]], minlength=5)[:3].min() >= 20  # N, S, V in validation
    with pytest.raises(ECGError, match="DS1 has 22 records"):
        mitdb.ds1_folds(beats["record"], beats["label"], 23, 0)
