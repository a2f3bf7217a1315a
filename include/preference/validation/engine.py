"""Run the suites over one day's landed tables: split every row into validated or quarantined.

Great Expectations (1.x, ephemeral context, pandas backend) evaluates every rule; the index column
``_row`` in its unexpected-row lists tells exactly which rows broke which rule. Data Docs for the
day are rendered into a local site directory that the caller publishes to ``reports/``.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from include.preference.schema import TABLES

if TYPE_CHECKING:
    import pyarrow as pa
from include.preference.validation.casting import LINE_MARKS, ROW_DAY, ROW_ID, cast_table
from include.preference.validation.rules import (
    DAY_LAST_SECONDS,
    KNOWN_CUSTOMER,
    KNOWN_PRODUCT,
    PARSE_RULE_ORDER,
    PLAUSIBLE_COLUMNS,
    PRODUCT_CODE,
    SECONDS,
    TABLE_KEY,
    VALIDATION_ORDER,
    Plausibility,
    RuleContext,
    TrailingStats,
    table_rules,
)

log = logging.getLogger(__name__)

# Data Docs stamp pages with the render time (asset URLs "?d=<time>", "validation time"); pinned to
# the logical date, a rerun of the same day renders byte-identical pages.
RENDER_STAMP = re.compile(r"\d{8}T\d{6}\.\d+Z")
# Element ids are random UUIDs; renumbered in order of appearance, links within a page still match.
RANDOM_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _stabilise_page(text: str, day: dt.date) -> str:
    text = RENDER_STAMP.sub(f"{day.strftime('%Y%m%d')}T000000.000000Z", text)
    renumbered: dict[str, str] = {}

    def stable(match: re.Match[str]) -> str:
        return renumbered.setdefault(match.group(0), f"00000000-0000-4000-8000-{len(renumbered):012d}")

    return RANDOM_ID.sub(stable, text)


BACKENDS = ("pandas", "spark")
# Above this many rows in a day's largest table the suites run on Spark: one worker's memory, not
# speed, is what pandas runs out of (bench/bench_validation.py measures both on this machine).
SPARK_ROWS_DEFAULT = 20_000_000
WRONG_TYPE_SHARE = 0.5  # more than this share of a column unreadable: the column has the wrong type
WRONG_TYPE_MIN_ROWS = 5
SITE_NAME = "local_site"  # the ephemeral context's own site, pointed at our directory


@dataclass(frozen=True)
class BlockingFailure:
    """A rule that stops the day: which table, which rule, how many rows or columns, and what."""

    table: str
    rule: str
    count: int
    detail: str = ""
    # Several days validated together: (day, count) for each day the failure concerns.
    by_day: tuple[tuple[str, int], ...] = ()

    @property
    def days(self) -> tuple[str, ...]:
        return tuple(day for day, _ in self.by_day)

    def describe(self) -> str:
        text = f"{self.table}: {self.rule} ({self.count})"
        if self.by_day:
            more = len(self.by_day) - 1
            text += f" on {self.by_day[0][0]}" + (f" and {more} more day{'s' if more > 1 else ''}" if more else "")
        return f"{text} {self.detail}".strip()

    def on(self, day: str) -> "BlockingFailure":
        """This failure as the one day's validation would report it."""
        count = dict(self.by_day).get(day, self.count)
        return BlockingFailure(self.table, self.rule, count, self.detail)


@dataclass
class TableOutcome:
    """One table's verdict."""

    table: str
    rows_in: int
    validated: pd.DataFrame
    quarantine: pd.DataFrame
    by_rule: dict[str, int] = field(default_factory=dict)  # rows filed under each rule (first broken)
    by_rule_all: dict[str, int] = field(default_factory=dict)  # rows breaking each rule
    blocking: list[BlockingFailure] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)
    last_seconds: float | None = None
    # The 99.9th percentile of each plausibility column's validated values (later days' bounds).
    p999: dict[str, float] = field(default_factory=dict)

    def validated_table(self) -> "pa.Table":
        """The validated rows as Arrow, in the table's canonical schema (what ``validated/`` holds)."""
        import pyarrow as pa

        return pa.Table.from_pandas(self.validated, schema=TABLES[self.table].arrow_schema(), preserve_index=False)

    def summary(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "validated": len(self.validated),
            "quarantined": len(self.quarantine),
            "by_rule": self.by_rule,
            "by_rule_all": self.by_rule_all,
            "blocking": [b.describe() for b in self.blocking],
            "extra_columns": self.extra_columns,
            "last_seconds": self.last_seconds,
            "p999": self.p999,
        }


