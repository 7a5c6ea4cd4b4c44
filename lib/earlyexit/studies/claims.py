"""A paper's claim checked against our run: one row of every notebook's verdict table and of the
generated SUMMARY.md.

A claim states what the paper says, the number the paper gives (read from data/paper_numbers with
``paper_number``, never typed into a notebook), our estimate with its 95% interval, the setting that
produced it, and a verdict decided by one rule:

- "supported": the interval lies entirely on the side the paper claims (beyond ``than``);
- "not supported": the interval lies entirely on the other side (it excludes the paper's direction);
- "inconclusive at this budget": the interval straddles ``than``.

A claim without an interval says why in its evidence. Only a deterministic property (one that no
resampling of the data or retraining could change, e.g. "beta = 0 reproduces the final classifier",
checked on every image) is decided by its point estimate; any other claim without an interval (a
single training, no bootstrap) is "inconclusive at this budget", however large its margin looks.

Every row says where its statement and its threshold come from (``statement_source``,
``threshold_source``: the paper's section, figure or table, quoted briefly, or "our reading: ..." with
why) and which role it plays (``ROLES``): ``"paper"``, the paper's claim measured with the paper's
statistic, baselines and protocol (the headline); ``"sensitivity"``, a variant of a paper's claim
under a set-up of ours; ``"our reading"``, a statement the paper does not make. Only "paper" rows
can say that the paper's claim is (not) supported; the others read "holds" / "does not hold".
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import pandas as pd

from ..paths import project_root
from ..tableformat import number

__all__ = ["VERDICTS", "ROLES", "SMOKE_VERDICT", "SMOKE_NOTE", "Claim", "claim", "shown_verdict", "is_smoke", "claims_table", "paper_numbers", "paper_number", "PaperNumber"]

VERDICTS = ("supported", "not supported", "inconclusive at this budget")
ROLES = ("paper", "sensitivity", "our reading")
OUR_READING = "our reading"
SMOKE_VERDICT = "n/a (smoke)"
SMOKE_NOTE = ("Smoke profile: a few hundred images and one epoch, networks near chance accuracy. These numbers "
              "test the plumbing, not the papers' claims; every verdict reads n/a (smoke).")
# what a verdict reads as on a row that is not the paper's own claim
_NOT_THE_PAPERS = {"supported": "holds", "not supported": "does not hold",
                   "inconclusive at this budget": "inconclusive at this budget"}


@dataclass(frozen=True)
class Claim:
    statement: str                      # the paper's claim, in one sentence
    comparison: str                     # what our estimate measures, e.g. "BC - CR test accuracy at equal MACs"
    ours: float | None                  # our estimate (None: could not be measured)
    unit: str
    interval: tuple[float, float] | None
    claimed: str                        # "greater" or "less": the paper's direction
    than: float                         # ... relative to this value
    verdict: str
    evidence: str                       # how the interval was obtained (seeds, bootstrap), or why there is none
    setting: str                        # network, data, profile, seeds
    paper: float | str | None = None    # the paper's number, where it gives one
    paper_source: str = ""
    statement_source: str = ""          # where the statement comes from: the paper (quoted) or "our reading: why"
    threshold_source: str = ""          # where ``than`` comes from, the same way
    role: str = "paper"                 # one of ROLES

    @property
    def label(self) -> str:
        """The verdict as a reader should take it: a sensitivity or our-reading row never says that the
        paper's claim is (not) supported."""
        return shown_verdict(self.verdict, self.role)

    def row(self) -> dict:
        return {**asdict(self), "label": self.label}


def is_smoke(profile: str | None) -> bool:
    """The smoke profile (or its rehearsal) tests the plumbing on networks near chance: no verdict."""
    return bool(profile) and profile.split("-")[0] == "smoke"


def shown_verdict(verdict: str, role: str = "paper", profile: str | None = None) -> str:
    """``verdict`` for a row of ``role``: the verdict itself for the paper's claim, else "holds" /
    "does not hold" / "inconclusive at this budget" with the role in brackets; "n/a (smoke)" for
    any row of a smoke run."""
    if is_smoke(profile):
        return SMOKE_VERDICT
    if role == "paper":
        return verdict
    return f"{_NOT_THE_PAPERS[verdict]} ({role} row)"


