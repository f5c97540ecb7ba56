"""The weekly execution-quality review: how well a week's runs, exceptions, triggers and deliveries went.

`weekly_review(ledger, "2026-W48")` reads the ledger for one ISO week, Monday 00:00 UTC up to the
next Monday 00:00 UTC, and returns a `Review`. Every timestamp is compared as UTC, and a time
exactly at the week's end belongs to the next week.

==========================  ========================================================================
Measure                     Definition
==========================  ========================================================================
first-pass yield            Records with a `stored`, `rejected` or `conflict` audit event in the
                            week are processed. A record is one (system, account, entity, record
                            ID). Its first run is the run (audit `trace_id`) of its earliest such
                            event in the week. It passes first time when that run stored it, did not
                            reject it or report a conflict, and opened or reopened no exception on
                            the same system, account and record ID. Yield = passed / processed, or
                            None when nothing was processed.
exceptions opened           Exceptions with `opened_at` in the week, by kind and by the owner they
                            were opened with (the `from_owner` of their first transition, else the
                            current owner).
exceptions closed           Exceptions with `closed_at` in the week, by kind and by current owner
                            (closing does not change the owner).
time to resolution          `closed_at - opened_at` of the exceptions closed in the week: median and
                            90th percentile, in seconds.
overdue at week end         Exceptions opened before the week's end that were active (open, retrying
                            or escalated) at the week's end and are due before it (before now, for
                            the week still running), by owner.
retries and replays         `retry` and `replay` transitions in the week. One closed its exception
                            when the next transition of that exception, at any time, leaves it
                            closed.
duplicates prevented        Audit events in the week with step `redelivered` (identical content
                            arriving again) or `skipped_stale` (an older version than the stored
                            one).
trigger-to-outcome latency  Triggers created in the week whose status is final (`succeeded` or
                            `failed`): `updated_at - created_at`, median and 90th percentile, in
                            seconds. Triggers created in the week and still `requested` are counted
                            apart.
reconciliation differences  `reconciliation_mismatch` exceptions opened before the week's end and
                            active at the week's end, by system.
deliveries                  Outbox rows `delivered` with `delivered_at` in the week and rows
                            `rejected` with `updated_at` in the week, by target.
==========================  ========================================================================

The status at the week's end is the `to_status` of the exception's last transition before the
week's end, or `open` when it had none then, so a past week is reviewed as it ended rather than
with today's statuses.

Percentiles use linear interpolation between the closest ranks, which is `numpy.percentile`
with `method="linear"` and Excel's PERCENTILE.INC. For sorted values v[0..n-1], the p-th
percentile is at rank (n - 1) * p / 100, and a fractional rank interpolates between its two
neighbours. The median is the 50th percentile under the same rule.
"""

import io
import re
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import sqlalchemy as sa

from meshline_pipelines import settings
from meshline_pipelines.ledger import Ledger
from meshline_pipelines.ledger.store import restore_types, utc_now
from meshline_pipelines.ledger.tables import audit_events, exception_transitions, exceptions, outbox, triggers
from meshline_pipelines.queue import ACTIVE, CLOSED, OPEN
from meshline_pipelines.triggers import FAILED, REQUESTED, SUCCEEDED

ISO_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
PROCESSING_STEPS = ("stored", "rejected", "conflict")
FAILING_STEPS = ("rejected", "conflict")
DUPLICATE_STEPS = ("redelivered", "skipped_stale")
FINAL_TRIGGER_STATUSES = (SUCCEEDED, FAILED)
RECONCILIATION_KIND = "reconciliation_mismatch"
RECORD_KEY = ["system", "account", "entity", "record_id"]


# ISO weeks


