"""EC57-style beat matching and scores on hand-made beat lists (samples at 1000 Hz: one sample per ms)."""
import numpy as np

from toolbox import ec57

CLASSES = ["N", "S", "V", "F", "Q"]


def test_a_missed_beat_an_extra_beat_and_a_beat_151_ms_away() -> None:
    ref = np.array([1000, 2000, 3000, 4000, 5000])
    ref_labels = np.array([0, 2, 0, 1, 0])
    # 1000: matched 20 ms late; 2000: matched at 150 ms exactly; 3000: missed; 4000: the detection 151 ms away
    # matches nothing (one missed reference beat, one extra detection); 5000: matched; 6500: extra
    det = np.array([1020, 2150, 4151, 5000, 6500])
    det_labels = np.array([0, 2, 1, 0, 2])
    r, d = ec57.match_beats(ref, det, 150)
    assert r.tolist() == [0, 1, 4] and d.tolist() == [0, 1, 3]
    counts = ec57.compare(ref, ref_labels, det, det_labels, fs=1000, n_classes=5)
    assert counts["missed"].tolist() == [1, 1, 0, 0, 0]  # the N at 3000 and the S at 4000
    assert counts["extra"].tolist() == [0, 1, 1, 0, 0]  # the S at 4151 and the V at 6500
    s = ec57.scores(counts, CLASSES)
    assert s["qrs"] == {"se": 3 / 5, "+p": 3 / 5, "reference": 5, "detected": 5, "missed": 2, "extra": 2}
    assert s["classes"]["V"]["se"] == 1.0 and s["classes"]["V"]["extra"] == 1
    assert s["classes"]["S"]["f1"] is None and s["classes"]["S"]["reference"] == 1 and s["classes"]["S"]["missed"] == 1


def test_closest_pairs_match_first_and_each_beat_once() -> None:
    # two detections near one reference beat: the closer one matches, the other is extra
    r, d = ec57.match_beats(np.array([1000]), np.array([900, 1010]), 150)
    assert r.tolist() == [0] and d.tolist() == [1]
    # one detection between two reference beats goes to the closer one; the other reference beat is missed
    r, d = ec57.match_beats(np.array([1000, 1200]), np.array([1140]), 150)
    assert r.tolist() == [1] and d.tolist() == [0]
    # closest pairs first, even where another pairing would match both: 1110-1100 is 10 ms apart
    r, d = ec57.match_beats(np.array([1000, 1110]), np.array([1100, 1250]), 150)
    assert r.tolist() == [1] and d.tolist() == [0]
    assert ec57.match_beats(np.array([]), np.array([5]), 150)[0].size == 0


def test_class_scores_on_matched_beats_and_gross_counts_sum_records() -> None:
    a = ec57.compare(np.array([100, 400]), np.array([0, 2]), np.array([100, 400]), np.array([0, 0]), 1000, 5)
    b = ec57.compare(np.array([100, 400]), np.array([2, 2]), np.array([101, 399]), np.array([2, 2]), 1000, 5)
    gross = ec57.pool([a, b])
    assert gross["confusion"][2].tolist() == [1, 0, 2, 0, 0]
    s = ec57.scores(gross, CLASSES)
    assert s["qrs"]["se"] == 1.0 and s["qrs"]["+p"] == 1.0
    assert s["classes"]["V"]["se"] == 2 / 3 and s["classes"]["V"]["+p"] == 1.0
    assert s["classes"]["N"]["+p"] == 1 / 2 and abs(s["classes"]["V"]["f1"] - 0.8) < 1e-12


def test_a_beat_labelled_with_an_unscored_class_counts_against_the_scored_ones() -> None:
    # ten V beats, five of them labelled Q: V sensitivity is 5/10, not 5/5
    ref = np.arange(10) * 1000
    counts = ec57.compare(ref, np.full(10, 2), ref, np.array([2] * 5 + [4] * 5), 1000, 5)
    s = ec57.scores(counts, CLASSES)
    assert s["classes"]["V"]["se"] == 0.5 and s["classes"]["V"]["+p"] == 1.0
    assert s["classes"]["F"] == {"se": None, "+p": None, "f1": None, "reference": 0, "detected": 0, "missed": 0,
                                 "extra": 0}  # nothing to count: no score, not 0
