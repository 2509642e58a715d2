"""toolbox.anomaly: AUROC/AUPRC, threshold, bootstrap, score combination, MMD² and figures.

Unit tests on small hand-made or synthetic (seeded random) scores and beats, no ECG data: they check the maths
(against hand computation, brute force or scikit-learn) and that every figure is written.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    matthews_corrcoef,
    precision_score,
    recall_score,
    roc_auc_score,
)

from toolbox.anomaly import (
    ScoreCombiner,
    _ranking,
    _weighted_areas,
    anomaly_metrics,
    auprc,
    auroc,
    beat_grid_png,
    bootstrap_anomaly,
    choose_threshold,
    cross_validated_auroc,
    mmd2,
    pr_png,
    roc_png,
    score_histogram_png,
)
from toolbox.utils import ECGError

NAMES = ["N", "S", "V", "F", "Q"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _synthetic_beats(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic AAMI classes (mostly N) and scores that run higher for abnormal classes, with noise."""
    rng = np.random.default_rng(seed)
    classes = rng.choice(5, size=n, p=[0.7, 0.1, 0.12, 0.05, 0.03])
    shift = np.array([0.0, 0.8, 1.5, 1.0, 0.5])[classes]
    return rng.normal(size=n) + shift, classes


def test_auroc_and_auprc_of_a_hand_made_case() -> None:
    scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    # positive 0.35 beats 0.1 but not 0.4, positive 0.8 beats both: 3 of 4 pairs
    assert auroc(scores, labels) == pytest.approx(0.75)
    # ranked 0.8 (pos: P=1, R=1/2), 0.4 (neg), 0.35 (pos: P=2/3, R=1): AP = 1/2 * 1 + 1/2 * 2/3
    assert auprc(scores, labels) == pytest.approx(0.5 + 1 / 3)


def test_auroc_counts_ties_half_and_is_none_for_one_kind() -> None:
    scores, labels = np.array([0.5, 0.5, 0.2, 0.9]), np.array([1, 0, 0, 1])
    # positive 0.5: tie with negative 0.5 (1/2) and beats 0.2; positive 0.9 beats both: 3.5 / 4
    assert auroc(scores, labels) == pytest.approx(0.875)
    assert auroc(scores, np.zeros(4)) is None and auprc(scores, np.ones(4)) is None


def test_nan_scores_are_a_clear_error() -> None:
    with pytest.raises(ECGError, match="NaN or infinite"):
        auroc(np.array([0.1, np.nan, 0.3]), np.array([0, 1, 1]))


def test_per_class_auroc_leaves_the_other_abnormal_classes_out() -> None:
    # S lies above every N but below every V: against N alone it separates perfectly; were V counted as
    # negatives (or S compared with all other beats) it would not
    scores = np.array([0.1, 0.2, 0.3, 0.5, 0.6, 0.9, 0.95])
    classes = np.array([0, 0, 0, 1, 1, 2, 2])
    m = anomaly_metrics(scores, classes, NAMES, ["N"], threshold=0.4)
    assert m["per_class"]["S"]["auroc"] == pytest.approx(1.0)
    assert m["per_class"]["S"]["auprc"] == pytest.approx(1.0)
    assert roc_auc_score(classes == 1, scores) == pytest.approx(0.6)  # S one-vs-rest: what a mistake would give
    assert m["per_class"]["V"]["auroc"] == pytest.approx(1.0)
    assert m["per_class"]["S"]["support"] == 2 and m["per_class"]["F"]["support"] == 0
    assert m["per_class"]["F"]["auroc"] is None and m["per_class"]["Q"]["auprc"] is None
    assert "N" not in m["per_class"]
    assert m["auroc"] == pytest.approx(1.0) and m["beats"] == 7 and m["abnormal_beats"] == 4


