import numpy as np
import pytest
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix,
                             f1_score, recall_score)

from camser.metrics import compute_metrics, pool_segments, summarize_folds

# sklearn warns when y_pred has a class y_true lacks: exactly the case we test.
pytestmark = pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")

LABELS = ["ang", "hap", "neu", "sad"]


def _random(seed, n=200, drop_pred=None):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 4, n)
    p = np.where(rng.random(n) < 0.6, t, rng.integers(0, 4, n))
    if drop_pred is not None:   # a class that is never predicted
        p[p == drop_pred] = (drop_pred + 1) % 4
    return [LABELS[i] for i in t], [LABELS[i] for i in p]


@pytest.mark.parametrize("seed,drop", [(0, None), (1, 2), (2, 0)])
def test_metrics_match_sklearn(seed, drop):
    t, p = _random(seed, drop_pred=drop)
    m = compute_metrics(t, p, LABELS)
    assert m["wa"] == pytest.approx(accuracy_score(t, p))
    assert m["ua"] == pytest.approx(balanced_accuracy_score(t, p))
    assert m["ua"] == pytest.approx(recall_score(t, p, average="macro", zero_division=0))
    assert m["f1_macro"] == pytest.approx(f1_score(t, p, average="macro", zero_division=0))
    assert m["f1_weighted"] == pytest.approx(f1_score(t, p, average="weighted", zero_division=0))
    per_class = recall_score(t, p, labels=LABELS, average=None, zero_division=0)
    assert [m["recall"][k] for k in LABELS] == pytest.approx(per_class)
    assert m["confusion"] == confusion_matrix(t, p, labels=LABELS).tolist()
    assert m["n"] == len(t)
    for k in ("wa", "ua", "f1_macro", "f1_weighted"):
        assert type(m[k]) is float and 0 <= m[k] <= 1
    if drop is not None:
        assert all(row[drop] == 0 for row in m["confusion"])


def test_class_absent_from_truth_and_integer_inputs():
    t = np.array([0, 0, 1, 1, 2])
    p = np.array([0, 3, 1, 0, 2])         # "sad" (3) is predicted but never true
    m = compute_metrics(t, p, LABELS)
    assert m["recall"]["sad"] is None      # undefined, not a fake 0
    assert m["ua"] == pytest.approx(balanced_accuracy_score(t, p))
    assert m["f1_macro"] == pytest.approx(f1_score(t, p, average="macro", zero_division=0))
    assert len(m["confusion"]) == 4 and sum(map(sum, m["confusion"])) == 5


def test_unknown_label_is_an_error():
    with pytest.raises(ValueError, match="xyz"):
        compute_metrics(["ang"], ["xyz"], LABELS)


def test_pool_segments_means_log_probs_in_first_seen_order():
    ids = ["b", "a", "b", "c", "a", "b"]
    lp = np.log(np.array([[.9, .1], [.2, .8], [.5, .5], [.6, .4], [.4, .6], [.1, .9]]))
    utt, pooled = pool_segments(ids, lp)
    assert utt == ["b", "a", "c"]
    assert pooled.shape == (3, 2)
    assert pooled[0] == pytest.approx(lp[[0, 2, 5]].mean(axis=0))
    assert pooled[1] == pytest.approx(lp[[1, 4]].mean(axis=0))
    assert pooled[2] == pytest.approx(lp[3])
    with pytest.raises(ValueError):
        pool_segments(["a"], lp)


def test_summarize_folds():
    folds = [{"wa": 0.5, "ua": 0.4, "f1_macro": 0.3},
             {"wa": 0.7, "ua": 0.6, "f1_macro": 0.5}]
    t, p = ["ang", "hap", "neu", "neu"], ["ang", "hap", "neu", "sad"]
    s = summarize_folds(folds, t, p, LABELS)
    assert s["wa_mean"] == pytest.approx(0.6) and s["wa_std"] == pytest.approx(0.1)  # ddof=0
    assert s["ua_mean"] == pytest.approx(0.5) and s["ua_std"] == pytest.approx(0.1)
    assert s["f1_mean"] == pytest.approx(0.4) and s["f1_std"] == pytest.approx(0.1)
    assert s["wa_pooled"] == pytest.approx(0.75)
    assert s["ua_pooled"] == pytest.approx(balanced_accuracy_score(t, p))
    assert s["f1_pooled"] == pytest.approx(f1_score(t, p, average="macro", zero_division=0))
    assert all(type(v) is float for v in s.values())


def test_seed_summary_gives_per_seed_means_and_their_spread():
    from camser.metrics import seed_summary
    folds = [{"seed": s, "fold": f, "wa": wa, "ua": ua, "f1_macro": ua}
             for s, f, wa, ua in [(1, 1, .5, .4), (1, 2, .7, .6), (2, 1, .6, .6), (2, 2, .8, .8)]]
    out = seed_summary(folds)
    assert out["per_seed"]["1"]["ua"] == pytest.approx(0.5) and out["per_seed"]["2"]["ua"] == pytest.approx(0.7)
    assert out["ua_mean"] == pytest.approx(0.6) and out["ua_std"] == pytest.approx(0.1)
    assert out["per_seed"]["2"]["n_folds"] == 2


def test_paired_comparison():
    from camser.metrics import paired_comparison, unweighted_accuracy
    rng = np.random.default_rng(0)
    t = rng.integers(0, 4, 400)
    good = np.where(rng.random(400) < 0.8, t, (t + 1) % 4)
    bad = np.where(rng.random(400) < 0.5, t, (t + 1) % 4)
    assert unweighted_accuracy(t, good, 4)[0] == pytest.approx(balanced_accuracy_score(t, good))
    same = paired_comparison(t, good, good, 4, n_boot=200)
    assert same["delta_ua"] == 0 and same["p_mcnemar"] == 1.0 and same["ci_low"] == same["ci_high"] == 0
    r = paired_comparison(t, good, bad, 4, n_boot=500)
    assert r["delta_ua"] == pytest.approx(balanced_accuracy_score(t, good) - balanced_accuracy_score(t, bad))
    assert 0 < r["ci_low"] < r["delta_ua"] < r["ci_high"] and r["p_mcnemar"] < 1e-6
    assert r["only_a"] > r["only_b"]
    assert paired_comparison(t, good, bad, 4, n_boot=500) == r        # seeded: same numbers
