"""Small statistics for reports: mean ± std over seeds and a paired t-test.

The t-test uses ``scipy.stats.ttest_rel`` when SciPy is installed and an exact pure-Python
Student-t tail (regularised incomplete beta function) otherwise; both give the same p-value.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value).

    Args:
        values: at least one number.

    Returns:
        ``(mean, std)``.
    """
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("mean_std needs at least one value")
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny, eps = 1e-300, 3e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b).

    Args:
        a, b: positive shape parameters.
        x: point in [0, 1].

    Returns:
        I_x(a, b) in [0, 1].
    """
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def student_t_two_sided(t: float, df: int) -> float:
    """Two-sided p-value P(|T| >= |t|) of Student's t with ``df`` degrees of freedom."""
    return regularized_beta(df / 2.0, 0.5, df / (df + t * t))


def paired_ttest(
    a: Sequence[float], b: Sequence[float], use_scipy: bool = True
) -> tuple[float, float]:
    """Paired two-sided t-test of ``a`` against ``b`` (e.g. per-seed values of two methods).

    Args:
        a, b: paired samples of equal length >= 2.
        use_scipy: use ``scipy.stats.ttest_rel`` when importable.

    Returns:
        ``(t, p)``. Identical pairs give ``(0, 1)``; a constant non-zero difference gives
        ``(±inf, 0)``.

    Raises:
        ValueError: lengths differ or fewer than two pairs.
    """
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"paired_ttest needs two equal samples of >= 2, got {len(a)}, {len(b)}")
    diffs = [float(x) - float(y) for x, y in zip(a, b)]
    mean, std = mean_std(diffs)
    if std == 0.0:
        return (0.0, 1.0) if mean == 0.0 else (math.copysign(math.inf, mean), 0.0)
    if use_scipy:
        try:
            from scipy.stats import ttest_rel
        except ImportError:
            pass
        else:
            res = ttest_rel(list(map(float, a)), list(map(float, b)))
            return float(res.statistic), float(res.pvalue)
    t = mean / (std / math.sqrt(len(diffs)))
    return t, student_t_two_sided(t, len(diffs) - 1)


__all__ = ["mean_std", "paired_ttest", "regularized_beta", "student_t_two_sided"]
