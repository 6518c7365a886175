"""Statistics for the report: mean, sample std, Welch's t-test (two-sample) and a one-sample t-test.

Welch (1947): t = (m_a - m_b - delta) / sqrt(s_a²/n_a + s_b²/n_b), with the Welch–Satterthwaite degrees
of freedom df = (s_a²/n_a + s_b²/n_b)² / ((s_a²/n_a)²/(n_a-1) + (s_b²/n_b)²/(n_b-1)). One-sided p is for
H1: mean_a < mean_b - delta (run A is better by more than delta; lower BPB is better).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def sample_std(xs: list[float]) -> float:
    if len(xs) < 2:
        return float("nan")
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


@dataclass
class TTest:
    t: float
    df: float
    p_one_sided: float  # P(T <= t) under H0: small when A is lower than B - delta
    mean_a: float
    mean_b: float
    delta: float
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _t_cdf(t: float, df: float) -> float:
    from scipy import stats

    return float(stats.t.cdf(t, df))


def welch(a: list[float], b: list[float], delta: float = 0.0) -> TTest:
    """H1: mean(a) < mean(b) - delta."""
    na, nb = len(a), len(b)
    ma, mb = mean(a), mean(b)
    if na < 2 or nb < 2:
        return TTest(float("nan"), float("nan"), float("nan"), ma, mb, delta,
                     f"needs at least 2 values per side (got {na} and {nb})")
    va, vb = sample_std(a) ** 2 / na, sample_std(b) ** 2 / nb
    if va + vb == 0:
        return TTest(float("nan"), float("nan"), float("nan"), ma, mb, delta, "both samples have zero variance")
    t = (ma - mb + delta) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
    return TTest(t, df, _t_cdf(t, df), ma, mb, delta)


def one_sample(a: list[float], reference: float, delta: float = 0.0) -> TTest:
    """H1: mean(a) < reference - delta."""
    n, m = len(a), mean(a)
    if n < 2:
        return TTest(float("nan"), float("nan"), float("nan"), m, reference, delta, f"needs at least 2 values (got {n})")
    s = sample_std(a)
    if s == 0:
        return TTest(float("nan"), float("nan"), float("nan"), m, reference, delta, "zero variance")
    t = (m - reference + delta) / (s / math.sqrt(n))
    return TTest(t, n - 1, _t_cdf(t, n - 1), m, reference, delta)


def nats_to_bpb(margin_nats: float, tokens: float, n_bytes: float) -> float:
    """A per-token loss margin (nats) in BPB units: nats/token / ln 2 * tokens/bytes."""
    return margin_nats / math.log(2) * tokens / n_bytes