@dataclass(frozen=True)
class IsoWeek:
    """One ISO 8601 week: Monday 00:00 UTC up to, not including, the next Monday 00:00 UTC."""

    year: int
    week: int

    @property
    def key(self) -> str:
        return f"{self.year}-W{self.week:02d}"

    @property
    def monday(self) -> date:
        return date.fromisocalendar(self.year, self.week, 1)

    @property
    def start(self) -> datetime:
        return datetime.combine(self.monday, datetime.min.time(), tzinfo=timezone.utc)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=7)

    @property
    def partition_key(self) -> str:
        """The key of the weekly Dagster partition for this week: its Monday as YYYY-MM-DD."""
        return self.monday.isoformat()

    @classmethod
    def containing(cls, day: date) -> "IsoWeek":
        calendar = day.isocalendar()
        return cls(calendar.year, calendar.week)


def parse_week(text: str) -> IsoWeek:
    """Parse `YYYY-Www` into an IsoWeek, raising ValueError that names the value and the expected form."""
    match = ISO_WEEK.match(text.strip())
    if match:
        year, week = int(match.group(1)), int(match.group(2))
        try:
            date.fromisocalendar(year, week, 1)
        except ValueError:
            raise ValueError(f"invalid week {text!r}: {year} has no ISO week {week}, so write YYYY-Www "
                             f"with a week that exists in that year, for example {year}-W52") from None
        return IsoWeek(year, week)
    raise ValueError(f"invalid week {text!r}: expected an ISO week as YYYY-Www, for example 2026-W48")


def week_of_partition(partition_key: str) -> IsoWeek:
    """Map a weekly partition key (the date of the week's Monday) to its ISO week."""
    try:
        monday = date.fromisoformat(partition_key)
    except ValueError:
        raise ValueError(f"invalid weekly partition key {partition_key!r}: expected the Monday's date as "
                         "YYYY-MM-DD") from None
    if monday.isoweekday() != 1:
        raise ValueError(f"invalid weekly partition key {partition_key!r}: {monday:%A} is not a Monday, "
                         "and weekly partitions start on Mondays")
    return IsoWeek.containing(monday)


def last_complete_week(now: datetime | None = None) -> IsoWeek:
    """Return the ISO week before the one containing `now` (default: the current UTC time)."""
    now = now or utc_now()
    return IsoWeek.containing(now.astimezone(timezone.utc).date() - timedelta(days=7))


# The review


