import math

import pytest
from scipy import stats as sps

from golf.stats import mean, nats_to_bpb, one_sample, sample_std, welch


def test_welch_against_hand_computed_values():
    a, b = [1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0]
    # by hand: mean a = 2, var a = 1; mean b = 5, var b = 20/3
    # se² = 1/3 + (20/3)/4 = 1/3 + 5/3 = 2; t = (2 - 5)/sqrt(2) = -2.12132
    # df = 2² / ((1/3)²/2 + (5/3)²/3) = 4 / (1/18 + 25/27) = 4 / (53/54) = 4.07547
    r = welch(a, b)
    assert mean(a) == 2 and sample_std(b) ** 2 == pytest.approx(20 / 3)
    assert r.t == pytest.approx(-3 / math.sqrt(2))
    assert r.df == pytest.approx(216 / 53)
    assert r.p_one_sided == pytest.approx(sps.t.cdf(-3 / math.sqrt(2), 216 / 53))
    ref = sps.ttest_ind(a, b, equal_var=False, alternative="less")
    assert r.t == pytest.approx(ref.statistic) and r.p_one_sided == pytest.approx(ref.pvalue)


def test_margin_shifts_the_statistic():
    a, b = [1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0]
    r = welch(a, b, delta=1.0)  # H1: mean a < mean b - 1  → t = (2 - 5 + 1)/sqrt(2)
    assert r.t == pytest.approx(-2 / math.sqrt(2)) and r.p_one_sided > welch(a, b).p_one_sided


def test_one_sample_and_edge_cases():
    r = one_sample([1.0, 2.0, 3.0], 3.0)  # t = (2 - 3) / (1/sqrt 3)
    assert r.t == pytest.approx(-math.sqrt(3)) and r.df == 2
    assert r.p_one_sided == pytest.approx(sps.ttest_1samp([1, 2, 3], 3.0, alternative="less").pvalue)
    assert "at least 2" in welch([1.0], [1.0, 2.0]).note and math.isnan(welch([1.0], [1.0, 2.0]).t)
    assert "zero variance" in welch([1.0, 1.0], [2.0, 2.0]).note


def test_nats_to_bpb():
    # 0.005 nats/token at 2.5 bytes/token: 0.005 / ln2 / 2.5
    assert nats_to_bpb(0.005, 100, 250) == pytest.approx(0.005 / math.log(2) / 2.5)
