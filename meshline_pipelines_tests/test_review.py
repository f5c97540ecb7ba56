"""The weekly review against a ledger state built by hand, with every measure computed on paper.

The reviewed week is 2026-W47: Monday 2026-11-16 00:00 UTC up to Monday 2026-11-23 00:00 UTC.
Each row below notes why it counts or not, so a failing assert can be checked against its row.
"""

import json
from datetime import datetime, timedelta, timezone
from fractions import Fraction

import dagster as dg
import pandas as pd
import pytest
from typer.testing import CliRunner

from meshline_pipelines.cli import app
from meshline_pipelines.ledger import Ledger
from meshline_pipelines.ledger.tables import audit_events, exception_transitions, exceptions, outbox, triggers
from meshline_pipelines.resources import LedgerResource
from meshline_pipelines.review import (
    REVIEW_ASSET, IsoWeek, Review, last_complete_week, parse_week, percentile, review_chart, week_of_partition,
    weekly_review, weekly_review_asset, weekly_review_job, weekly_review_schedule,
)

WEEK = "2026-W47"
MONDAY = datetime(2026, 11, 16, tzinfo=timezone.utc)
WEEK_END = MONDAY + timedelta(days=7)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HOUR = 3600


def at(day: float, hour: float = 0, minute: float = 0) -> datetime:
    """Return a time relative to the reviewed week: `day` 0 is its Monday, and negative days fall before it."""
    return MONDAY + timedelta(days=day, hours=hour, minutes=minute)


def _audit(record_id: str, step: str, run_id: str, when: datetime, *, system: str = "shopify",
           account: str = "shop-1", entity: str = "orders") -> dict:
    return {"trace_id": run_id, "system": system, "account": account, "entity": entity, "record_id": record_id,
            "step": step, "actor": "meshline", "at": when, "details": None}


AUDIT = [
    _audit("r1", "stored", "run-a", at(0, 1)),                # passes
    _audit("r2", "rejected", "run-a", at(0, 1)),              # fails: rejected on its first run
    _audit("r2", "stored", "run-b", at(1)),
    _audit("r3", "stored", "run-a", at(0, 1)),                # fails: run-a opened E1 on it
    _audit("r3", "stored", "run-a", at(0, 1), system="stripe", account="acct-1", entity="payments"),  # passes
    _audit("r4", "stored", "run-b", at(1)),                   # passes: E2 came from another run
    _audit("r5", "conflict", "run-c", at(2)),                 # fails: conflict on its first run
    _audit("r6", "stored", "run-old", at(-1)),                # before the week, so run-b is its first run
    _audit("r6", "stored", "run-b", at(1)),                   # passes
    _audit("r7", "stored", "run-b", at(1)),                   # fails: run-b reopened E3 on it
    _audit("r9", "stored", "run-e", WEEK_END),                # at the week's end: next week
    _audit("r11", "stored", "run-d", at(3)),                  # passes: the rejection is on a later run
    _audit("r11", "rejected", "run-e", at(4)),
    _audit("r12", "stored", "run-d", at(3)),                  # passes
    _audit("r8", "redelivered", "run-c", at(2)),              # duplicates, not processing
    _audit("r1", "redelivered", "run-f", at(5)),
    _audit("r4", "skipped_stale", "run-d", at(3)),
    _audit("r1", "redelivered", "run-old", at(-2)),           # before the week
    _audit("r1", "triggered", "run-a", at(0)),                # not a processing step
]
# Processed: shopify r1 r2 r3 r4 r5 r6 r7 r11 r12 and stripe r3. Failed: r2 r3 r5 r7.
PROCESSED, PASSED = 10, 6