@dataclass
class DayValidation:
    day: dt.date
    tables: dict[str, TableOutcome]
    docs_dir: Path | None

    @property
    def blocking(self) -> list[BlockingFailure]:
        return [b for outcome in self.tables.values() for b in outcome.blocking]

    def summary(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "blocked": bool(self.blocking),
            "blocking": [b.describe() for b in self.blocking],
            "tables": {name: outcome.summary() for name, outcome in self.tables.items()},
        }


def _helpers(frame: pd.DataFrame, table: str, ctx: RuleContext, marked: np.ndarray | None = None) -> pd.DataFrame:
    """Columns the expectations read: seconds into the day, normalised codes, orphan flags, the key
    (null on ``marked``: rows the importer marked, already quarantined as malformed or copies).

    With several days (``ROW_DAY`` present) each row is measured against its own day and the
    orphan checks look it up in its own day's catalogue (known keys are ``day|id``).
    """
    spec = TABLES[table]
    out = frame.copy()
    several = ROW_DAY in out
    if spec.time_column:
        if several:
            starts = {day: pd.Timestamp(day, tz="UTC") for day in out[ROW_DAY].unique()}
            start: Any = pd.to_datetime(out[ROW_DAY].map(starts), utc=True)
        else:
            start = pd.Timestamp(ctx.day, tz="UTC")
        out[SECONDS] = (out[spec.time_column] - start).dt.total_seconds()
        if several:
            out[DAY_LAST_SECONDS] = out.groupby(ROW_DAY)[SECONDS].transform("max")
    if "product_id" in out:
        out[PRODUCT_CODE] = out["product_id"].str.strip().str.upper()
        if ctx.known_products is not None:
            known = _lookup_keys(out, "product_id").isin(ctx.known_products)
            out[KNOWN_PRODUCT] = (known | out["product_id"].isna()).astype(bool)
    if "customer_id" in out and ctx.known_customers is not None:
        known = _lookup_keys(out, "customer_id").isin(ctx.known_customers)
        out[KNOWN_CUSTOMER] = (known | out["customer_id"].isna()).astype(bool)
    parts = [out[column].astype("string") for column in (*spec.key, *((ROW_DAY,) if several else ()))]
    key = parts[0].str.cat(parts[1:], sep="\x1f") if len(parts) > 1 else parts[0]
    if marked is not None:
        key = key.where(~marked)
    out[TABLE_KEY] = key.astype(object).where(key.notna(), None)
    return out


def _lookup_keys(frame: pd.DataFrame, column: str) -> pd.Series:
    """The ids of ``column`` as the known sets hold them: ``id``, or ``day|id`` with several days."""
    if ROW_DAY not in frame:
        return frame[column]
    return frame[ROW_DAY].astype(str) + "|" + frame[column].astype("string").fillna("")


def _known_keys(outcome: "TableOutcome", column: str) -> frozenset[str]:
    validated = outcome.validated.dropna(subset=[column])
    return frozenset(_lookup_keys(validated, column).astype(str))


def _day_counts(days: pd.Series) -> tuple[tuple[str, int], ...]:
    counts = days.astype(str).value_counts()
    return tuple((day, int(counts[day])) for day in sorted(counts.index))


def choose_backend(rows: int, threshold: int | None = None) -> str:
    """``spark`` for days of at least ``threshold`` rows, else ``pandas``.

    The threshold defaults to ``PREFERENCE_VALIDATION_SPARK_ROWS`` (20 million).
    """
    import os

    limit = (
        threshold
        if threshold is not None
        else int(os.environ.get("PREFERENCE_VALIDATION_SPARK_ROWS", SPARK_ROWS_DEFAULT))
    )
    return "spark" if rows >= limit else "pandas"