def _verdict(ours: float | None, interval: tuple[float, float] | None, claimed: str, than: float,
             deterministic: bool) -> str:
    if ours is None or (interval is None and not deterministic):
        return VERDICTS[2]
    lo, hi = interval if interval is not None else (ours, ours)
    if claimed == "greater":
        return VERDICTS[0] if lo > than else VERDICTS[1] if hi <= than else VERDICTS[2]
    return VERDICTS[0] if hi < than else VERDICTS[1] if lo >= than else VERDICTS[2]


def claim(statement: str, comparison: str, ours: float | None, *, claimed: str = "greater", than: float = 0.0,
          interval: tuple[float, float] | None = None, unit: str = "", evidence: str = "", setting: str = "",
          paper: float | str | None = None, paper_source: str = "", deterministic: bool = False,
          statement_source: str, threshold_source: str, role: str = "paper") -> Claim:
    """Decide a claim. Without an interval the evidence must say why none is needed or possible, and
    only a ``deterministic`` property is then decided by its point estimate. Both sources are required;
    a statement that is "our reading" makes the row an "our reading" row and nothing else."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if not statement_source.strip() or not threshold_source.strip():
        raise ValueError(f"claim {statement!r} needs a statement_source and a threshold_source")
    if statement_source.lower().startswith(OUR_READING) != (role == OUR_READING):
        raise ValueError(f"claim {statement!r}: a statement that is 'our reading: ...' has role 'our reading' "
                         f"and only it (got role {role!r}, statement source {statement_source!r})")
    if claimed not in ("greater", "less"):
        raise ValueError(f"claimed must be 'greater' or 'less', got {claimed!r}")
    if interval is None and not evidence:
        raise ValueError("a claim without an interval must say why in its evidence")
    if deterministic and interval is not None:
        raise ValueError("a deterministic property has no interval")
    if interval is not None:
        interval = (float(interval[0]), float(interval[1]))
        if interval[0] > interval[1]:
            raise ValueError(f"interval {interval} is not ordered")
    ours = None if ours is None else float(ours)
    return Claim(statement, comparison, ours, unit, interval, claimed, float(than),
                 _verdict(ours, interval, claimed, than, deterministic), evidence, setting, paper, paper_source,
                 statement_source, threshold_source, role)


def claims_table(claims: list[Claim], profile: str | None = None) -> pd.DataFrame:
    """The claims as a table for a notebook (numbers rounded for reading; the metrics keep them whole);
    on the smoke ``profile`` every verdict reads "n/a (smoke)"."""
    def fmt(c: Claim) -> str:
        if c.ours is None:
            return "n/a"
        inside = f" [{number(c.interval[0])}, {number(c.interval[1])}]" if c.interval else ""
        return f"{number(c.ours)}{inside} {c.unit}".strip()

    return pd.DataFrame([{"claim": c.statement, "role": c.role, "statement from": c.statement_source,
                          "measured": c.comparison, "ours (95% interval)": fmt(c),
                          "paper's side": f"{'>' if c.claimed == 'greater' else '<'} {c.than:g}",
                          "threshold from": c.threshold_source,
                          "paper": "n/a" if c.paper is None else c.paper,
                          "verdict": shown_verdict(c.verdict, c.role, profile),
                          "evidence": c.evidence} for c in claims])


# ---------------------------------------------------------------- numbers reported by the papers
@dataclass(frozen=True)
class PaperNumber:
    value: float | str
    unit: str
    source: str


@lru_cache(maxsize=None)
def paper_numbers(paper: str) -> pd.DataFrame:
    """Every number recorded for a paper (data/paper_numbers/<paper>.csv), one row each with its source."""
    path = project_root() / "data" / "paper_numbers" / f"{paper}.csv"
    if not path.exists():
        known = sorted(p.stem for p in path.parent.glob("*.csv"))
        raise ValueError(f"no paper numbers for {paper!r}; known: {', '.join(known)}")
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def paper_number(paper: str, **where: str | float | int) -> PaperNumber:
    """The one row of ``paper``'s numbers matching every column=value in ``where``."""
    table = paper_numbers(paper)
    rows = table
    for column, value in where.items():
        if column not in table.columns:
            raise ValueError(f"{paper} numbers have no column {column!r}; columns: {', '.join(table.columns)}")
        wanted = str(value)
        rows = rows[rows[column].map(lambda v: v == wanted or _same_number(v, wanted)).astype(bool)]
    if len(rows) != 1:
        raise ValueError(f"{len(rows)} rows of {paper} numbers match {where}")
    row = rows.iloc[0]
    try:
        value: float | str = float(row["value"])
    except ValueError:
        value = row["value"]
    return PaperNumber(value, row.get("unit", ""), row["source"])


def _same_number(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return False