def _exception(number: int, *, kind: str, record_id: str, owner: str, opened_at: datetime, due_at: datetime,
               status: str, closed_at: datetime | None = None, run_id: str = "run-q", system: str = "shopify",
               account: str = "shop-1") -> dict:
    return {"id": number, "fingerprint": f"fp-{number}", "kind": kind, "system": system, "account": account,
            "entity": "orders", "record_id": record_id, "partition_key": None, "rule": f"{kind}:rule",
            "field": None, "value": None, "owner": owner, "decision_owner": None, "reason": "hand-made",
            "details": None, "status": status, "outcome": None, "attempts": 0, "occurrences": 1, "due_at": due_at,
            "opened_at": opened_at, "last_seen_at": opened_at, "updated_at": closed_at or opened_at,
            "run_id": run_id, "closed_at": closed_at}


RECON = "reconciliation_mismatch"
EXCEPTIONS = [
    # Opened and closed in the week: 1 hour to resolution.
    _exception(1, kind="missing_field", record_id="r3", owner="ops", opened_at=at(0, 2), due_at=at(1),
               status="closed", closed_at=at(0, 3), run_id="run-a"),
    # 2 hours. Opened by run-z, so r4 still passes.
    _exception(2, kind="missing_field", record_id="r4", owner="ops", opened_at=at(1), due_at=at(2),
               status="closed", closed_at=at(1, 2), run_id="run-z"),
    # Opened and closed before the week, reopened by run-b in it: open and overdue at the week's end.
    _exception(3, kind="unmapped_reference", record_id="r7", owner="finance", opened_at=at(-3), due_at=at(2),
               status="open", run_id="run-b"),
    # Open and overdue at the week's end, and a stripe reconciliation difference.
    _exception(4, kind=RECON, record_id="pay-4", owner="finance", opened_at=at(2), due_at=at(6), status="open",
               system="stripe", account="acct-1"),
    # Closed in the week after 2 days.
    _exception(5, kind=RECON, record_id="ord-5", owner="finance", opened_at=at(3), due_at=at(8), status="closed",
               closed_at=at(5), system="amazon", account="seller-1"),
    # Escalated from finance to lead, not yet due: active, a stripe difference, not overdue.
    _exception(6, kind=RECON, record_id="pay-6", owner="lead", opened_at=at(4), due_at=at(10), status="escalated",
               system="stripe", account="acct-1"),
    # A retry that closed it: 2 hours to resolution.
    _exception(7, kind="missing_field", record_id="o-7", owner="ops", opened_at=at(1), due_at=at(3),
               status="closed", closed_at=at(1, 2), run_id="run-b"),
    # Two replays, the second closed it: 28 hours to resolution.
    _exception(8, kind="missing_field", record_id="o-8", owner="ops", opened_at=at(2), due_at=at(4),
               status="closed", closed_at=at(3, 4)),
    # Opened before the week, closed after it: open and overdue at the week's end.
    _exception(9, kind="missing_field", record_id="o-9", owner="ops", opened_at=at(-1), due_at=at(1),
               status="closed", closed_at=at(8)),
    # Due exactly at the week's end, so not overdue. Its retry failed.
    _exception(10, kind="unmapped_reference", record_id="o-10", owner="ops", opened_at=at(6), due_at=WEEK_END,
               status="open"),
    # Opened after the week: not counted anywhere.
    _exception(11, kind="missing_field", record_id="o-11", owner="ops", opened_at=at(8), due_at=at(9),
               status="open"),
    # Retrying at the week's end and overdue. The retry closed it after the week.
    _exception(12, kind="missing_field", record_id="o-12", owner="ops", opened_at=at(-5), due_at=at(-4),
               status="closed", closed_at=at(7, 1)),
    # A reconciliation difference rejected before the week: not active at the week's end.
    _exception(13, kind=RECON, record_id="ord-13", owner="finance", opened_at=at(-2), due_at=at(5),
               status="rejected", system="amazon", account="seller-1"),
]


def _move(exception_id: int, action: str, from_status: str, to_status: str, when: datetime, *,
          owner: str = "ops", to_owner: str | None = None, run_id: str | None = None) -> dict:
    return {"exception_id": exception_id, "action": action, "from_status": from_status, "to_status": to_status,
            "from_owner": owner, "to_owner": to_owner or owner, "actor": "tester", "reason": None,
            "run_id": run_id, "at": when}