class _CompiledTemplates:
    """Jinja's compiled Data Docs templates, kept for the process (a ``jinja2.BytecodeCache``).

    GX renders every page through a view that builds a Jinja environment of its own, so each table
    of each day compiled the same templates again: about half of a day's validation. Jinja checks
    each entry against its template's source checksum, so a changed template is compiled again.
    """

    def __init__(self) -> None:
        import jinja2

        class Memory(jinja2.BytecodeCache):
            def __init__(self) -> None:
                self.compiled: dict[str, bytes] = {}
                self.compilations = 0  # templates compiled (not found in the cache)

            def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
                if (code := self.compiled.get(bucket.key)) is not None:
                    bucket.bytecode_from_string(code)

            def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
                self.compilations += 1
                self.compiled[bucket.key] = bucket.bytecode_to_string()

        self.cache = Memory()

    def install(self) -> None:
        """Every GX view made from now on in this process compiles through the shared cache."""
        from great_expectations.render.view.view import DefaultJinjaView

        made = DefaultJinjaView.__init__
        if getattr(made, "compiled_templates", None) is self:
            return
        cache = self.cache

        def make(view: Any, *args: Any, **kwargs: Any) -> None:
            made(view, *args, **kwargs)
            view.env.bytecode_cache = cache

        make.compiled_templates = self  # type: ignore[attr-defined]
        DefaultJinjaView.__init__ = make  # type: ignore[method-assign,assignment]


_COMPILED_TEMPLATES: _CompiledTemplates | None = None


def compiled_templates() -> _CompiledTemplates:
    """The process's shared cache of compiled Data Docs templates, installed into GX's views."""
    global _COMPILED_TEMPLATES
    if _COMPILED_TEMPLATES is None:
        _COMPILED_TEMPLATES = _CompiledTemplates()
        _COMPILED_TEMPLATES.install()
    return _COMPILED_TEMPLATES


class _Suites:
    """One ephemeral GX context for the day, with a local Data Docs site, on pandas or Spark."""

    def __init__(self, docs_dir: Path | None, backend: str = "pandas") -> None:
        import great_expectations as gx

        if docs_dir is not None:
            compiled_templates()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        self.gx = gx
        self.backend = backend
        self.spark: Any = None
        if backend == "spark":
            from include.preference.spark import spark_session

            self.spark = spark_session("validation")
        self.context = gx.get_context(mode="ephemeral")
        # No tqdm bars per expectation run: task logs and the evaluate command stay readable.
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        self.docs = docs_dir is not None
        if docs_dir is not None:
            site: Any = {
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            }
            self.context.update_data_docs_site(site_name=SITE_NAME, site_config=site)
        sources = self.context.data_sources
        self.source: Any = sources.add_spark("landed") if backend == "spark" else sources.add_pandas("landed")

    def run(self, table: str, frame: pd.DataFrame, rules: list, day: dt.date) -> list[Any]:
        gx = self.gx
        asset = self.source.add_dataframe_asset(table)
        batch = asset.add_batch_definition_whole_dataframe(f"{table}_day")
        suite = self.context.suites.add(gx.ExpectationSuite(f"{table}_rules"))
        for rule in rules:
            suite.add_expectation(rule.expectation)
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{table}_{day.isoformat()}", data=batch, suite=suite)
        )
        checkpoint = self.context.checkpoints.add(
            gx.Checkpoint(
                name=f"{table}_checkpoint",
                validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=[SITE_NAME])] if self.docs else [],
                result_format={
                    "result_format": "COMPLETE",
                    "unexpected_index_column_names": [ROW_ID],
                    "return_unexpected_index_query": False,
                    "partial_unexpected_count": 0,
                },
            )
        )
        # A run identity from the logical date, not the clock: a rerun renders the same pages.
        run_id = gx.RunIdentifier(
            run_name=f"{table}-{day.isoformat()}", run_time=dt.datetime.combine(day, dt.time(), dt.UTC)
        )
        data = self.spark.createDataFrame(frame) if self.spark is not None else frame
        result = checkpoint.run(batch_parameters={"dataframe": data}, run_id=run_id)
        return [r for run in result.run_results.values() for r in run.results]


def _flagged_rows(expectation_result: Any) -> np.ndarray:
    rows = expectation_result.result.get("unexpected_index_list") or []
    return np.fromiter((r[ROW_ID] for r in rows), dtype=np.int64, count=len(rows))


