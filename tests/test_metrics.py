"""Metrics against hand-computed values (arithmetic in the comments) and against sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from oodbench.errors import OodbenchError
from oodbench.metrics import (
    METRIC_KEYS,
    aupr_in,
    aupr_out,
    auroc,
    bootstrap_metrics,
    bootstrap_replicates,
    compute_all,
    compute_all_odin,
    detection_error,
    fpr95_oodpos,
    fpr_at_tpr,
    id_accuracy,
    odin_fpr_at_tpr95,
    odin_grid,
)

ID4 = [0.9, 0.8, 0.7, 0.6]
OOD3 = [0.65, 0.5, 0.3]


def _sk(id_s, ood_s):
    y = np.r_[np.ones(len(id_s)), np.zeros(len(ood_s))]
    s = np.r_[id_s, ood_s]
    return roc_auc_score(y, s), average_precision_score(y, s), average_precision_score(1 - y, -s)


def test_small_example_by_hand():
    r = compute_all(ID4, OOD3)
    assert set(r) == set(METRIC_KEYS)
    # pairs id > ood: 0.9, 0.8, 0.7 beat all 3; 0.6 beats 0.5, 0.3 -> (3+3+3+2)/12
    assert r["auroc"] == pytest.approx(11 / 12, abs=1e-12)
    # descending: 0.9 I, 0.8 I, 0.7 I, 0.65 O, 0.6 I -> precisions at ID hits 1, 1, 1, 4/5; AP = 3.8/4
    assert r["aupr_in"] == pytest.approx(0.95, abs=1e-12)
    # ascending (OOD positive, -s): 0.3 O, 0.5 O, 0.6 I, 0.65 O -> precisions 1, 1, 3/4; AP = 2.75/3
    assert r["aupr_out"] == pytest.approx(11 / 12, abs=1e-12)
    # accept s >= 0.7: 0.5 * (1/4 ID rejected) + 0.5 * (0 OOD accepted) = 1/8 (best; s >= 0.6 gives 1/6)
    assert r["detection_error"] == pytest.approx(1 / 8, abs=1e-12)
    # ID positive: k = ceil(0.95 * 4) = 4 -> t = 0.6; OOD >= 0.6 is {0.65} -> 1/3
    assert r["fpr95"] == pytest.approx(1 / 3, abs=1e-12)
    # OOD positive: k = ceil(0.95 * 3) = 3 -> t = 0.65 (3rd smallest OOD); ID <= 0.65 is {0.6} -> 1/4
    assert r["fpr95_oodpos"] == pytest.approx(1 / 4, abs=1e-12)
    assert r["fpr95"] != r["fpr95_oodpos"]
    assert (auroc(ID4, OOD3), aupr_in(ID4, OOD3), aupr_out(ID4, OOD3)) == pytest.approx(_sk(ID4, OOD3))
    assert detection_error(ID4, OOD3) == r["detection_error"]
    assert fpr_at_tpr(ID4, OOD3) == r["fpr95"] and fpr95_oodpos(ID4, OOD3) == r["fpr95_oodpos"]


def test_fpr95_twenty_id_with_tie_at_threshold():
    ids = np.arange(1, 21) / 100  # 0.01 .. 0.20
    ood = [0.005, 0.015, 0.02, 0.025, 0.5]
    # k = 0.95 * 20 = 19 -> t = 19th largest ID = 0.02; OOD >= 0.02: {0.02 (tie, accepted), 0.025, 0.5}
    assert fpr_at_tpr(ids, ood) == pytest.approx(3 / 5)
    # OE's fpr_and_fdr_at_recall: recall 19/20 also holds at the lower pooled value 0.015 (an OOD score),
    # and it takes the lowest such threshold -> OOD >= 0.015 = 4 of 5
    assert fpr_at_tpr(ids, ood, rule="nearest") == pytest.approx(4 / 5)
    # 90 %: k = 18 -> t = 0.03; no OOD in [0.03, 0.5) except 0.5 -> 1/5
    assert fpr_at_tpr(ids, ood, tpr=0.9) == pytest.approx(1 / 5)


def test_ties_and_constant_scores():
    # pairs: (1 vs 1) tie 1/2, (1 vs 0) win, twice -> (0.5 + 1 + 0.5 + 1) / 4
    assert auroc([1.0, 1.0], [1.0, 0.0]) == pytest.approx(3 / 4)
    r = compute_all([0.5] * 3, [0.5] * 4)
    assert r["auroc"] == 0.5 and r["fpr95"] == 1.0 and r["fpr95_oodpos"] == 1.0
    assert r["detection_error"] == 0.5
    assert r["aupr_in"] == pytest.approx(3 / 7) and r["aupr_out"] == pytest.approx(4 / 7)


def test_perfect_separation():
    r = compute_all([3.0, 4.0, 5.0], [0.0, 1.0])
    assert r == {"fpr95": 0.0, "fpr95_oodpos": 0.0, "auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0,
                 "detection_error": 0.0}


def test_against_sklearn_and_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(25):
        n, m = rng.integers(1, 50, 2)
        ids, ood = np.round(rng.normal(1, 1, n), 1), np.round(rng.normal(0, 1, m), 1)  # many ties
        r = compute_all(ids, ood)
        assert (r["auroc"], r["aupr_in"], r["aupr_out"]) == pytest.approx(_sk(ids, ood), abs=1e-12)
        thresholds = np.r_[np.unique(np.r_[ids, ood]), np.inf]
        brute = min(0.5 * np.mean(ids < t) + 0.5 * np.mean(ood >= t) for t in thresholds)
        assert r["detection_error"] == pytest.approx(brute, abs=1e-12)
        t = max(t for t in thresholds if np.mean(ids >= t) >= 0.95)
        assert r["fpr95"] == np.mean(ood >= t)
        assert r["fpr95_oodpos"] == fpr_at_tpr(-ood, -ids)  # OpenOOD's = roles and sign swapped


def test_validation_errors_are_one_line():
    ood = np.r_[np.full(12, np.nan), np.zeros(5)]
    with pytest.raises(OodbenchError, match=r"detector 'msp' produced 12 NaN scores on OOD set 'svhn'") as e:
        compute_all([0.1, 0.2], ood, detector="msp", dataset="svhn")
    assert "\n" not in str(e.value)
    with pytest.raises(OodbenchError, match=r"1 NaN and 2 inf scores on ID set 'cifar10'"):
        compute_all([np.nan, np.inf, -np.inf, 1.0], [0.0], id_dataset="cifar10")
    with pytest.raises(OodbenchError, match="no scores"):
        auroc([], [0.1])
    with pytest.raises(OodbenchError, match="no scores"):
        compute_all_odin([0.1], [])
    with pytest.raises(OodbenchError, match="one prediction per label"):
        id_accuracy([0, 1], [0, 1, 1])


def test_id_accuracy():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])  # argmax 0, 1, 0 vs labels 0, 1, 1 -> 2/3
    assert id_accuracy(logits, [0, 1, 1]) == pytest.approx(2 / 3)
    assert id_accuracy(np.array([3, 1, 2, 0]), np.array([3, 1, 0, 0])) == 0.75


# ---------------------------------------------------------------- ODIN protocol (calMetric.py)

def test_odin_grid_constants_and_fallback():
    assert odin_grid(10, 1) == (0.1, 1.0) and odin_grid(100, 1) == (0.01, 1.0)
    assert odin_grid(10, 1000) == (0.1, 0.12) and odin_grid(100, 1000) == (0.01, 0.0104)
    assert odin_grid(1000, 1, [0.2, 0.7], [-1.0, 0.5]) == (-1.0, 0.7)
    with pytest.raises(OodbenchError, match="no threshold grid"):
        odin_grid(1000, 1)


def test_odin_fpr_averages_over_tpr_window():
    # grid deltas i * 1e-5; scores sit half-way between grid points so no boundary is ambiguous
    ids = [0.200005] + [0.800005] * 19
    ood = [0.300005, 0.500005, 0.900005]
    # TPR = P(id >= d) = 19/20 = 0.95 for d in (0.200005, 0.800005]: i = 20001 .. 80000 (60,000 deltas)
    #   i = 20001..30000 (10,000): P(ood > d) = 3/3;  30001..50000 (20,000): 2/3;  50001..80000 (30,000): 1/3
    #   mean = (1 * 1 + 2 * 2/3 + 3 * 1/3) / 6 = (10/3) / 6 = 5/9
    fpr, fell_back = odin_fpr_at_tpr95(ids, ood, 0.0, 1.0)
    assert fpr == pytest.approx(5 / 9, abs=1e-12) and not fell_back
    assert fpr_at_tpr(ids, ood) == pytest.approx(1 / 3)  # exact: OOD >= 0.800005


def test_odin_fpr_fallback_flag():
    ids = np.arange(1, 8) / 10  # n = 7: TPR levels k/7 never in [0.9495, 0.9505]
    ood = [0.05, 0.35]
    fpr, fell_back = odin_fpr_at_tpr95(ids, ood, 0.0, 1.0)
    # exact: k = ceil(0.95 * 7) = 7 -> t = 0.1; OOD >= 0.1 = {0.35} -> 1/2
    assert fell_back and fpr == pytest.approx(1 / 2)
    r = compute_all_odin(ids, ood, 0.0, 1.0)
    assert r["fpr95_fallback"] is True and r["fpr95"] == pytest.approx(1 / 2)


def test_odin_curves_by_hand():
    r = compute_all_odin([0.600005, 0.800005], [0.700005], 0.0, 1.0)
    # AUROC: fpr = P(ood > d) falls 1 -> 0 at 0.700005 while tpr = P(id >= d) = 1/2: (1 - 0) * 1/2
    assert r["auroc"] == pytest.approx(1 / 2, abs=1e-12)
    # AUPR-in (rates): d <= .6: tp 1, fp 1, P 1/2, term 0; (.6,.7]: tp 1/2, fp 1, P 1/3, term (1-1/2)/3;
    #   (.7,.8]: tp 1/2, fp 0, P 1, term 0; above: skipped; + final recall*P = 1/2 -> 1/6 + 1/2 = 2/3
    assert r["aupr_in"] == pytest.approx(2 / 3, abs=1e-12)
    # AUPR-out, d downward: (.8,1): tp 1, fp 1; (.7,.8]: tp 1, fp 1/2; (.6,.7]: tp 0, fp 1/2, P 0,
    #   term (1 - 0) * 0; d <= .6: stop; final 0 * 0 -> 0 (sklearn's AP-out would be 1/2)
    assert r["aupr_out"] == pytest.approx(0.0, abs=1e-12)
    # detection: d in (.7,.8]: 0.5 * P(id < d) + 0.5 * P(ood > d) = 0.5 * 1/2 + 0 = 1/4
    assert r["detection_error"] == pytest.approx(1 / 4, abs=1e-12)
    assert compute_all_odin([0.75], [0.25], 0.0, 1.0)["auroc"] == pytest.approx(1.0)
    assert compute_all_odin([0.25], [0.75], 0.0, 1.0)["auroc"] == pytest.approx(0.0)


def _odin_loops(x, y, start, end, steps):
    """Plain per-threshold loops following calMetric.py's definitions (see odin_protocol docstring)."""
    gap = (end - start) / steps
    up, down = np.arange(start, end, gap), np.arange(end, start, -gap)
    det = min([1.0] + [(np.mean(x < d) + np.mean(y > d)) / 2 for d in up])
    auc, f_prev = 0.0, 1.0
    for d in up:
        t, f = np.mean(x >= d), np.mean(y > d)
        auc, f_prev = auc + (f_prev - f) * t, f
    auc += f * t

    def aupr(pairs):
        total, r_prev, r, p = 0.0, 1.0, 0.0, 0.0
        for tp, fp in pairs:
            r, p = tp, tp / (tp + fp)
            total, r_prev = total + (r_prev - r) * p, r
        return total + r * p

    a_in = aupr((np.mean(x >= d), np.mean(y >= d)) for d in up if np.mean(x >= d) + np.mean(y >= d) > 0)
    pairs_out = []
    for d in down:
        if np.mean(y < d) + np.mean(x < d) == 0:
            break
        pairs_out.append((np.mean(y < d), np.mean(x < d)))
    return {"detection_error": det, "auroc": auc, "aupr_in": a_in, "aupr_out": aupr(pairs_out)}