TRANSITIONS = [
    _move(1, "close", "open", "closed", at(0, 3)),
    _move(2, "close", "open", "closed", at(1, 2)),
    _move(3, "close", "open", "closed", at(-1), owner="finance"),
    _move(3, "reopen", "closed", "open", at(1), owner="finance", run_id="run-b"),
    _move(5, "close", "open", "closed", at(5), owner="finance"),
    _move(6, "escalate", "open", "escalated", at(5), owner="finance", to_owner="lead"),
    _move(7, "retry", "open", "retrying", at(1, 1)),
    _move(7, "close", "retrying", "closed", at(1, 2), run_id="run-r7"),
    _move(8, "replay", "open", "retrying", at(2, 1)),
    _move(8, "run_finished", "retrying", "open", at(2, 2), run_id="run-p1"),
    _move(8, "replay", "open", "retrying", at(3)),
    _move(8, "close", "retrying", "closed", at(3, 4), run_id="run-p2"),
    _move(9, "close", "open", "closed", at(8)),
    _move(10, "retry", "open", "retrying", at(6, 1)),
    _move(10, "run_finished", "retrying", "open", at(6, 2), run_id="run-r10"),
    _move(12, "retry", "open", "retrying", at(-3)),           # before the week
    _move(12, "run_finished", "retrying", "open", at(-3, 1)),
    _move(12, "retry", "open", "retrying", at(6, 23)),
    _move(12, "close", "retrying", "closed", at(7, 1), run_id="run-r12"),
    _move(13, "reject", "open", "rejected", at(-1), owner="finance"),
]


def _trigger(reference: str, kind: str, status: str, created_at: datetime, latency_seconds: float) -> dict:
    return {"kind": kind, "system": "shopify", "account": "shop-1", "stream": "orders", "record_id": None,
            "reference": reference, "owner": "ops", "status": status, "run_key": None, "run_id": None,
            "partition_key": None, "created_at": created_at,
            "updated_at": created_at + timedelta(seconds=latency_seconds), "details": None}


TRIGGERS = [
    _trigger("t1", "webhook", "succeeded", at(0), 30),
    _trigger("t2", "poll", "succeeded", at(1), 90),
    _trigger("t3", "file", "failed", at(2), 600),
    _trigger("t4", "manual", "requested", at(3), 0),          # no outcome yet
    _trigger("t5", "poll", "succeeded", at(-1), 45),          # created before the week
    _trigger("t6", "webhook", "succeeded", at(6, 23, 59), 120),  # finished after the week, still counted
]


def _outbox(number: int, target: str, status: str, *, delivered_at: datetime | None = None,
            updated_at: datetime) -> dict:
    return {"target": target, "target_account": "main", "entity": "orders", "record_key": f"k{number}",
            "source_system": "shopify", "source_account": "shop-1", "source_id": f"s{number}", "version": "v1",
            "idempotency_key": f"idem-{number}", "payload": "{}", "status": status, "attempts": 1,
            "last_error": None, "target_id": None, "partition_key": None, "run_id": None,
            "created_at": at(-7), "updated_at": updated_at, "delivered_at": delivered_at}


OUTBOX = [
    _outbox(1, "netsuite", "delivered", delivered_at=at(1), updated_at=at(1)),
    _outbox(2, "netsuite", "delivered", delivered_at=at(2), updated_at=at(2)),
    _outbox(3, "hubspot", "delivered", delivered_at=at(4), updated_at=at(4)),
    _outbox(4, "hubspot", "delivered", delivered_at=at(-1), updated_at=at(-1)),  # before the week
    _outbox(5, "netsuite", "rejected", updated_at=at(3)),
    _outbox(6, "shipstation", "rejected", updated_at=at(9)),                     # after the week
    _outbox(7, "netsuite", "pending", updated_at=at(2)),
]