def _blocking_days(rule: str, result: Any, frame: pd.DataFrame, position: pd.Series) -> tuple[tuple[str, int], ...]:
    """The days a failed day-level rule concerns, with the rows it found on each."""
    if rule == "empty_day":
        seen = set(frame[ROW_DAY])
        return tuple((day, 0) for day in result.expectation_config.kwargs["value_set"] if day not in seen)
    if rule == "stale_data":
        return _day_counts(frame.loc[frame[DAY_LAST_SECONDS] < 0, ROW_DAY])
    rows = position.loc[_flagged_rows(result)].to_numpy()
    return _day_counts(frame[ROW_DAY].iloc[rows])


def validate_table(table: str, raw: pd.DataFrame, ctx: RuleContext, suites: _Suites) -> TableOutcome:
    """Validate one landed table; the raw rows come back split, none lost."""
    spec = TABLES[table]
    raw = raw.reset_index(drop=True)
    if ROW_ID not in raw:
        raw = raw.assign(**{ROW_ID: np.arange(len(raw), dtype=np.int64)})
    cast = cast_table(raw, spec)
    outcome = TableOutcome(table, len(raw), raw.iloc[0:0], raw.iloc[0:0], extra_columns=cast.extra_columns)
    if cast.missing_columns:
        outcome.blocking.append(
            BlockingFailure(
                table, "missing_columns", len(cast.missing_columns), f"missing: {', '.join(cast.missing_columns)}"
            )
        )
        return outcome
    several = ROW_DAY in raw
    day_of_row = raw[ROW_DAY].astype(str) if several else pd.Series("", index=raw.index)
    for column, bad in cast.failed_columns.items():
        per_day = pd.DataFrame({"bad": bad, "present": raw[column].notna(), "day": day_of_row}).groupby("day").sum()
        wrong = per_day[
            (per_day["bad"] >= WRONG_TYPE_MIN_ROWS) & (per_day["bad"] > WRONG_TYPE_SHARE * per_day["present"].clip(1))
        ]
        if len(wrong):
            type_name = next(c.type for c in spec.columns if c.name == column)
            outcome.blocking.append(
                BlockingFailure(
                    table,
                    "wrong_type",
                    int(wrong["bad"].sum()),
                    f"column {column} is not {type_name}",
                    tuple((str(d), int(n)) for d, n in wrong["bad"].items()) if several else (),
                )
            )
    if outcome.blocking:
        return outcome

    marked = np.zeros(len(cast.frame), dtype=bool)
    for rule in LINE_MARKS.values():
        if rule in cast.failures:
            marked |= cast.failures[rule].to_numpy(dtype=bool)
    frame = _helpers(cast.frame, table, ctx, marked)
    rules = table_rules(spec, ctx, len(frame))
    results = suites.run(table, frame, rules, ctx.day)

    row_ids = frame[ROW_ID].to_numpy()
    position = pd.Series(np.arange(len(frame)), index=row_ids)
    flags: dict[str, np.ndarray] = {}
    for rule in PARSE_RULE_ORDER:
        if rule in cast.failures:
            flags[rule] = cast.failures[rule].to_numpy(dtype=bool)
    for suite_rule in rules:  # fix the priority order before reading results (GX reorders them)
        if suite_rule.kind == "row":
            flags.setdefault(suite_rule.name, np.zeros(len(frame), dtype=bool))
    for result in results:
        meta = result.expectation_config.meta or {}
        rule, kind = str(meta.get("rule")), meta.get("kind")
        if kind == "row":
            mask = flags.setdefault(rule, np.zeros(len(frame), dtype=bool))
            mask[position.loc[_flagged_rows(result)].to_numpy()] = True
        elif kind == "blocking" and not result.success:
            count = result.result.get("unexpected_count")
            observed = result.result.get("observed_value")
            if not several:
                outcome.blocking.append(
                    BlockingFailure(
                        table, rule, int(count if count is not None else len(frame)), f"observed {observed}"
                    )
                )
                continue
            by_day = _blocking_days(rule, result, frame, position)
            outcome.blocking.append(BlockingFailure(table, rule, sum(n for _, n in by_day), "", by_day))

    any_flag = np.zeros(len(frame), dtype=bool)
    primary = np.full(len(frame), "", dtype=object)
    everything = np.full(len(frame), "", dtype=object)
    for rule, mask in flags.items():  # insertion order is priority order
        first = mask & ~any_flag
        primary[first] = rule
        everything[mask] = np.where(everything[mask] == "", rule, everything[mask] + ";" + rule)
        any_flag |= mask
        if mask.any():
            outcome.by_rule_all[rule] = int(mask.sum())
            outcome.by_rule[rule] = int(first.sum())
    kept = [*spec.column_names, ROW_DAY] if several else list(spec.column_names)
    outcome.validated = cast.frame.loc[~any_flag, kept].reset_index(drop=True)
    quarantine = raw.loc[any_flag].copy()
    for column in quarantine.columns:
        if column not in (ROW_ID, ROW_DAY):
            quarantine[column] = quarantine[column].astype("string")
    quarantine["rule"] = primary[any_flag]
    quarantine["rules"] = everything[any_flag]
    outcome.quarantine = quarantine.reset_index(drop=True)
    if spec.time_column and SECONDS in frame and (~any_flag).any() and not several:
        outcome.last_seconds = float(frame.loc[~any_flag, SECONDS].max())
    for column in PLAUSIBLE_COLUMNS if not several else ():
        if column in outcome.validated:
            values = pd.to_numeric(outcome.validated[column], errors="coerce").dropna()
            if len(values):
                outcome.p999[column] = float(np.quantile(values.to_numpy(dtype=np.float64), 0.999))
    return outcome