def test_anomaly_metrics_decisions_match_scikit_learn() -> None:
    scores, classes = _synthetic_beats(300, seed=1)
    abnormal = classes != 0
    m = anomaly_metrics(scores, classes, NAMES, ["N"], threshold=0.7)
    flagged = scores >= 0.7
    assert m["f1"] == pytest.approx(f1_score(abnormal, flagged))
    assert m["mcc"] == pytest.approx(matthews_corrcoef(abnormal, flagged))
    assert m["precision"] == pytest.approx(precision_score(abnormal, flagged))
    assert m["recall"] == pytest.approx(recall_score(abnormal, flagged))
    assert m["auroc"] == pytest.approx(roc_auc_score(abnormal, scores))
    assert m["auprc"] == pytest.approx(average_precision_score(abnormal, scores))
    keep = (classes == 0) | (classes == 2)
    assert m["per_class"]["V"]["auroc"] == pytest.approx(roc_auc_score(classes[keep] == 2, scores[keep]))
    assert m["threshold"] == 0.7 and m["abnormal_beats"] == int(abnormal.sum())
    # two normal classes: Q beats then count normal and leave the per-class table
    both = anomaly_metrics(scores, classes, NAMES, ["N", "Q"], threshold=0.7)
    assert both["abnormal_beats"] == int(((classes != 0) & (classes != 4)).sum()) and "Q" not in both["per_class"]


def test_unknown_normal_class_is_a_clear_error() -> None:
    with pytest.raises(ECGError, match="normal classes"):
        anomaly_metrics(np.zeros(3), np.zeros(3), NAMES, ["X"], threshold=0.0)


def test_choose_threshold_maximises_f1_by_brute_force() -> None:
    rng = np.random.default_rng(3)
    for _ in range(5):
        positive = rng.random(40) < 0.3
        scores = np.round(rng.normal(size=40) + positive, 1)  # rounding makes ties
        t = choose_threshold(scores, positive)
        best = max(f1_score(positive, scores >= u) for u in np.unique(scores))
        assert f1_score(positive, scores >= t) == pytest.approx(best)
        assert choose_threshold(scores, positive) == t  # deterministic


def test_choose_threshold_of_a_separating_score_lies_between_the_kinds() -> None:
    scores, positive = np.array([0.1, 0.2, 0.3, 0.7, 0.9]), np.array([0, 0, 0, 1, 1])
    assert choose_threshold(scores, positive) == pytest.approx(0.5)  # midpoint of 0.3 and 0.7
    with pytest.raises(ECGError, match="no abnormal beat"):
        choose_threshold(scores, np.zeros(5))


def test_weighted_areas_match_scikit_learn_sample_weights() -> None:
    # the bootstrap's vectorised AUROC/AUPRC under draw counts equal scikit-learn's with sample_weight
    rng = np.random.default_rng(4)
    n = 150
    scores, positive = np.round(rng.normal(size=n), 1), rng.random(n) < 0.3
    keep = rng.random(n) < 0.7
    counts = rng.integers(0, 4, size=(n, 6)).astype(np.float64)
    roc, ap = _weighted_areas(_ranking(scores, positive, keep), counts)
    for r in range(counts.shape[1]):
        w = counts[keep, r]
        assert roc[r] == pytest.approx(roc_auc_score(positive[keep], scores[keep], sample_weight=w), abs=1e-12)
        assert ap[r] == pytest.approx(average_precision_score(positive[keep], scores[keep], sample_weight=w),
                                      abs=1e-12)