@pytest.fixture
def reviewed_ledger(ledger: Ledger) -> Ledger:
    with ledger.engine.begin() as connection:
        connection.execute(audit_events.insert(), AUDIT)
        connection.execute(exceptions.insert(), EXCEPTIONS)
        connection.execute(exception_transitions.insert(), TRANSITIONS)
        connection.execute(triggers.insert(), TRIGGERS)
        connection.execute(outbox.insert(), OUTBOX)
    return ledger


# ISO weeks and percentiles


def test_parse_week_bounds():
    week = parse_week("2026-W48")
    assert week == IsoWeek(2026, 48)
    assert week.start == datetime(2026, 11, 23, tzinfo=timezone.utc)
    assert week.end == datetime(2026, 11, 30, tzinfo=timezone.utc)
    assert week.partition_key == "2026-11-23"


def test_parse_week_across_year_boundary():
    assert parse_week("2026-W01").start == datetime(2025, 12, 29, tzinfo=timezone.utc)
    assert parse_week("2020-W53").start == datetime(2020, 12, 28, tzinfo=timezone.utc)


@pytest.mark.parametrize("text", ["2026-48", "2026-W4", "2026W48", "week 48", "", "2026-11-23"])
def test_parse_week_rejects_malformed(text):
    with pytest.raises(ValueError) as error:
        parse_week(text)
    assert repr(text) in str(error.value)
    assert "YYYY-Www" in str(error.value)


def test_parse_week_rejects_missing_week_53():
    with pytest.raises(ValueError) as error:
        parse_week("2025-W53")
    assert "'2025-W53'" in str(error.value)
    assert "2025 has no ISO week 53" in str(error.value)


def test_week_of_partition_maps_monday():
    assert week_of_partition("2026-11-16").key == WEEK
    assert week_of_partition("2025-12-29").key == "2026-W01"
    with pytest.raises(ValueError, match="not a Monday"):
        week_of_partition("2026-11-17")


def test_last_complete_week():
    assert last_complete_week(datetime(2026, 11, 23, 6, tzinfo=timezone.utc)).key == WEEK
    assert last_complete_week(datetime(2026, 11, 29, 23, 59, tzinfo=timezone.utc)).key == WEEK
    assert last_complete_week(datetime(2026, 1, 3, tzinfo=timezone.utc)).key == "2025-W52"


def test_percentile_interpolates_linearly():
    values = pd.Series([10.0, 20.0, 40.0, 100.0])
    assert percentile(values, 50) == 30.0
    assert percentile(values, 90) == pytest.approx(82.0)
    assert percentile(pd.Series([5.0]), 90) == 5.0
    assert percentile(pd.Series([], dtype=float), 50) is None


# The measures on the hand-built week


def test_first_pass_yield(reviewed_ledger):
    review = weekly_review(reviewed_ledger, WEEK)
    assert review.records_processed == PROCESSED
    assert review.records_passed_first_time == PASSED
    assert Fraction(review.records_passed_first_time, review.records_processed) == Fraction(3, 5)
    assert review.first_pass_yield == pytest.approx(0.6)


def test_exceptions_opened_and_closed(reviewed_ledger):
    review = weekly_review(reviewed_ledger, WEEK)
    assert review.opened_by_kind == {"missing_field": 4, RECON: 3, "unmapped_reference": 1}
    # E6 was opened with finance and escalated to lead afterwards.
    assert review.opened_by_owner == {"finance": 3, "ops": 5}
    assert review.exceptions_opened == 8
    assert review.closed_by_kind == {"missing_field": 4, RECON: 1}
    assert review.closed_by_owner == {"finance": 1, "ops": 4}
    assert review.exceptions_closed == 5


def test_time_to_resolution(reviewed_ledger):
    review = weekly_review(reviewed_ledger, WEEK)
    # Hours to resolution, sorted: 1, 2, 2, 28, 48. The p90 rank is 4 * 0.9 = 3.6: 28 + 0.6 * (48 - 28).
    assert review.resolution_median_seconds == 2 * HOUR
    assert review.resolution_p90_seconds == pytest.approx(40 * HOUR)