@dataclass
class Review:
    """The measures of one ISO week. Durations are in seconds, and None means there was nothing to measure."""

    week: str
    start: datetime
    end: datetime
    records_processed: int = 0
    records_passed_first_time: int = 0
    opened_by_kind: dict[str, int] = field(default_factory=dict)
    opened_by_owner: dict[str, int] = field(default_factory=dict)
    closed_by_kind: dict[str, int] = field(default_factory=dict)
    closed_by_owner: dict[str, int] = field(default_factory=dict)
    resolution_median_seconds: float | None = None
    resolution_p90_seconds: float | None = None
    overdue_at_end: int = 0
    overdue_by_owner: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    retries_closed: int = 0
    replays: int = 0
    replays_closed: int = 0
    redeliveries: int = 0
    stale_skipped: int = 0
    triggers_finished: int = 0
    triggers_by_status: dict[str, int] = field(default_factory=dict)
    triggers_unfinished: int = 0
    trigger_latency_median_seconds: float | None = None
    trigger_latency_p90_seconds: float | None = None
    reconciliation_by_system: dict[str, int] = field(default_factory=dict)
    delivered_by_target: dict[str, int] = field(default_factory=dict)
    rejected_by_target: dict[str, int] = field(default_factory=dict)

    @property
    def first_pass_yield(self) -> float | None:
        if not self.records_processed:
            return None
        return self.records_passed_first_time / self.records_processed

    @property
    def exceptions_opened(self) -> int:
        return sum(self.opened_by_kind.values())

    @property
    def exceptions_closed(self) -> int:
        return sum(self.closed_by_kind.values())

    @property
    def duplicates_prevented(self) -> int:
        return self.redeliveries + self.stale_skipped

    @property
    def reconciliation_differences(self) -> int:
        return sum(self.reconciliation_by_system.values())

    @property
    def delivered(self) -> int:
        return sum(self.delivered_by_target.values())

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_target.values())

    def as_dict(self) -> dict:
        """Return every measure grouped by section, with times as ISO 8601 strings, so `json.dumps` accepts it."""
        values = asdict(self)
        return {
            "week": self.week,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "first_pass": {
                "records_processed": self.records_processed,
                "records_passed_first_time": self.records_passed_first_time,
                "yield": self.first_pass_yield,
            },
            "exceptions": {
                "opened": self.exceptions_opened,
                "closed": self.exceptions_closed,
                **{name: values[name] for name in ("opened_by_kind", "opened_by_owner", "closed_by_kind",
                                                   "closed_by_owner")},
                "resolution_median_seconds": self.resolution_median_seconds,
                "resolution_p90_seconds": self.resolution_p90_seconds,
                "overdue_at_end": self.overdue_at_end,
                "overdue_by_owner": values["overdue_by_owner"],
            },
            "reruns": {name: values[name] for name in ("retries", "retries_closed", "replays", "replays_closed")},
            "duplicates_prevented": {
                "total": self.duplicates_prevented,
                "redelivered": self.redeliveries,
                "skipped_stale": self.stale_skipped,
            },
            "triggers": {
                "finished": self.triggers_finished,
                "by_status": values["triggers_by_status"],
                "unfinished": self.triggers_unfinished,
                "latency_median_seconds": self.trigger_latency_median_seconds,
                "latency_p90_seconds": self.trigger_latency_p90_seconds,
            },
            "reconciliation_differences": {
                "total": self.reconciliation_differences,
                "by_system": values["reconciliation_by_system"],
            },
            "deliveries": {
                "delivered": self.delivered,
                "rejected": self.rejected,
                "delivered_by_target": values["delivered_by_target"],
                "rejected_by_target": values["rejected_by_target"],
            },
        }

    def summary_rows(self) -> list[dict[str, str]]:
        """Return one row per measure, with its value formatted for reading, for tables and Markdown."""
        processed = self.records_processed
        yield_text = "n/a (no records processed)" if self.first_pass_yield is None else (
            f"{self.first_pass_yield:.1%} ({self.records_passed_first_time} of {processed} records)")
        rows = [
            ("first-pass yield", yield_text),
            ("exceptions opened", f"{self.exceptions_opened}{_breakdown(self.opened_by_kind)}"),
            ("opened, by owner", _counts(self.opened_by_owner)),
            ("exceptions closed", f"{self.exceptions_closed}{_breakdown(self.closed_by_kind)}"),
            ("closed, by owner", _counts(self.closed_by_owner)),
            ("time to resolution", _median_and_p90(self.resolution_median_seconds, self.resolution_p90_seconds)),
            ("overdue at week end", f"{self.overdue_at_end}{_breakdown(self.overdue_by_owner)}"),
            ("retries", f"{self.retries} ({self.retries_closed} closed their exception)"),
            ("replays", f"{self.replays} ({self.replays_closed} closed their exception)"),
            ("duplicates prevented", f"{self.duplicates_prevented} ({self.redeliveries} redelivered, "
                                     f"{self.stale_skipped} stale skipped)"),
            ("trigger-to-outcome latency",
             f"{_median_and_p90(self.trigger_latency_median_seconds, self.trigger_latency_p90_seconds)}; "
             f"{self.triggers_finished} finished{_breakdown(self.triggers_by_status)}, "
             f"{self.triggers_unfinished} still requested"),
            ("reconciliation differences at week end",
             f"{self.reconciliation_differences}{_breakdown(self.reconciliation_by_system)}"),
            ("deliveries delivered", f"{self.delivered}{_breakdown(self.delivered_by_target)}"),
            ("deliveries rejected", f"{self.rejected}{_breakdown(self.rejected_by_target)}"),
        ]
        return [{"measure": measure, "value": value} for measure, value in rows]

    def as_markdown(self) -> str:
        lines = [
            f"## Weekly review {self.week}",
            "",
            f"{self.start:%Y-%m-%d %H:%M} UTC to {self.end:%Y-%m-%d %H:%M} UTC (end excluded).",
            "",
            "| Measure | Value |",
            "| --- | --- |",
            *[f"| {row['measure']} | {_cell(row['value'])} |" for row in self.summary_rows()],
        ]
        kinds = sorted(set(self.opened_by_kind) | set(self.closed_by_kind))
        if kinds:
            lines += ["", "### Exceptions by kind", "", "| Kind | Opened | Closed |", "| --- | --- | --- |"]
            lines += [f"| {_cell(kind)} | {self.opened_by_kind.get(kind, 0)} | {self.closed_by_kind.get(kind, 0)} |"
                      for kind in kinds]
        return "\n".join(lines) + "\n"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name}: {count}" for name, count in counts.items()) or "none"


