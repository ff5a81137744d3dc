"""Small plotting helpers that make every figure of the book readable on its own.

Presentation only: nothing here computes a result. The conventions they enforce:

* a title that asks the question the figure tests and names its source
  (:func:`question_title`);
* the papers' published values drawn as hollow markers or dashed lines whose legend entry
  says "paper" (:func:`paper_marks`, :func:`paper_line`, :func:`paper_fit`); the values
  come from the studies' ``PAPER_*`` / ``PUBLISHED_*`` constants, never typed in here;
* a line that says what the error bars are (:func:`spread_note`);
* tables with 2-3 significant digits (:func:`sig`, :func:`sig_table`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

#: how the papers' values are drawn: hollow markers (this build's points are filled)
PAPER_MARKER = {"marker": "D", "markerfacecolor": "none", "markeredgewidth": 1.6,
                "markersize": 8, "linestyle": "none"}
PAPER_LINE = {"linestyle": "--", "linewidth": 1.2}


def _paper_label(label: str) -> str:
    """Legend text that always names the paper (prefixes 'paper: ' when it does not)."""
    return label if "paper" in label.lower() else f"paper: {label}"


def paper_marks(ax, x, y, *, label: str = "paper", color="k", **kw):
    """Draw published values at (x, y) as hollow markers with a 'paper' legend entry.

    ``x`` and ``y`` are scalars or equal-length sequences; non-finite points are skipped.
    Returns the Line2D (None when no point is finite)."""
    x, y = np.atleast_1d(np.asarray(x, dtype=float)), np.atleast_1d(np.asarray(y, dtype=float))
    if x.shape != y.shape:
        raise ValueError(f"paper_marks: x and y differ in shape ({x.shape} vs {y.shape})")
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return None
    style = {**PAPER_MARKER, "color": color, "zorder": 5, **kw}
    (line,) = ax.plot(x[ok], y[ok], label=_paper_label(label), **style)
    return line


def paper_line(ax, *, y: float | None = None, x: float | None = None, label: str = "paper",
               color="k", **kw):
    """A published value as a dashed horizontal (``y=``) or vertical (``x=``) line."""
    if (y is None) == (x is None):
        raise ValueError("paper_line: give exactly one of x= or y=")
    style = {**PAPER_LINE, "color": color, **kw}
    draw = ax.axhline if y is not None else ax.axvline
    return draw(y if y is not None else x, label=_paper_label(label), **style)


def paper_fit(ax, slope: float, intercept: float, xs: Sequence[float], *,
              label: str = "paper's fit", color="k", **kw):
    """A published linear fit y = slope * x + intercept, dashed, over the range of ``xs``."""
    xs = np.asarray(xs, dtype=float)
    xs = xs[np.isfinite(xs)]
    lo, hi = float(xs.min()), float(xs.max())
    style = {**PAPER_LINE, "color": color, **kw}
    (line,) = ax.plot([lo, hi], [slope * lo + intercept, slope * hi + intercept],
                      label=_paper_label(label), **style)
    return line


def spread_note(n: int, unit: str = "folds", what: str = "±1 s.d.", drawn: str = "bars") -> str:
    """'bars: ±1 s.d. over 3 folds', or why there are none ('bars: none, one fold')."""
    n = int(n)
    if n < 2:
        return f"{drawn}: none, one {unit.rstrip('s')} (no spread to show)"
    return f"{drawn}: {what} over {n} {unit}"


def question_title(ax, question: str, source: str | None = None, note: str | None = None,
                   **kw) -> str:
    """Set a title that asks what the figure tests, with its source and a second line
    (usually :func:`spread_note`); returns the text."""
    text = question + (f" ({source})" if source else "") + (f"\n{note}" if note else "")
    ax.set_title(text, **{"fontsize": 9, **kw})
    return text


def binomial_se(p, n):
    """Standard error of a proportion ``p`` measured on ``n`` items (NaN where n == 0)."""
    p, n = np.asarray(p, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.sqrt(np.clip(p * (1 - p), 0, None) / n), np.nan)


def sig(value, digits: int = 3, na: str = "n/a") -> str:
    """A number with ``digits`` significant digits for tables (``na`` for NaN / None; integers
    and numbers with more integer digits are shown whole); any other value (a note, a label)
    is returned as text unchanged."""
    if value is None:
        return na
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"  # counts stay exact
    if not np.isfinite(value):
        return na
    if abs(value) >= 10 ** digits:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def sig_table(frame, caption: str | None = None, hide_index: bool = False):
    """``frame`` styled for reading: values and row labels through :func:`sig` (3 significant
    digits, counts whole, NaN as n/a), with ``caption``; ``hide_index`` drops a 0..n index."""
    styled = frame.style.format(sig).format_index(sig, axis=0)
    if caption:
        styled = styled.set_caption(caption)
    return styled.hide(axis="index") if hide_index else styled


def legend_unique(ax, **kw):
    """A legend with each label once (loops over architectures repeat them)."""
    handles, labels = ax.get_legend_handles_labels()
    seen: dict[str, object] = {}
    for h, lab in zip(handles, labels):
        seen.setdefault(lab, h)
    return ax.legend(list(seen.values()), list(seen), **{"fontsize": 8, **kw})


#: What a section says instead of an empty held-out-curve figure and table.
NO_HELDOUT_CURVES = ("no per-epoch held-out curves recorded (profile parameter "
                     "heldout_per_epoch is off, or the runs were cached without it)")


def heldout_curves(ax, frame, by: Sequence[str]) -> int:
    """Mean held-out CE vs humans per epoch (a line per ``by`` group, a band of ±1 s.d. over
    folds) from :func:`softlib.studies.peterson.heldout_curves_frame`; each line's best epoch is
    marked with a triangle. Returns the number of lines drawn."""
    if frame is None or not len(frame):
        ax.text(0.5, 0.5, NO_HELDOUT_CURVES.replace(" (", "\n("), ha="center", va="center",
                transform=ax.transAxes, fontsize=9)
        ax.set_axis_off()
        return 0
    n = 0
    for i, (group, sub) in enumerate(frame.groupby(list(by), sort=False)):
        group = group if isinstance(group, tuple) else (group,)
        g = sub.groupby("epoch").ce
        mean, sd = g.mean(), g.std(ddof=1).fillna(0)
        line, = ax.plot(mean.index, mean.values, label=" / ".join(map(str, group)), color=f"C{i}")
        ax.fill_between(mean.index, mean - sd, mean + sd, color=line.get_color(), alpha=0.15)
        best = int(mean.idxmin())
        ax.plot([best], [mean.loc[best]], marker="v", color=line.get_color(), linestyle="none")
        n += 1
    ax.set(xlabel="epoch", ylabel="held-out cross-entropy vs human labels (nats)")
    return n