def test_overdue_at_week_end(reviewed_ledger):
    review = weekly_review(reviewed_ledger, WEEK)
    # E3 (reopened), E4, E9 (closed only after the week) and E12 (retrying then).
    assert review.overdue_at_end == 4
    assert review.overdue_by_owner == {"finance": 2, "ops": 2}


def test_retries_and_replays(reviewed_ledger):
    review = weekly_review(reviewed_ledger, WEEK)
    assert review.retries == 3
    assert review.retries_closed == 2
    assert review.replays == 2
    assert review.replays_closed == 1


def test_duplicates_prevented(reviewed_ledger):
    review = weekly_review(reviewed_ledger, WEEK)
    assert review.redeliveries == 2
    assert review.stale_skipped == 1
    assert review.duplicates_prevented == 3


def test_trigger_latency(reviewed_ledger):
    review = weekly_review(reviewed_ledger, WEEK)
    # Seconds, sorted: 30, 90, 120, 600. The median is (90 + 120) / 2. The p90 rank is 2.7: 120 + 0.7 * (600 - 120).
    assert review.triggers_finished == 4
    assert review.triggers_by_status == {"failed": 1, "succeeded": 3}
    assert review.triggers_unfinished == 1
    assert review.trigger_latency_median_seconds == 105.0
    assert review.trigger_latency_p90_seconds == pytest.approx(456.0)


def test_reconciliation_differences(reviewed_ledger):
    review = weekly_review(reviewed_ledger, WEEK)
    assert review.reconciliation_by_system == {"stripe": 2}
    assert review.reconciliation_differences == 2


def test_deliveries(reviewed_ledger):
    review = weekly_review(reviewed_ledger, WEEK)
    assert review.delivered_by_target == {"hubspot": 1, "netsuite": 2}
    assert review.rejected_by_target == {"netsuite": 1}
    assert review.delivered == 3
    assert review.rejected == 1


def test_as_dict_is_json_safe(reviewed_ledger):
    measures = json.loads(json.dumps(weekly_review(reviewed_ledger, WEEK).as_dict()))
    assert measures["week"] == WEEK
    assert measures["start"] == "2026-11-16T00:00:00+00:00"
    assert measures["first_pass"]["yield"] == pytest.approx(0.6)
    assert measures["exceptions"]["resolution_p90_seconds"] == pytest.approx(40 * HOUR)
    assert measures["reruns"] == {"retries": 3, "retries_closed": 2, "replays": 2, "replays_closed": 1}
    assert measures["deliveries"]["delivered_by_target"] == {"hubspot": 1, "netsuite": 2}


def test_as_markdown_lists_measures(reviewed_ledger):
    markdown = weekly_review(reviewed_ledger, WEEK).as_markdown()
    assert markdown.startswith(f"## Weekly review {WEEK}")
    assert "| first-pass yield | 60.0% (6 of 10 records) |" in markdown
    assert "| time to resolution | median 2h 0m, p90 1d 16h 0m |" in markdown
    assert f"| {RECON} | 3 | 1 |" in markdown


def test_empty_week_gives_zeros(reviewed_ledger):
    review = weekly_review(reviewed_ledger, "2025-W10")
    assert review.records_processed == 0
    assert review.first_pass_yield is None
    assert review.exceptions_opened == 0
    assert review.exceptions_closed == 0
    assert review.resolution_median_seconds is None
    assert review.overdue_at_end == 0
    assert review.retries == 0
    assert review.replays == 0
    assert review.duplicates_prevented == 0
    assert review.triggers_finished == 0
    assert review.trigger_latency_p90_seconds is None
    assert review.reconciliation_differences == 0
    assert review.delivered == 0
    assert review.rejected == 0
    assert "n/a (no records processed)" in review.as_markdown()
    assert json.loads(json.dumps(review.as_dict()))["first_pass"]["yield"] is None