def _breakdown(counts: dict[str, int]) -> str:
    return f" ({_counts(counts)})" if counts else ""


def _cell(text: str) -> str:
    # A pipe inside a value would end the Markdown table cell.
    return text.replace("|", "\\|")


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    minutes = round(seconds / 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m" if minutes else f"{seconds:.0f}s"


def _median_and_p90(median: float | None, p90: float | None) -> str:
    if median is None:
        return "n/a (nothing to measure)"
    return f"median {format_duration(median)}, p90 {format_duration(p90)}"


def percentile(values: pd.Series, q: float) -> float | None:
    """Return the q-th percentile with linear interpolation, or None for no values."""
    if values.empty:
        return None
    return float(np.percentile(values.to_numpy(dtype=float), q, method="linear"))


def _value_counts(values: pd.Series) -> dict[str, int]:
    return {str(name): int(count) for name, count in values.value_counts().sort_index().items()}


def _read(ledger: Ledger, table: sa.Table, query) -> pd.DataFrame:
    with ledger.engine.connect() as connection:
        frame = pd.DataFrame(connection.execute(query).mappings().all(),
                             columns=[column.name for column in query.selected_columns])
    return restore_types(frame, table)


# Measures


def weekly_review(ledger: Ledger, week: str | IsoWeek) -> Review:
    """Compute every measure of the module's table for one ISO week from the ledger."""
    iso = parse_week(week) if isinstance(week, str) else week
    start, end = iso.start, iso.end
    review = Review(week=iso.key, start=start, end=end)

    history = _read(ledger, exceptions, sa.select(
        exceptions.c.id, exceptions.c.kind, exceptions.c.system, exceptions.c.account, exceptions.c.record_id,
        exceptions.c.owner, exceptions.c.run_id, exceptions.c.due_at, exceptions.c.opened_at,
        exceptions.c.closed_at).where(exceptions.c.opened_at < end))
    moves = _read(ledger, exception_transitions, sa.select(exception_transitions).where(
        exception_transitions.c.exception_id.in_(sa.select(exceptions.c.id).where(exceptions.c.opened_at < end))
    ).order_by(exception_transitions.c.at, exception_transitions.c.id))

    _first_pass(ledger, review, history, moves)
    _exception_flow(review, history, moves)
    _reruns(review, moves)
    _duplicates(ledger, review)
    _trigger_latency(ledger, review)
    _deliveries(ledger, review)
    return review


def _first_pass(ledger: Ledger, review: Review, history: pd.DataFrame, moves: pd.DataFrame) -> None:
    events = _read(ledger, audit_events, sa.select(
        audit_events.c.id, audit_events.c.trace_id, *[audit_events.c[name] for name in RECORD_KEY],
        audit_events.c.step, audit_events.c.at,
    ).where(audit_events.c.at >= review.start, audit_events.c.at < review.end,
            audit_events.c.step.in_(PROCESSING_STEPS)).order_by(audit_events.c.at, audit_events.c.id))
    if events.empty:
        return
    first_runs = events.groupby(RECORD_KEY, sort=False)["trace_id"].first().rename("first_run").reset_index()
    in_first_run = events.merge(first_runs, on=RECORD_KEY)
    in_first_run = in_first_run[in_first_run["trace_id"] == in_first_run["first_run"]]
    failed_keys = in_first_run.loc[in_first_run["step"].isin(FAILING_STEPS), RECORD_KEY]

    # An exception opened by the first run carries that run's ID, and a reopen carries it on its
    # transition. NOTE: a later reopen overwrites the exception's run_id, so an exception opened
    # by the first run and reopened by another run is attributed to the later run only.
    reopens = moves.loc[moves["action"] == "reopen", ["exception_id", "run_id"]].merge(
        history[["id", "system", "account", "record_id"]], left_on="exception_id", right_on="id")
    raised = pd.concat([history[["system", "account", "record_id", "run_id"]],
                        reopens[["system", "account", "record_id", "run_id"]]], ignore_index=True)
    raised = raised.dropna(subset=["run_id"]).astype({"record_id": str, "run_id": str})
    with_exception = first_runs.merge(raised, left_on=["system", "account", "record_id", "first_run"],
                                      right_on=["system", "account", "record_id", "run_id"])[RECORD_KEY]

    failed = pd.concat([failed_keys, with_exception], ignore_index=True).drop_duplicates()
    review.records_processed = len(first_runs)
    review.records_passed_first_time = len(first_runs) - len(failed)


def status_at(moves: pd.DataFrame, history: pd.DataFrame, moment: datetime) -> pd.Series:
    """Return each exception's status at `moment`, indexed by exception ID: its last transition's
    `to_status` before then, or `open` when it had none yet."""
    before = moves[moves["at"] < moment]
    last = before.groupby("exception_id")["to_status"].last()
    opened = history.loc[history["opened_at"] < moment, "id"]
    return pd.Series(opened.map(last).fillna(OPEN).to_numpy(), index=opened.to_numpy(), dtype="string")


def _exception_flow(review: Review, history: pd.DataFrame, moves: pd.DataFrame) -> None:
    start, end = pd.Timestamp(review.start), pd.Timestamp(review.end)
    opened = history[history["opened_at"] >= start]
    first_owner = moves.groupby("exception_id")["from_owner"].first()
    owner_at_opening = opened["id"].map(first_owner).fillna(opened["owner"])
    review.opened_by_kind = _value_counts(opened["kind"])
    review.opened_by_owner = _value_counts(owner_at_opening)

    # NOTE: a reopen clears closed_at, so an exception closed in the week and reopened since then
    # counts neither as closed nor in the time to resolution of this week.
    closed = history[(history["closed_at"] >= start) & (history["closed_at"] < end)]
    review.closed_by_kind = _value_counts(closed["kind"])
    review.closed_by_owner = _value_counts(closed["owner"])
    seconds = (closed["closed_at"] - closed["opened_at"]).dt.total_seconds()
    review.resolution_median_seconds = percentile(seconds, 50)
    review.resolution_p90_seconds = percentile(seconds, 90)

    # NOTE: only the latest due_at is stored, so an exception reopened after the week's end is
    # judged by its new due time.
    status = status_at(moves, history, review.end)
    active_ids = status[status.isin(ACTIVE)].index
    active = history[history["id"].isin(active_ids)]
    # A week still running is judged now: an item due later this week is not overdue yet.
    judged_at = min(end, pd.Timestamp(utc_now()))
    overdue = active[active["due_at"] < judged_at]
    review.overdue_at_end = len(overdue)
    review.overdue_by_owner = _value_counts(overdue["owner"])
    review.reconciliation_by_system = _value_counts(active.loc[active["kind"] == RECONCILIATION_KIND, "system"])


def _reruns(review: Review, moves: pd.DataFrame) -> None:
    if moves.empty:
        return
    ordered = moves.sort_values(["exception_id", "at", "id"]).copy()
    ordered["next_status"] = ordered.groupby("exception_id")["to_status"].shift(-1)
    in_week = ordered[(ordered["at"] >= pd.Timestamp(review.start)) & (ordered["at"] < pd.Timestamp(review.end))]
    retries = in_week[in_week["action"] == "retry"]
    replays = in_week[in_week["action"] == "replay"]
    review.retries = len(retries)
    review.retries_closed = int((retries["next_status"] == CLOSED).sum())
    review.replays = len(replays)
    review.replays_closed = int((replays["next_status"] == CLOSED).sum())


def _duplicates(ledger: Ledger, review: Review) -> None:
    query = sa.select(audit_events.c.step, sa.func.count().label("events")).where(
        audit_events.c.at >= review.start, audit_events.c.at < review.end,
        audit_events.c.step.in_(DUPLICATE_STEPS)).group_by(audit_events.c.step)
    with ledger.engine.connect() as connection:
        counts = dict(connection.execute(query).all())
    # NOTE: repeated webhook deliveries (`inbox_events.deliveries`) and outbox rows not sent again
    # are not counted, because the ledger keeps no time for each repeat.
    review.redeliveries = int(counts.get("redelivered", 0))
    review.stale_skipped = int(counts.get("skipped_stale", 0))


def _trigger_latency(ledger: Ledger, review: Review) -> None:
    created = _read(ledger, triggers, sa.select(triggers.c.status, triggers.c.created_at, triggers.c.updated_at).where(
        triggers.c.created_at >= review.start, triggers.c.created_at < review.end))
    finished = created[created["status"].isin(FINAL_TRIGGER_STATUSES)]
    seconds = (finished["updated_at"] - finished["created_at"]).dt.total_seconds()
    review.triggers_finished = len(finished)
    review.triggers_by_status = _value_counts(finished["status"])
    review.triggers_unfinished = int((created["status"] == REQUESTED).sum())
    review.trigger_latency_median_seconds = percentile(seconds, 50)
    review.trigger_latency_p90_seconds = percentile(seconds, 90)


def _deliveries(ledger: Ledger, review: Review) -> None:
    def by_target(status: str, moment: sa.Column) -> dict[str, int]:
        query = sa.select(outbox.c.target, sa.func.count().label("rows")).where(
            outbox.c.status == status, moment >= review.start, moment < review.end,
        ).group_by(outbox.c.target).order_by(outbox.c.target)
        with ledger.engine.connect() as connection:
            return {target: int(rows) for target, rows in connection.execute(query).all()}

    review.delivered_by_target = by_target("delivered", outbox.c.delivered_at)
    # The outbox stores no rejection time, so this uses `updated_at`. Planning and sending change
    # only pending, held, dry-run and sending rows, so a rejected row keeps its rejection time there.
    review.rejected_by_target = by_target("rejected", outbox.c.updated_at)


# Chart


def review_chart(review: Review) -> bytes:
    """Draw exceptions opened and closed by kind as grouped bars; return the PNG bytes."""
    # A bare Figure renders with the Agg canvas and leaves pyplot's global state alone, so this
    # is safe in a Dagster run or a test without a display.
    from matplotlib.figure import Figure

    kinds = sorted(set(review.opened_by_kind) | set(review.closed_by_kind))
    figure = Figure(figsize=(8, 4.5), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(f"Exceptions opened and closed, {review.week}")
    if kinds:
        positions = np.arange(len(kinds))
        width = 0.4
        axes.bar(positions - width / 2, [review.opened_by_kind.get(kind, 0) for kind in kinds], width,
                 label="opened")
        axes.bar(positions + width / 2, [review.closed_by_kind.get(kind, 0) for kind in kinds], width,
                 label="closed")
        axes.set_xticks(positions, kinds, rotation=20, ha="right")
        axes.set_ylabel("exceptions")
        axes.yaxis.get_major_locator().set_params(integer=True)
        axes.legend()
    else:
        axes.text(0.5, 0.5, "No exceptions opened or closed this week", ha="center", va="center",
                  transform=axes.transAxes)
        axes.set_axis_off()

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


# Dagster asset, job and schedule

REVIEW_ASSET = dg.AssetKey(["meshline", "weekly_review"])
REVIEW_JOB = "meshline_weekly_review"


def review_partitions() -> dg.WeeklyPartitionsDefinition:
    """Weekly partitions from Monday 00:00 UTC, keyed by the Monday's date (`week_of_partition` maps a key
    to its ISO week). The first one is the week that contains MESHLINE_PARTITIONS_START."""
    first_day = date.fromisoformat(settings.partitions_start())
    # Dagster starts weekly partitions at the first split day on or after start_date, so starting at
    # the Monday on or before the first import day keeps that day's week. day_offset=1 splits on
    # Mondays (0 is Sunday).
    first_monday = first_day - timedelta(days=first_day.weekday())
    return dg.WeeklyPartitionsDefinition(start_date=first_monday.isoformat(), timezone="UTC", day_offset=1)


def chart_path(week: str) -> Path:
    return settings.meshline_home() / "reviews" / f"{week}.png"


def review_metadata(review: Review, chart: Path) -> dict:
    """Build the asset metadata: the Markdown review, the chart's path, every measure as JSON, and the key numbers."""
    metadata = {
        "review": dg.MetadataValue.md(review.as_markdown()),
        "chart": dg.MetadataValue.path(str(chart)),
        "measures": dg.MetadataValue.json(review.as_dict()),
        "iso_week": review.week,
        "records_processed": review.records_processed,
        "exceptions_opened": review.exceptions_opened,
        "exceptions_closed": review.exceptions_closed,
        "overdue_at_week_end": review.overdue_at_end,
        "retries": review.retries,
        "replays": review.replays,
        "duplicates_prevented": review.duplicates_prevented,
        "reconciliation_differences": review.reconciliation_differences,
        "delivered": review.delivered,
        "rejected": review.rejected,
    }
    # Dagster plots numeric metadata across partitions, so a measure with nothing to measure is
    # left out instead of being written as a zero.
    optional = {
        "first_pass_yield": review.first_pass_yield,
        "resolution_median_hours": _hours(review.resolution_median_seconds),
        "resolution_p90_hours": _hours(review.resolution_p90_seconds),
        "trigger_latency_median_seconds": review.trigger_latency_median_seconds,
        "trigger_latency_p90_seconds": review.trigger_latency_p90_seconds,
    }
    metadata.update({name: dg.MetadataValue.float(value) for name, value in optional.items() if value is not None})
    return metadata


def _hours(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / 3600


def weekly_review_asset() -> dg.AssetsDefinition:
    """Build the `meshline/weekly_review` asset on weekly partitions."""

    @dg.asset(key=REVIEW_ASSET, group_name="meshline", kinds={"meshline"}, partitions_def=review_partitions(),
              required_resource_keys={"ledger"},
              description="The weekly execution-quality review of one ISO week (Monday 00:00 UTC to the next "
                          "Monday): first-pass yield, exceptions opened and closed, time to resolution, overdue "
                          "items, retries and replays, duplicates prevented, trigger latency, reconciliation "
                          "differences and deliveries. The chart is written under MESHLINE_HOME/reviews. "
                          "`meshline review` prints the same measures.")
    def weekly_review_report(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        week = week_of_partition(context.partition_key)
        review = weekly_review(context.resources.ledger.open(), week)

        # Dagster 1.13 has no image metadata type, so the PNG is stored as a file and the metadata
        # carries its path next to the Markdown with the numbers.
        chart = chart_path(week.key)
        chart.parent.mkdir(parents=True, exist_ok=True)
        chart.write_bytes(review_chart(review))
        context.log.info(f"weekly review {week.key}: {review.exceptions_opened} exceptions opened, "
                         f"{review.exceptions_closed} closed, chart at {chart}")
        return dg.MaterializeResult(metadata=review_metadata(review, chart))

    return weekly_review_report


weekly_review_job = dg.define_asset_job(
    REVIEW_JOB, selection=[REVIEW_ASSET],
    description="Computes the weekly execution-quality review for one ISO week.")

# A weekly partition is complete at Monday 00:00 UTC, and the schedule reviews it at 06:00 UTC that Monday.
weekly_review_schedule = dg.build_schedule_from_partitioned_job(
    weekly_review_job, name="weekly_review_monday", hour_of_day=6, minute_of_hour=0, day_of_week=1,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Reviews the ISO week that ended at Monday 00:00 UTC, every Monday at 06:00 UTC.")