def test_bootstrap_intervals_contain_the_estimate_and_are_seeded() -> None:
    scores, classes = _synthetic_beats(1500, seed=5)
    groups = np.arange(1500) // 30  # 50 "records"
    m = anomaly_metrics(scores, classes, NAMES, ["N"], threshold=0.8)
    ci = bootstrap_anomaly(scores, classes, NAMES, ["N"], 0.8, resamples=200)
    for key in ("auroc", "auprc", "f1", "mcc", "precision", "recall"):
        lo, hi = ci[key]
        assert lo < m[key] < hi, key
    for name in ("S", "V", "F", "Q"):
        for key in ("auroc", "auprc"):
            lo, hi = ci["per_class"][name][key]
            assert lo < m["per_class"][name][key] < hi, (name, key)
    assert bootstrap_anomaly(scores, classes, NAMES, ["N"], 0.8, resamples=200) == ci
    other = bootstrap_anomaly(scores, classes, NAMES, ["N"], 0.8, resamples=200, seed=1)
    assert other["auroc"] != ci["auroc"]
    grouped = bootstrap_anomaly(scores, classes, NAMES, ["N"], 0.8, resamples=200, groups=groups)
    assert grouped["auroc"][0] < m["auroc"] < grouped["auroc"][1] and grouped["auroc"] != ci["auroc"]
    assert bootstrap_anomaly(scores, classes, NAMES, ["N"], 0.8, resamples=0) == {}


def test_bootstrap_gives_none_for_a_class_without_beats() -> None:
    scores, classes = _synthetic_beats(400, seed=6)
    classes[classes == 3] = 0
    ci = bootstrap_anomaly(scores, classes, NAMES, ["N"], 0.8, resamples=50)
    assert ci["per_class"]["F"] == {"auroc": None, "auprc": None}
    assert ci["per_class"]["V"]["auroc"] is not None


def test_bootstrap_resampling_one_group_has_no_spread() -> None:
    # every beat in one group: each resample draws that group once, the whole data, so the interval is a point
    scores, classes = _synthetic_beats(200, seed=7)
    ci = bootstrap_anomaly(scores, classes, NAMES, ["N"], 0.8, resamples=20, groups=np.zeros(200))
    m = anomaly_metrics(scores, classes, NAMES, ["N"], threshold=0.8)
    assert ci["auroc"] == pytest.approx([m["auroc"]] * 2) and ci["mcc"] == pytest.approx([m["mcc"]] * 2)


