"""golf.stats against values worked by hand (closed forms of the t CDF for df = 2 and df = 4) and against scipy.

Student-t CDF closed forms used below, with x = t / sqrt(df + t^2):
    df = 2:  F(t) = 1/2 + x/2
    df = 4:  F(t) = 1/2 + (x/2) (1 + (1 - x^2)/2)
"""

import math
import random

import pytest
from scipy import stats as sps

from golf.stats import (
    mean,
    nats_to_bpb,
    one_sample_test,
    sample_std,
    sample_var,
    summarize,
    welch_t_df,
    welch_test,
)


def test_mean_and_sample_variance_by_hand():
    # [2, 4, 6, 8]: mean 5; squared deviations 9 + 1 + 1 + 9 = 20; variance 20 / (4 - 1) = 20/3
    assert mean([2.0, 4.0, 6.0, 8.0]) == 5.0
    assert sample_var([2.0, 4.0, 6.0, 8.0]) == pytest.approx(20 / 3)
    assert sample_std([1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert math.isnan(sample_std([1.0])) and math.isnan(mean([]))
    s = summarize([1.0, float("nan"), 3.0])  # a disabled stage's NaN is left out, not averaged in
    assert s == {"n": 2, "mean": 2.0, "std": pytest.approx(math.sqrt(2))}


def test_welch_unequal_sizes_by_hand():
    a, b = [1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0]
    # var a = 1, var b = 20/3; squared standard errors 1/3 and (20/3)/4 = 5/3, sum 2
    # t = (2 - 5) / sqrt(2) = -2.12132
    # df = 2^2 / ((1/3)^2 / 2 + (5/3)^2 / 3) = 4 / (1/18 + 25/27) = 4 / (53/54) = 216/53 = 4.07547
    t, df = welch_t_df(a, b)
    assert t == pytest.approx(-3 / math.sqrt(2), rel=1e-12)
    assert df == pytest.approx(216 / 53, rel=1e-12)
    r = welch_test(a, b)
    assert r.ok and r.t == pytest.approx(t, rel=1e-12) and r.df == pytest.approx(df, rel=1e-12)
    assert r.p == pytest.approx(sps.t.cdf(t, df), rel=1e-9)
    assert (r.mean_a, r.mean_b, r.n_a, r.n_b) == (2.0, 5.0, 3, 4)


def test_welch_equal_variances_df4_p_by_hand():
    a, b = [1.0, 2.0, 3.0], [3.0, 4.0, 5.0]
    # both variances 1, n = 3: se^2 = 1/3 + 1/3 = 2/3; t = (2 - 4) / sqrt(2/3) = -sqrt(6)
    # df = (2/3)^2 / (2 * (1/3)^2 / 2) = 4
    # x = -sqrt(6)/sqrt(10), 1 - x^2 = 0.4: p = 1/2 + (x/2)(1 + 0.2) = 0.5 - 0.6 sqrt(0.6) = 0.0352419
    r = welch_test(a, b)
    assert r.t == pytest.approx(-math.sqrt(6), rel=1e-12) and r.df == pytest.approx(4.0, rel=1e-12)
    assert r.p == pytest.approx(0.5 - 0.6 * math.sqrt(0.6), rel=1e-9)
    # margin 0.5 (H1: mean a < mean b - 0.5): t = (2 - 4 + 0.5) / sqrt(2/3) = -1.5 sqrt(1.5), t^2 = 3.375
    # x^2 = 3.375 / 7.375, 1 - x^2 = 4 / 7.375: p = 1/2 + (x/2)(1 + 2/7.375) = 0.0700343
    m = welch_test(a, b, margin=0.5)
    x = -math.sqrt(3.375 / 7.375)
    assert m.t == pytest.approx(-1.5 * math.sqrt(1.5), rel=1e-12) and m.margin == 0.5
    assert m.p == pytest.approx(0.5 + x / 2 * (1 + 2 / 7.375), rel=1e-9)
    assert m.p > r.p  # demanding a margin can only make the evidence weaker


def test_welch_one_side_zero_variance_by_hand():
    # a has zero variance, b = [2, 3, 4] has variance 1: se^2 = 1/3, t = (1 - 3) / sqrt(1/3) = -2 sqrt(3)
    # df = (1/3)^2 / ((1/3)^2 / 2) = 2, so p = 1/2 + x/2 with x = t / sqrt(2 + 12) = -0.9258201
    r = welch_test([1.0, 1.0, 1.0], [2.0, 3.0, 4.0])
    assert r.t == pytest.approx(-2 * math.sqrt(3), rel=1e-12) and r.df == pytest.approx(2.0, rel=1e-12)
    assert r.p == pytest.approx(0.5 - math.sqrt(12 / 14) / 2, rel=1e-9)


def test_own_welch_matches_scipy_on_random_samples():
    rng = random.Random(0)
    for _ in range(50):
        na, nb = rng.randint(2, 8), rng.randint(2, 8)
        a = [1.2 + rng.gauss(0, rng.uniform(1e-4, 1e-2)) for _ in range(na)]
        b = [1.2 + rng.gauss(0, rng.uniform(1e-4, 1e-2)) for _ in range(nb)]
        margin = rng.choice([0.0, 0.003])
        t, df = welch_t_df(a, b, margin)
        ref = sps.ttest_ind(a, [x - margin for x in b], equal_var=False, alternative="less")
        assert t == pytest.approx(float(ref.statistic), rel=1e-7)
        assert df == pytest.approx(float(ref.df), rel=1e-7)
        r = welch_test(a, b, margin)
        assert r.t == pytest.approx(t, rel=1e-7) and r.p == pytest.approx(float(ref.pvalue), rel=1e-6, abs=1e-12)


def test_difference_and_its_confidence_interval_by_hand_and_against_scipy():
    # a = [1, 2, 3], b = [3, 4, 5]: diff -2, se sqrt(2/3), df 4; t_(4, 0.975) = 2.7764451 (tables)
    r = welch_test([1.0, 2.0, 3.0], [3.0, 4.0, 5.0])
    half = 2.7764451052 * math.sqrt(2 / 3)
    assert r.diff == -2.0 and r.ci_level == 0.95
    assert (r.ci_low, r.ci_high) == (pytest.approx(-2 - half, rel=1e-9), pytest.approx(-2 + half, rel=1e-9))
    assert r.p_opposite == pytest.approx(1 - (0.5 - 0.6 * math.sqrt(0.6)), rel=1e-9)  # H1 "a is higher"
    assert r.as_dict()["diff"] == -2.0 and r.as_dict()["p_opposite"] == pytest.approx(r.p_opposite)
    # one-sample, [1, 2, 3] vs 3: diff -1, se sqrt(1/3), df 2; t_(2, 0.975) = 4.3026527 (tables)
    o = one_sample_test([1.0, 2.0, 3.0], 3.0)
    half = 4.3026527297 * math.sqrt(1 / 3)
    assert o.diff == -1.0 and (o.ci_low, o.ci_high) == (pytest.approx(-1 - half), pytest.approx(-1 + half))
    # random BPB-like samples: scipy's own two-sided intervals (the margin does not move the interval)
    rng = random.Random(3)
    for _ in range(20):
        a = [1.37 + rng.gauss(0, 0.01) for _ in range(rng.randint(2, 6))]
        b = [1.39 + rng.gauss(0, 0.02) for _ in range(rng.randint(2, 6))]
        ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
        for margin in (0.0, 0.003):
            w = welch_test(a, b, margin)
            assert (w.ci_low, w.ci_high) == (pytest.approx(ci.low, abs=1e-9), pytest.approx(ci.high, abs=1e-9))
        ci1 = sps.ttest_1samp(a, 1.38).confidence_interval(0.95)  # of the mean: shift by the reference
        o = one_sample_test(a, 1.38)
        assert (o.ci_low, o.ci_high) == (pytest.approx(ci1.low - 1.38, abs=1e-9), pytest.approx(ci1.high - 1.38, abs=1e-9))


def test_tests_that_are_not_possible_have_no_interval():
    r = welch_test([1.1], [1.2, 1.3])
    assert not r.ok and math.isnan(r.ci_low) and math.isnan(r.ci_high)


def test_one_sample_df2_p_by_hand():
    # [1, 2, 3] vs 3: t = (2 - 3) / (1 / sqrt 3) = -sqrt 3, df = 2
    # x = -sqrt(3) / sqrt(5): p = 1/2 - sqrt(3/5)/2 = 0.1127017
    r = one_sample_test([1.0, 2.0, 3.0], 3.0)
    assert r.kind == "one_sample" and r.t == pytest.approx(-math.sqrt(3), rel=1e-12) and r.df == 2
    assert r.p == pytest.approx(0.5 - math.sqrt(0.6) / 2, rel=1e-9)
    m = one_sample_test([1.0, 2.0, 3.0], 3.0, margin=1.0)  # H1: mean < 2: t = 0, p = 1/2
    assert m.t == pytest.approx(0.0, abs=1e-12) and m.p == pytest.approx(0.5)


def test_tests_that_are_not_possible_say_so():
    one_seed = welch_test([1.1], [1.2, 1.3])
    assert not one_seed.ok and "at least 2 seeds" in one_seed.note and "got 1 and 2" in one_seed.note
    assert math.isnan(one_seed.t) and math.isnan(one_seed.p) and one_seed.mean_a == 1.1
    assert "at least 2" in one_sample_test([1.1], 1.2).note
    flat = welch_test([1.0, 1.0], [2.0, 2.0])
    assert "zero variance" in flat.note and math.isnan(flat.p)
    assert "zero variance" in one_sample_test([1.0, 1.0, 1.0], 2.0).note
    with pytest.raises(ValueError, match="non-finite"):
        welch_test([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least 2"):
        welch_t_df([1.0], [1.0, 2.0])


def test_nats_to_bpb_and_the_equivalence_it_relies_on():
    # 0.005 nats/token = 0.005/ln2 bits/token; at 100 tokens per 250 bytes: x 0.4 = 0.0028854 bits/byte
    assert nats_to_bpb(0.005, 100, 250) == pytest.approx(0.005 / math.log(2) * 0.4, rel=1e-12)
    assert nats_to_bpb(0.005, 100, 250) == pytest.approx(0.0028854, abs=1e-7)
    # Same tokenizer and text on both sides: BPB = loss * c, and the BPB test with margin c*m is the loss test
    # with margin m (t is scale invariant).
    loss_a, loss_b = [2.01, 2.02, 2.015], [2.03, 2.035, 2.028]
    c = 100 / (250 * math.log(2))
    on_loss = welch_test(loss_a, loss_b, margin=0.005)
    on_bpb = welch_test([x * c for x in loss_a], [x * c for x in loss_b], margin=nats_to_bpb(0.005, 100, 250))
    assert on_bpb.t == pytest.approx(on_loss.t, rel=1e-9) and on_bpb.p == pytest.approx(on_loss.p, rel=1e-9)
    with pytest.raises(ValueError, match="positive"):
        nats_to_bpb(0.005, 100, 0)