def test_empty_ledger_gives_zeros(ledger):
    review = weekly_review(ledger, WEEK)
    assert review.records_processed == 0
    assert review.exceptions_opened == 0
    assert review.overdue_at_end == 0
    assert review.reconciliation_differences == 0
    assert review_chart(review).startswith(PNG_SIGNATURE)


# Chart, asset, schedule and command line


def test_review_chart_is_png():
    review = Review(week=WEEK, start=MONDAY, end=WEEK_END, opened_by_kind={"missing_field": 3},
                    closed_by_kind={"missing_field": 1, RECON: 2})
    chart = review_chart(review)
    assert chart.startswith(PNG_SIGNATURE)
    assert len(chart) > 1000


def test_asset_materializes_partition(reviewed_ledger, ledger_url, tmp_path, monkeypatch):
    monkeypatch.setenv("MESHLINE_HOME", str(tmp_path / "home"))
    result = dg.materialize([weekly_review_asset()], partition_key="2026-11-16",
                            resources={"ledger": LedgerResource(database_url=ledger_url)})
    assert result.success
    materialization = result.asset_materializations_for_node("meshline__weekly_review")[0]
    assert materialization.asset_key == REVIEW_ASSET
    assert materialization.partition == "2026-11-16"

    metadata = materialization.metadata
    assert isinstance(metadata["review"], dg.MarkdownMetadataValue)
    assert metadata["review"].value.startswith(f"## Weekly review {WEEK}")
    assert metadata["iso_week"].value == WEEK
    assert metadata["exceptions_opened"].value == 8
    assert metadata["first_pass_yield"].value == pytest.approx(0.6)
    assert metadata["resolution_p90_hours"].value == pytest.approx(40.0)

    chart = tmp_path / "home" / "reviews" / f"{WEEK}.png"
    assert metadata["chart"].value == str(chart)
    assert chart.read_bytes().startswith(PNG_SIGNATURE)


def test_schedule_requests_week_just_ended():
    definitions = dg.Definitions(assets=[weekly_review_asset()], jobs=[weekly_review_job],
                                 schedules=[weekly_review_schedule],
                                 resources={"ledger": LedgerResource(database_url="sqlite://")})
    schedule = definitions.resolve_schedule_def("weekly_review_monday")
    assert schedule.cron_schedule == "0 6 * * 1"
    assert schedule.execution_timezone == "UTC"

    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 23, 6, tzinfo=timezone.utc))
    requests = schedule.evaluate_tick(context).run_requests
    assert [request.partition_key for request in requests] == ["2026-11-16"]


@pytest.fixture
def review_cli(reviewed_ledger, ledger_url, tmp_path, monkeypatch):
    monkeypatch.setenv("MESHLINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MESHLINE_DATABASE_URL", ledger_url)
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def test_cli_review_json(review_cli):
    result = review_cli.invoke(app, ["review", "--week", WEEK, "--format", "json"])
    assert result.exit_code == 0, result.output
    measures = json.loads(result.output)
    assert measures["week"] == WEEK
    assert measures["first_pass"]["records_processed"] == PROCESSED
    assert measures["triggers"]["latency_median_seconds"] == 105.0


def test_cli_review_table(review_cli):
    result = review_cli.invoke(app, ["review", "--week", WEEK])
    assert result.exit_code == 0, result.output
    assert f"weekly review {WEEK}" in result.output
    assert "60.0% (6 of 10 records)" in result.output


def test_cli_review_defaults_to_last_week(review_cli):
    result = review_cli.invoke(app, ["review", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["week"] == last_complete_week().key


def test_cli_review_rejects_malformed_week(review_cli):
    result = review_cli.invoke(app, ["review", "--week", "2026-47"])
    assert result.exit_code == 2
    assert "invalid week '2026-47'" in result.output
    assert "YYYY-Www" in result.output
