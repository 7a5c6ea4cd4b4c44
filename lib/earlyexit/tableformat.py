"""How tables read in the notebooks: no pandas row numbers as a column, at most two decimals, whole cells,
accuracies in %.

``number`` formats every float a notebook shows: two decimals, or two significant digits below 0.1 so that a
small value (a head's 0.0034 MMACs, a lambda of 0.001) keeps its digits. ``readable`` shows a column of
accuracies as fractions (named "... acc ..." or "... accuracy ...", no unit, values in [0, 1]) in % with the
unit in its header: two decimals of a fraction would drop the digits that separate methods. The frames
themselves (and the metrics written from them) keep fractions. ``use_table_format`` applies both to every
DataFrame shown and leaves out an index that only numbers the rows.
"""
from __future__ import annotations

import math
import re

import pandas as pd

__all__ = ["number", "readable", "html_table", "use_table_format"]

_ACCURACY = re.compile(r"\bacc(uracy)?\b", re.IGNORECASE)


def number(x: float) -> str:
    """Two decimals; below 0.1 in magnitude, two significant digits (never a rounded-away 0.00)."""
    if not math.isfinite(x):
        return str(x)
    if x == 0 or abs(x) >= 0.1:
        return f"{x:.2f}"
    return f"{x:.2g}"


def _fraction_of_correct(name: object, column: pd.Series) -> bool:
    if not isinstance(name, str) or "%" in name or not _ACCURACY.search(name):
        return False
    if not pd.api.types.is_float_dtype(column):
        return False
    values = column.dropna()
    return len(values) > 0 and bool(((values >= 0) & (values <= 1)).all())


def readable(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose accuracy columns given as fractions are in % (header "<name> (%)"): those named so, and
    those the frame lists in ``frame.attrs["percent"]`` (accuracies whose names do not say it)."""
    if isinstance(frame.columns, pd.MultiIndex):
        return frame
    shown = frame.copy()
    listed = set(frame.attrs.get("percent", ()))
    for name in frame.columns:
        if name in listed or _fraction_of_correct(name, frame[name]):
            shown[name] = 100 * frame[name]
            shown = shown.rename(columns={name: f"{name} (%)"})
    return shown


def html_table(frame: pd.DataFrame) -> str:
    """The frame's HTML as a notebook shows it: a RangeIndex (row numbers, not data) is left out."""
    numbered = isinstance(frame.index, pd.RangeIndex)
    with pd.option_context("display.max_colwidth", None):
        return readable(frame).to_html(index=not numbered, float_format=number, max_rows=pd.options.display.max_rows,
                                       max_cols=pd.options.display.max_columns, notebook=True, border=0)


def _plain_table(frame: pd.DataFrame, printer, cycle: bool) -> None:
    numbered = isinstance(frame.index, pd.RangeIndex)
    with pd.option_context("display.max_colwidth", None):
        printer.text(readable(frame).to_string(index=not numbered, float_format=number,
                                               max_rows=pd.options.display.max_rows))


def use_table_format() -> None:
    """Apply the format to every DataFrame shown from here on (in IPython, its HTML form too)."""
    pd.options.display.float_format = number
    try:
        from IPython import get_ipython
    except ImportError:     # a plain Python process: only the text form
        return
    shell = get_ipython()
    if shell is not None:
        shell.display_formatter.formatters["text/html"].for_type(pd.DataFrame, html_table)
        shell.display_formatter.formatters["text/plain"].for_type(pd.DataFrame, _plain_table)
