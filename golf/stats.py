"""Statistics for the report: mean, sample std, Welch's two-sample t-test and a one-sample t-test.

Lower BPB is better, so every test here is one-sided with H1 "run A is lower":

    Welch:       H0 mean_a >= mean_b - margin    H1 mean_a < mean_b - margin
    one-sample:  H0 mean_a >= ref - margin       H1 mean_a < ref - margin

Welch (1947) does not assume equal variances:

    t  = (m_a - m_b + margin) / sqrt(v_a/n_a + v_b/n_b)                 (v = sample variance, n-1 denominator)
    df = (v_a/n_a + v_b/n_b)^2 / ((v_a/n_a)^2/(n_a-1) + (v_b/n_b)^2/(n_b-1))     (Welch–Satterthwaite)
    p  = P(T_df <= t)

Beside each test: the difference of means d = m_a - m_b (or m_a - ref) with its two-sided 95% confidence
interval d ± q·se, q the 0.975 quantile of T_df and se the standard error in the t above. The interval says
how large the gap is, where p only says whether it is below the margin.

The p-values come from scipy (`ttest_ind(equal_var=False)`, `ttest_1samp`); `welch_t_df` is an independent
implementation of t and df that the tests check against scipy. Cases where a t-test is not defined (fewer
than 2 values on a side, zero variance on both sides) give a TTest whose fields are NaN and whose `note`
says why, never an exception: a 1-seed report is still a report.

The challenge's margin is 0.005 nats of val_loss (mean cross-entropy per token, natural log), see
openai/parameter-golf README, "Submission Process", rule 1. `nats_to_bpb` converts it to BPB units.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass


def mean(xs: Sequence[float]) -> float:
    if not xs:
        return float("nan")
    return math.fsum(xs) / len(xs)


def sample_var(xs: Sequence[float]) -> float:
    """Unbiased variance (n-1 denominator); NaN below 2 values. Two-pass, so no cancellation."""
    if len(xs) < 2:
        return float("nan")
    m = mean(xs)
    return math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1)


def sample_std(xs: Sequence[float]) -> float:
    return math.sqrt(sample_var(xs))


def summarize(xs: Sequence[float]) -> dict:
    """n, mean and sample std of the finite values (NaN values, e.g. a disabled stage, are left out)."""
    vals = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    return {"n": len(vals), "mean": mean(vals), "std": sample_std(vals)}


def welch_t_df(a: Sequence[float], b: Sequence[float], margin: float = 0.0) -> tuple[float, float]:
    """Welch's t for H1 mean(a) < mean(b) - margin, and the Welch–Satterthwaite degrees of freedom.

    Needs >= 2 values per side and a non-zero pooled standard error (ValueError otherwise)."""
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        raise ValueError(f"Welch's t needs at least 2 values per side, got {na} and {nb}")
    ga, gb = sample_var(a) / na, sample_var(b) / nb  # squared standard errors of each mean
    if ga + gb == 0:
        raise ValueError("Welch's t is undefined: both samples have zero variance")
    t = (mean(a) - mean(b) + margin) / math.sqrt(ga + gb)
    df = (ga + gb) ** 2 / (ga ** 2 / (na - 1) + gb ** 2 / (nb - 1))
    return t, df


@dataclass
class TTest:
    """One one-sided test. `p` is P(T <= t) under H0: small when A is lower than B - margin."""

    kind: str          # "welch" or "one_sample"
    n_a: int
    n_b: int           # 1 for a one-sample test (the fixed reference)
    mean_a: float
    mean_b: float      # the reference mean, or the fixed reference value
    margin: float      # in the units of the values (BPB)
    t: float = float("nan")
    df: float = float("nan")
    p: float = float("nan")
    note: str = ""     # why t/df/p are NaN, when they are
    ci_level: float = 0.95
    ci_low: float = float("nan")   # two-sided CI of diff (margin not applied); NaN when the test is not possible
    ci_high: float = float("nan")

    @property
    def ok(self) -> bool:
        return not self.note

    @property
    def diff(self) -> float:
        """mean A - mean B (negative: A is lower, i.e. better)."""
        return self.mean_a - self.mean_b

    @property
    def p_opposite(self) -> float:
        """One-sided p of the opposite H1, mean(a) > mean(b) - margin: P(T_df >= t) = 1 - p."""
        return 1.0 - self.p

    def as_dict(self) -> dict:
        return {**asdict(self), "diff": self.diff, "p_opposite": self.p_opposite}


def _clean(xs: Sequence[float], what: str) -> list[float]:
    vals = [float(x) for x in xs]
    bad = [x for x in vals if not math.isfinite(x)]
    if bad:
        raise ValueError(f"{what}: non-finite value(s) {bad}")
    return vals


def welch_test(a: Sequence[float], b: Sequence[float], margin: float = 0.0) -> TTest:
    """Welch's t-test (scipy.stats.ttest_ind, equal_var=False), one-sided H1 mean(a) < mean(b) - margin."""
    a, b = _clean(a, "sample A"), _clean(b, "sample B")
    res = TTest("welch", len(a), len(b), mean(a), mean(b), margin)
    if len(a) < 2 or len(b) < 2:
        res.note = (f"not possible: Welch's t-test needs at least 2 seeds on each side "
                    f"(got {len(a)} and {len(b)})")
        return res
    if sample_var(a) == 0 and sample_var(b) == 0:
        res.note = "not possible: both samples have zero variance (t is undefined)"
        return res
    from scipy import stats

    # Shift both samples by the same constant (the test is invariant to it): BPBs agree to ~4 digits, and
    # centring them keeps scipy's variance computation far from catastrophic cancellation.
    c = res.mean_b
    with warnings.catch_warnings():  # scipy warns about a side with exactly zero variance; that case is fine
        warnings.simplefilter("ignore", RuntimeWarning)
        r = stats.ttest_ind([x - c for x in a], [x - c - margin for x in b], equal_var=False, alternative="less")
    res.t, res.df, res.p = float(r.statistic), float(r.df), float(r.pvalue)
    _set_ci(res, math.sqrt(sample_var(a) / len(a) + sample_var(b) / len(b)))
    return res


