"""The test behind every verdict of a study: a 95 % confidence interval for a row's
difference from its table's default row, and the verdict it allows.

Two rows measured on the same seeds (each seed fixes the training samples, their order and
the data of the initialisation) are compared *paired*: the interval is Student's t interval
of the per-seed differences, with ``n - 1`` degrees of freedom. Rows whose seeds differ are
compared by *Welch*'s interval (unequal variances, Welch-Satterthwaite degrees of freedom).
A verdict says *agrees* or *disagrees* with the paper only when the interval excludes zero,
*unresolved* otherwise. Only the standard library is used: Student's t distribution comes
from the regularised incomplete beta function, evaluated by its continued fraction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["LEVEL", "incomplete_beta", "t_cdf", "t_quantile", "difference_interval", "verdict", "VERDICTS"]

#: The confidence level of every interval of a study.
LEVEL = 0.95

#: Every verdict a row can get, against a paper's difference or (tables with no paper
#: figures) by the sign alone; ``""`` for the default row itself.
VERDICTS = ("agrees", "disagrees", "unresolved", "higher", "lower", "")


def _beta_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction of ``I_x(a, b)`` (modified Lentz), for ``x < (a + 1) / (a + b + 2)``."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    value = d
    for m in range(1, 500):
        # the even then the odd term of the fraction's m-th pair
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            value *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return value


def incomplete_beta(x: float, a: float, b: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)``.

    Args:
        x: in ``[0, 1]``.
        a: positive.
        b: positive.

    Example:
        >>> round(incomplete_beta(0.5, 2.0, 2.0), 12), round(incomplete_beta(0.3, 1.0, 1.0), 12)
        (0.5, 0.3)
    """
    if not 0.0 <= x <= 1.0 or a <= 0 or b <= 0:
        raise ValueError(f"incomplete_beta: expected 0 <= x <= 1 and a, b > 0; got x={x}, a={a}, b={b}")
    if x in (0.0, 1.0):
        return x
    log_front = a * math.log(x) + b * math.log1p(-x) + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(x, a, b) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(1.0 - x, b, a) / b


def t_cdf(t: float, df: float) -> float:
    """Student's t distribution function with ``df`` (not necessarily whole) degrees of freedom.

    Args:
        t: the statistic.
        df: degrees of freedom, positive.

    Example:
        >>> t_cdf(0.0, 3), round(t_cdf(1.0, 1), 12)
        (0.5, 0.75)
    """
    if df <= 0:
        raise ValueError(f"df: expected a positive number; got {df}")
    tail = 0.5 * incomplete_beta(df / (df + t * t), df / 2.0, 0.5)
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on :func:`t_cdf`).

    Args:
        p: in ``(0, 1)``.
        df: degrees of freedom, positive.

    Example:
        >>> round(t_quantile(0.975, 2), 4), round(t_quantile(0.975, 4), 4), round(t_quantile(0.025, 1e9), 4)
        (4.3027, 2.7764, -1.96)
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p: expected a probability strictly between 0 and 1; got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, 2.0 * high
    for _ in range(200):
        middle = 0.5 * (low + high)
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low < 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


def _mean_var(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def _result(test: str, n: int, estimate: float, se: float, df: float | None, level: float) -> dict[str, Any]:
    if df is None or se == 0.0:
        # no spread at all: the interval is the estimate itself
        half, p = 0.0, (1.0 if estimate == 0 else 0.0)
    else:
        half = t_quantile(0.5 + level / 2.0, df) * se
        p = 2.0 * t_cdf(-abs(estimate) / se, df)
    return {
        "test": test, "n": n, "estimate": round(estimate, 6), "se": round(se, 6),
        "df": None if df is None else round(df, 3), "low": round(estimate - half, 6), "high": round(estimate + half, 6),
        "p": round(p, 4), "level": level,
    }


def difference_interval(row: Mapping[int, float], base: Mapping[int, float], level: float = LEVEL) -> dict[str, Any] | None:
    """The confidence interval of ``mean(row) - mean(base)``.

    Args:
        row: ``{seed: figure}`` of the row.
        base: ``{seed: figure}`` of the default row.
        level: the confidence level.

    Returns:
        ``{"test": "paired" | "welch", "n", "estimate", "se", "df", "low", "high", "p", "level"}``
        (``n``: the pairs, or ``[n_row, n_base]``; ``p``: the two-sided p-value of a zero
        difference), or ``None`` when a row has fewer than two seeds (no spread to test with).
        Paired when both rows hold exactly the same seeds (at least two), Welch otherwise.

    Example:
        >>> interval = difference_interval({0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.4, 1: 0.48, 2: 0.62})
        >>> interval["test"], interval["estimate"], interval["low"], interval["high"], interval["p"]
        ('paired', 0.1, 0.050317, 0.149683, 0.0131)
        >>> difference_interval({0: 0.5, 1: 0.6}, {0: 0.4, 2: 0.5})["test"]
        'welch'
        >>> difference_interval({0: 0.5}, {0: 0.4}) is None
        True
    """
    if len(row) < 2 or len(base) < 2:
        return None
    if set(row) == set(base):
        differences = [row[seed] - base[seed] for seed in sorted(row)]
        mean, variance = _mean_var(differences)
        n = len(differences)
        return _result("paired", n, mean, math.sqrt(variance / n), n - 1, level)
    (m1, v1), (m2, v2) = _mean_var(list(row.values())), _mean_var(list(base.values()))
    n1, n2 = len(row), len(base)
    a, b = v1 / n1, v2 / n2
    df = (a + b) ** 2 / (a * a / (n1 - 1) + b * b / (n2 - 1)) if a + b > 0 else None
    result = _result("welch", n1, m1 - m2, math.sqrt(a + b), df, level)
    result["n"] = [n1, n2]
    return result


def verdict(paper: float | None, interval: Mapping[str, Any] | None, *, is_default: bool = False) -> str:
    """What an interval says about the paper's difference.

    Args:
        paper: the paper's difference (row minus default row), ``None`` when it printed none.
        interval: :func:`difference_interval`'s result (``None``: too few seeds).
        is_default: the row is its table's default row (its verdict is blank).

    Returns:
        ``"agrees"`` / ``"disagrees"`` when the interval excludes zero and has / has not the
        paper's sign; ``"unresolved"`` when it holds zero (or is missing); for a table
        without paper figures ``"higher"`` / ``"lower"`` / ``"unresolved"``; ``""`` for the
        default row. A paper difference of exactly 0 is disagreed with by an interval that
        excludes zero.

    Example:
        >>> verdict(-0.01, {"low": -0.05, "high": -0.01}), verdict(-0.01, {"low": 0.01, "high": 0.05})
        ('agrees', 'disagrees')
        >>> verdict(-0.01, {"low": -0.05, "high": 0.02}), verdict(None, {"low": 0.01, "high": 0.02}), verdict(None, None)
        ('unresolved', 'higher', 'unresolved')
    """
    if is_default:
        return ""
    if interval is None or interval["low"] <= 0.0 <= interval["high"]:
        return "unresolved"
    above = interval["low"] > 0.0
    if paper is None:
        return "higher" if above else "lower"
    if paper == 0:
        return "disagrees"
    return "agrees" if (paper > 0) == above else "disagrees"