def _validate_tables(
    raw: Mapping[str, pd.DataFrame],
    suites: _Suites,
    context: Mapping[str, Any],
    trailing: Mapping[str, TrailingStats] | None = None,
) -> dict[str, TableOutcome]:
    """Every table in ``VALIDATION_ORDER``; dimensions first, so facts can be checked for orphans.

    ``context`` holds the ``RuleContext`` fields shared by every table (day, closed days...).
    """
    outcomes: dict[str, TableOutcome] = {}
    known: dict[str, frozenset[str] | None] = {"products": None, "customers": None}
    for table in VALIDATION_ORDER:
        ctx = RuleContext(
            known_products=known["products"],
            known_customers=known["customers"],
            trailing=(trailing or {}).get(table),
            **context,
        )
        outcome = validate_table(table, raw[table], ctx, suites)
        outcomes[table] = outcome
        if table in known and not outcome.blocking:
            known[table] = _known_keys(outcome, TABLES[table].key[0])
    return outcomes


def validate_day(
    day: dt.date,
    raw: Mapping[str, pd.DataFrame],
    docs_dir: Path | None,
    *,
    trailing: Mapping[str, TrailingStats] | None = None,
    closed_day: bool = False,
    volume_factor: float = 3.0,
    truncation_hours: float = 8.0,
    plausibility: Plausibility | None = None,
    backend: str | None = None,
) -> DayValidation:
    """Validate every landed table of ``day``; dimensions first, so facts can be checked for orphans.

    Args:
        day: the logical date.
        raw: landed tables by name (strings or typed values).
        docs_dir: where the Data Docs site is written; None: no Data Docs (the same rules and
            split, about half the time: for one-off evaluations whose pages nobody opens).
        trailing: per table, the recent days' statistics for volume and truncation rules.
        closed_day: the source says nothing happened that day (no empty-day or volume rules).
        plausibility: the hard bounds and factor of ``implausible_value`` (defaults otherwise).
        backend: ``pandas`` or ``spark``; by default chosen by the size of the largest table.
    """
    backend = backend or choose_backend(max((len(frame) for frame in raw.values()), default=0))
    suites = _Suites(docs_dir, backend)
    context = {
        "day": day,
        "closed_day": closed_day,
        "volume_factor": volume_factor,
        "truncation_hours": truncation_hours,
        "plausibility": plausibility or Plausibility(),
    }
    outcomes = _validate_tables(raw, suites, context, trailing)
    for page in docs_dir.rglob("*.html") if docs_dir is not None else ():
        page.write_text(_stabilise_page(page.read_text(), day))
    result = DayValidation(day, outcomes, docs_dir)
    log.info(
        "validated %s on %s: %s",
        day,
        backend,
        {t: (o.rows_in, len(o.validated), len(o.quarantine)) for t, o in outcomes.items()},
    )
    return result