def _set_ci(res: TTest, se: float) -> None:
    """The two-sided res.ci_level interval of res.diff: diff ± t_(df, (1+level)/2) · se."""
    from scipy import stats

    q = float(stats.t.ppf(0.5 + res.ci_level / 2, res.df))
    res.ci_low, res.ci_high = res.diff - q * se, res.diff + q * se


def one_sample_test(a: Sequence[float], reference: float, margin: float = 0.0) -> TTest:
    """One-sample t-test (scipy.stats.ttest_1samp), one-sided H1 mean(a) < reference - margin."""
    a = _clean(a, "sample A")
    res = TTest("one_sample", len(a), 1, mean(a), float(reference), margin)
    if len(a) < 2:
        res.note = f"not possible: a one-sample t-test needs at least 2 seeds (got {len(a)})"
        return res
    if sample_var(a) == 0:
        res.note = "not possible: the seeds' values have zero variance (t is undefined)"
        return res
    from scipy import stats

    c = res.mean_a  # same centring as in welch_test
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = stats.ttest_1samp([x - c for x in a], reference - margin - c, alternative="less")
    res.t, res.df, res.p = float(r.statistic), float(r.df), float(r.pvalue)
    _set_ci(res, math.sqrt(sample_var(a) / len(a)))
    return res


def nats_to_bpb(margin_nats: float, tokens: float, n_bytes: float) -> float:
    """A per-token loss margin in nats as a BPB margin: nats/token / ln 2 = bits/token, x tokens/bytes.

    This is exact when both runs share the tokenizer and validation text: then BPB = val_loss * c with the
    same c = tokens / (bytes ln 2) on both sides, and a t-test is invariant to that scale, so testing BPB with
    margin c * 0.005 is the same test as testing val_loss with margin 0.005 nats."""
    if tokens <= 0 or n_bytes <= 0:
        raise ValueError(f"nats_to_bpb: tokens and bytes must be positive, got {tokens} and {n_bytes}")
    return margin_nats / math.log(2) * tokens / n_bytes
