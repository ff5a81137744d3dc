"""The Student-t confidence interval every verdict in the book uses (the claims ledger's rule,
and a section's own answers), kept in one place so the rule cannot drift between them."""
from __future__ import annotations

import math
from typing import Any


def is_finite(x: Any) -> bool:
    """Whether ``x`` is a number other than NaN / inf (None and non-numbers are not)."""
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def confidence_interval(estimate: float, se: float | None, n: int | None, level: float = 0.95,
                        df: int | None = None) -> tuple[float, float] | None:
    """``estimate ± t(level, df) * se`` with ``df = n - 1`` unless given; None without a noise
    estimate (se not finite or zero, or fewer than two folds / seeds): identical values over
    folds say nothing about the spread, and a zero-width interval would call any sign certain."""
    from scipy.stats import t as student_t
    if not (is_finite(estimate) and is_finite(se) and float(se) > 0):
        return None
    dof = (int(n) - 1) if df is None and n is not None else df
    if dof is None or dof < 1:
        return None
    half = float(student_t.ppf(0.5 + level / 2, dof)) * float(se)
    return float(estimate) - half, float(estimate) + half