def test_odin_vectorised_matches_loops():
    rng = np.random.default_rng(1)
    for start, end in [(0.1, 1.0), (None, None)]:
        x, y = rng.beta(5, 2, 120), np.round(rng.beta(2, 3, 80), 2)
        s, e = (start, end) if start is not None else (min(x.min(), y.min()), max(x.max(), y.max()))
        ref, got = _odin_loops(x, y, s, e, 500), compute_all_odin(x, y, start, end, steps=500)
        for k, v in ref.items():
            assert got[k] == pytest.approx(v, abs=1e-12), k


def test_odin_close_to_exact_on_fine_grid():
    rng = np.random.default_rng(2)
    x, y = rng.normal(1, 1, 2000), rng.normal(0, 1, 2000)
    r, exact = compute_all_odin(x, y), compute_all(x, y)
    assert r["auroc"] == pytest.approx(exact["auroc"], abs=1e-3)
    assert r["detection_error"] == pytest.approx(exact["detection_error"], abs=1e-3)
    assert r["fpr95"] == pytest.approx(exact["fpr95"], abs=5e-3) and not r["fpr95_fallback"]
    assert r["fpr95_oodpos"] == exact["fpr95_oodpos"]


# ---------------------------------------------------------------- bootstrap

def test_bootstrap_deterministic_and_matches_generic_path():
    rng = np.random.default_rng(3)
    x, y = rng.normal(1, 1, 300), np.round(rng.normal(0, 1, 500), 1)
    a, b = bootstrap_metrics(x, y, n_boot=50, seed=7), bootstrap_metrics(x, y, n_boot=50, seed=7)
    assert a == b and set(a) == set(METRIC_KEYS)
    assert bootstrap_metrics(x, y, n_boot=50, seed=8) != a
    for std, lo, hi in a.values():
        assert std >= 0 and lo <= hi
    fast = bootstrap_replicates(x, y, n_boot=20, seed=1)
    slow = bootstrap_replicates(x, y, lambda i, o: compute_all(i, o), n_boot=20, seed=1)
    for k in METRIC_KEYS:
        np.testing.assert_allclose(fast[k], slow[k], atol=1e-12)


