"""Small statistics for reports: mean ± std over seeds and a paired t-test (SciPy)."""

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


def regularized_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b) (``scipy.special.betainc``).

    Args:
        a, b: positive shape parameters.
        x: point in [0, 1] (clipped).

    Returns:
        I_x(a, b) in [0, 1].
    """
    from scipy.special import betainc

    return float(betainc(a, b, min(max(x, 0.0), 1.0)))


def student_t_two_sided(t: float, df: int) -> float:
    """Two-sided p-value P(|T| >= |t|) of Student's t with ``df`` degrees of freedom
    (``2 * scipy.stats.t.sf(|t|, df)``)."""
    from scipy.stats import t as student_t

    return float(min(1.0, 2.0 * student_t.sf(abs(t), df)))


def paired_ttest(
    a: Sequence[float], b: Sequence[float], use_scipy: bool = True
) -> tuple[float, float]:
    """Paired two-sided t-test of ``a`` against ``b`` (e.g. per-seed values of two methods).

    Args:
        a, b: paired samples of equal length >= 2.
        use_scipy: ``True``: ``scipy.stats.ttest_rel``; ``False``: the statistic computed here
            and its tail from ``student_t_two_sided`` (both SciPy; they agree to rounding).

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
        from scipy.stats import ttest_rel

        res = ttest_rel(list(map(float, a)), list(map(float, b)))
        return float(res.statistic), float(res.pvalue)
    t = mean / (std / math.sqrt(len(diffs)))
    return t, student_t_two_sided(t, len(diffs) - 1)


__all__ = ["mean_std", "paired_ttest", "regularized_beta", "student_t_two_sided"]