def _two_scores(n: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """An informative non-negative score (abnormal beats higher) and a pure-noise score, synthetic."""
    rng = np.random.default_rng(seed)
    positive = rng.random(n) < 0.2
    return {"reconstruction": np.exp(rng.normal(size=n) + 1.2 * positive),
            "discriminator": rng.normal(size=n)}, positive


def test_score_combiner_round_trip_and_informative_score_kept() -> None:
    fit_scores, fit_positive = _two_scores(600, seed=8)
    test_scores, test_positive = _two_scores(600, seed=9)
    combiner = ScoreCombiner.fit(fit_scores, fit_positive)
    d = combiner.to_dict()
    assert d["names"] == ["discriminator", "reconstruction"]
    assert d["transform"] == ["identity", "log1p"]  # the non-negative score is log-transformed
    flat = [*d["means"], *d["sds"], *d["coef"], d["intercept"]]
    assert all(type(x) is float for x in flat) and all(type(x) is str for x in d["names"] + d["transform"])
    again = ScoreCombiner.from_dict(d)
    np.testing.assert_array_equal(again.combine(test_scores), combiner.combine(test_scores))
    combined = auroc(combiner.combine(test_scores), test_positive)
    alone = auroc(test_scores["reconstruction"], test_positive)
    assert combined >= alone - 0.02
    assert abs(d["coef"][0]) < abs(d["coef"][1])  # the noise score weighs less


def test_score_combiner_with_one_score_keeps_its_ranking() -> None:
    scores, positive = _two_scores(300, seed=10)
    one = {"latent": scores["discriminator"] + 2 * positive}
    combiner = ScoreCombiner.fit(one, positive)
    combined = combiner.combine(one)
    assert auroc(combined, positive) == pytest.approx(auroc(one["latent"], positive))
    assert np.corrcoef(combined, one["latent"])[0, 1] > 0.999  # a positive affine map of the identity transform
    with pytest.raises(ECGError, match="missing"):
        combiner.combine({"reconstruction": one["latent"]})
    with pytest.raises(ECGError, match="normal and abnormal"):
        ScoreCombiner.fit(one, np.zeros(300))


def test_cross_validated_auroc_of_a_separating_score_is_one() -> None:
    rng = np.random.default_rng(11)
    positive = np.arange(200) < 40
    separating = np.where(positive, rng.uniform(2, 3, 200), rng.uniform(0, 1, 200))
    assert cross_validated_auroc({"reconstruction": separating}, positive) == pytest.approx(1.0)
    scores, pos = _two_scores(400, seed=12)
    cv = cross_validated_auroc(scores, pos, folds=5, seed=0)
    assert 0.6 < cv < 1.0 and cross_validated_auroc(scores, pos, folds=5, seed=0) == cv
    assert cross_validated_auroc({"latent": separating}, np.arange(200) < 1) is None  # one abnormal beat


def test_mmd2_is_near_zero_for_one_distribution_and_positive_for_a_shift() -> None:
    rng = np.random.default_rng(13)
    x, y = rng.normal(size=(300, 2, 8)), rng.normal(size=(300, 2, 8))
    shifted = rng.normal(size=(300, 2, 8)) + 1.0  # every coordinate moved by one sd
    same, apart = mmd2(x, y), mmd2(x, shifted)
    assert abs(same) < 0.01 and apart > 0.1
    assert mmd2(y, x) == pytest.approx(same, abs=1e-12)
    assert mmd2(shifted, x) == pytest.approx(apart, abs=1e-12)
    assert mmd2(x, shifted, sigma=4.0) == pytest.approx(mmd2(shifted, x, sigma=4.0), abs=1e-12)
    assert mmd2(x, shifted, most=100) == mmd2(x, shifted, most=100)  # the subsample is seeded
    assert mmd2(x, shifted, most=100) != mmd2(x, shifted, most=100, seed=1)
    with pytest.raises(ECGError, match="at least 2 samples"):
        mmd2(x[:1], y)


def test_each_figure_writes_a_png(tmp_path: Path) -> None:
    scores, classes = _synthetic_beats(400, seed=14)
    paths = [tmp_path / f"{name}.png" for name in ("roc", "pr", "hist", "beats", "beats1")]
    roc_png(scores, classes, NAMES, ["N"], paths[0], title="ROC (synthetic)")
    pr_png(scores, classes, NAMES, ["N"], paths[1], title="PR (synthetic)")
    score_histogram_png(scores, classes, NAMES, paths[2], title="scores (synthetic)", threshold=0.8)
    beats = np.sin(np.linspace(0, 6, 320))[None, None, :] * np.ones((20, 2, 1))
    beat_grid_png(beats, paths[3], title="beats (synthetic)", fs=360.0)
    beat_grid_png(beats[:5, :1], paths[4], title="five one-channel beats", fs=125.0)
    for path in paths:
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000, path.name
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no temporary left


def test_bootstrap_of_several_runs_is_the_interval_of_their_mean() -> None:
    """Synthetic scores: two identical runs give the one run's interval; a strong and a weak run give an interval
    between theirs (every resample scores both runs on the same draw and averages)."""
    rng = np.random.default_rng(3)
    classes = np.repeat([0, 1, 2], [300, 60, 40])
    strong = rng.normal(size=400) + 2.0 * (classes > 0)
    weak = rng.normal(size=400) + 0.5 * (classes > 0)
    names, normal = ["N", "S", "V"], ["N"]
    one = bootstrap_anomaly(strong, classes, names, normal, 1.0, 200)
    assert bootstrap_anomaly([strong, strong], classes, names, normal, [1.0, 1.0], 200) == one
    both = bootstrap_anomaly([strong, weak], classes, names, normal, [1.0, 0.3], 200)
    low = bootstrap_anomaly(weak, classes, names, normal, 0.3, 200)
    assert low["auroc"][1] < both["auroc"][0] < both["auroc"][1] < one["auroc"][0]
    mean = (auroc(strong, classes > 0) + auroc(weak, classes > 0)) / 2
    assert both["auroc"][0] < mean < both["auroc"][1]