def test_bootstrap_generic_metric_fn_skips_flags():
    rng = np.random.default_rng(4)
    res = bootstrap_metrics(rng.random(60), rng.random(40) - 0.3, compute_all_odin, n_boot=3)
    assert "fpr95_fallback" not in res and "auroc" in res


def test_bootstrap_std_shrinks_with_n():
    rng = np.random.default_rng(5)
    small = bootstrap_metrics(rng.normal(1, 1, 100), rng.normal(0, 1, 100), n_boot=200)
    big = bootstrap_metrics(rng.normal(1, 1, 4000), rng.normal(0, 1, 4000), n_boot=200)
    for k in ("auroc", "fpr95", "detection_error"):  # ~ 1/sqrt(n): 40x data -> ~6x smaller std
        assert big[k][0] < small[k][0] / 3, k


def test_paired_bootstrap_delta_interval_and_p():
    from oodbench.metrics import bootstrap_metrics, compute_all, paired_bootstrap

    rng = np.random.default_rng(0)
    ids, oods = rng.normal(1.0, 1.0, 800), rng.normal(0.0, 1.0, 900)
    same = paired_bootstrap((ids, oods), (ids, oods), n_boot=200)
    assert same["auroc"] == {"delta": 0.0, "lo": 0.0, "hi": 0.0, "p": 1.0}
    better = paired_bootstrap((ids + 0.3, oods), (ids, oods), n_boot=200)
    want = compute_all(ids + 0.3, oods)["auroc"] - compute_all(ids, oods)["auroc"]
    assert better["auroc"]["delta"] == pytest.approx(want) and better["auroc"]["lo"] > 0
    assert better["auroc"]["p"] == pytest.approx(2 / 201)  # no resample on the far side of 0: the smallest p
    assert better["fpr95"]["delta"] < 0 and better["fpr95"]["hi"] < 0
    # pairing: a near-copy differs by far less than either AUROC's own bootstrap σ, and the interval shows it
    near = paired_bootstrap((ids + rng.normal(0, 0.05, 800), oods), (ids, oods), n_boot=200)["auroc"]
    sigma = bootstrap_metrics(ids, oods, n_boot=200)["auroc"][0]
    assert near["hi"] - near["lo"] < sigma and near["lo"] <= near["delta"] <= near["hi"]
    with pytest.raises(OodbenchError, match="paired comparison needs the same images: 800\\+900 vs 799\\+900"):
        paired_bootstrap((ids, oods), (ids[:-1], oods))