@dataclass
class HistoryValidation:
    """Several days validated together: each row judged against its own day."""

    days: tuple[dt.date, ...]
    tables: dict[str, TableOutcome]

    @property
    def blocking(self) -> list[BlockingFailure]:
        return [b for outcome in self.tables.values() for b in outcome.blocking]

    def day(self, day: dt.date) -> DayValidation:
        """One day's share, as validating that day alone reports it (rows, counts, failures)."""
        key = day.isoformat()
        tables = {}
        for name, outcome in self.tables.items():
            validated = outcome.validated[outcome.validated[ROW_DAY] == key].drop(columns=ROW_DAY)
            quarantine = outcome.quarantine[outcome.quarantine[ROW_DAY] == key].drop(columns=ROW_DAY)
            mine = TableOutcome(
                name,
                len(validated) + len(quarantine),
                validated.reset_index(drop=True),
                quarantine.reset_index(drop=True),
                extra_columns=outcome.extra_columns,
            )
            if len(quarantine):
                every = quarantine["rules"].str.split(";").explode().value_counts()
                first = quarantine["rule"].value_counts()
                mine.by_rule_all = {str(k): int(v) for k, v in every.items()}
                mine.by_rule = {rule: int(first.get(rule, 0)) for rule in mine.by_rule_all}
            mine.blocking = [b.on(key) for b in outcome.blocking if not b.by_day or key in b.days]
            tables[name] = mine
        return DayValidation(day, tables, None)


def validate_days(
    raw_by_day: Mapping[dt.date, Mapping[str, pd.DataFrame]],
    *,
    closed_days: frozenset[dt.date] = frozenset(),
    plausibility: Plausibility | None = None,
    backend: str | None = None,
) -> HistoryValidation:
    """Validate the landed tables of several days in one suite run per table (history files).

    The same suites as :func:`validate_day`, with every row judged against its own day: times
    inside that day, orphans looked up in that day's validated catalogue, and the day-level rules
    (unique keys, no empty open day, not stale, column types) judged per day and naming the days
    that break them. Trailing volume and truncation rules belong to a live feed and are not run.
    One suite run instead of one per day: on a year of invoices the suites' fixed cost, not the
    rows, is what a day-by-day validation spends its time on. No Data Docs.
    """
    days = tuple(sorted(raw_by_day))
    if not days:
        raise ValueError("validate_days needs at least one day")
    raw: dict[str, pd.DataFrame] = {}
    structural: dict[str, BlockingFailure] = {}
    for table in VALIDATION_ORDER:
        required = [c.name for c in TABLES[table].columns if c.required]
        missing = {d: [c for c in required if c not in raw_by_day[d][table]] for d in days}
        gaps = tuple((d.isoformat(), len(cols)) for d, cols in missing.items() if cols)
        if gaps:
            names = sorted({c for cols in missing.values() for c in cols})
            structural[table] = BlockingFailure(
                table, "missing_columns", len(names), f"missing: {', '.join(names)}", gaps
            )
        raw[table] = pd.concat(
            [raw_by_day[d][table].assign(**{ROW_DAY: d.isoformat()}) for d in days], ignore_index=True
        )
    backend = backend or choose_backend(max((len(frame) for frame in raw.values()), default=0))
    suites = _Suites(None, backend)
    context = {
        "day": days[-1],
        "days": days,
        "closed_days": frozenset(closed_days),
        "plausibility": plausibility or Plausibility(),
    }
    outcomes = _validate_tables(raw, suites, context)
    for table, failure in structural.items():  # columns missing on some days only
        outcome = outcomes[table]
        outcome.validated = outcome.validated.iloc[0:0]
        outcome.quarantine = outcome.quarantine.iloc[0:0]
        outcome.blocking = [failure]
    log.info(
        "validated %d days (%s..%s) on %s: %s",
        len(days),
        days[0],
        days[-1],
        backend,
        {t: (o.rows_in, len(o.validated), len(o.quarantine)) for t, o in outcomes.items()},
    )
    return HistoryValidation(days, outcomes)
