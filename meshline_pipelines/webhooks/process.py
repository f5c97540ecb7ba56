"""Inbox events into the ledger: each webhook becomes records of a stream, stored the usual way.

A Shopify webhook body is the resource in its REST shape (an order, a refund, a customer); a
Stripe event carries its object in `data.object`. Events are grouped by stream, account and the
UTC day they were triggered, and each group runs through the same path as a partition: land raw,
normalize, validate, store, exceptions. Each event is recorded as a webhook trigger and as the
first audit step (`triggered`) of its record.

An event older than what is stored never overwrites it. Shopify records carry their update time
as their version, so the ledger skips an older one as stale. Stripe objects have no update time,
so an event older than the last one applied to the same object is ignored here.
"""

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from meshline_pipelines import compliance
from meshline_pipelines.ingest import StreamRun, run_batches
from meshline_pipelines.ledger import Ledger
from meshline_pipelines.ledger.store import canonical_json, utc_now
from meshline_pipelines.ledger.tables import audit_events, inbox_events
from meshline_pipelines.routing import Routing
from meshline_pipelines.sources.base import SourceBatch
from meshline_pipelines.streams import Stream
from meshline_pipelines.triggers import FAILED, SUCCEEDED, finish_trigger, record_trigger, trigger_tag
from meshline_pipelines.webhooks.inbox import IGNORED, PROCESSED
from meshline_pipelines.webhooks.inbox import FAILED as EVENT_FAILED

log = logging.getLogger(__name__)

SHOPIFY_TOPICS = {
    "orders": ("orders/create", "orders/updated", "orders/paid", "orders/cancelled", "orders/fulfilled",
               "orders/partially_fulfilled"),
    "refunds": ("refunds/create",),
    "customers": ("customers/create", "customers/update", "customers/enable", "customers/disable"),
    "products": ("products/create", "products/update"),
    "inventory_levels": ("inventory_levels/update", "inventory_levels/connect"),
}
SHOPIFY_DELETES = {"orders/delete": "orders", "customers/delete": "customers", "products/delete": "products"}
STRIPE_PREFIXES = (("charge.refund.", "refunds"), ("charge.dispute.", None), ("charge.", "charges"),
                   ("refund.", "refunds"), ("payout.", "payouts"))


@dataclass
class Routed:
    """The meaning of one inbox event: records of a stream, a deletion, a compliance request, or nothing."""

    action: str  # "records", "delete", "compliance" or "ignore"
    stream: str | None = None
    records: list[Any] = field(default_factory=list)
    record_id: str | None = None
    reason: str | None = None


def route_event(system: str, topic: str, body: Any) -> Routed:
    """Decide what an event means from its system, topic and parsed body."""
    if not isinstance(body, dict):
        return Routed("ignore", reason=f"the body is a {type(body).__name__}, expected a JSON object")

    if system == "shopify":
        if topic in compliance.COMPLIANCE_TOPICS:
            return Routed("compliance", record_id=str((body.get("customer") or {}).get("id") or body.get("shop_id")))
        if topic in SHOPIFY_DELETES:
            return Routed("delete", stream=SHOPIFY_DELETES[topic], record_id=_text(body.get("id")))
        for stream, topics in SHOPIFY_TOPICS.items():
            if topic in topics:
                return Routed("records", stream=stream, records=[body], record_id=_text(body.get("id")))
        return Routed("ignore", reason=f"MeshLine has no stream for the Shopify topic {topic}")

    if system == "stripe":
        changed = (body.get("data") or {}).get("object")
        if not isinstance(changed, dict):
            return Routed("ignore", reason="the Stripe event has no data.object")
        for prefix, stream in STRIPE_PREFIXES:
            if topic.startswith(prefix) and stream:
                return Routed("records", stream=stream, records=[changed], record_id=_text(changed.get("id")))
        return Routed("ignore", reason=f"MeshLine has no stream for the Stripe event type {topic}")

    return Routed("ignore", reason=f"unknown system {system}")


def _text(value: Any) -> str | None:
    return None if value is None or isinstance(value, bool) else str(value)


def _parse(payload: str) -> Any:
    try:
        return json.loads(payload)
    except json.JSONDecodeError:
        return None


def _last_applied(ledger: Ledger, system: str, record_ids: list[str]) -> dict[str, datetime]:
    """Return the trigger time of the newest processed event of each record."""
    if not record_ids:
        return {}
    query = (sa.select(inbox_events.c.record_id, sa.func.max(inbox_events.c.triggered_at))
             .where(inbox_events.c.system == system, inbox_events.c.status == PROCESSED,
                    inbox_events.c.record_id.in_(record_ids))
             .group_by(inbox_events.c.record_id))
    with ledger.engine.connect() as connection:
        rows = connection.execute(query).all()
    # SQLite returns naive datetimes; the ledger writes UTC, so they are read back as UTC.
    return {record_id: pd.Timestamp(moment, tz="UTC") if pd.Timestamp(moment).tzinfo is None
            else pd.Timestamp(moment).tz_convert("UTC") for record_id, moment in rows if moment is not None}


def _finish(ledger: Ledger, event_id: int, status: str, *, record_id: str | None, run_id: str | None,
            error: str | None = None) -> None:
    with ledger.engine.begin() as connection:
        connection.execute(inbox_events.update().where(inbox_events.c.id == event_id).values(
            status=status, record_id=record_id, run_id=run_id, error=error, processed_at=utc_now()))


def _audit_triggered(ledger: Ledger, event: pd.Series, routed: Routed, entity: str, run_id: str | None) -> None:
    with ledger.engine.begin() as connection:
        connection.execute(audit_events.insert().values(
            trace_id=run_id or "local", system=event["system"], account=event["account"], entity=entity,
            record_id=routed.record_id or f"event:{event['event_id']}", step="triggered",
            actor=f"{event['system']}:webhook", at=utc_now(),
            details=canonical_json({"topic": event["topic"], "event_id": event["event_id"], "inbox_id": int(event["id"])}),
        ))


@dataclass
class InboxRun:
    """Per inbox event, what processing did with it; and the stream runs it took."""

    statuses: dict[int, str] = field(default_factory=dict)
    runs: list[StreamRun] = field(default_factory=list)


def process_events(events: pd.DataFrame, streams: list[Stream], ledger: Ledger, routing: Routing, *,
                   run_id: str | None = None, max_failure_rate: float = 0.2,
                   logger: logging.Logger | Any = log) -> InboxRun:
    """Store the records of received inbox events and mark each event processed, ignored or failed."""
    by_name = {(stream.system, stream.name): stream for stream in streams}
    outcome = InboxRun()
    groups: dict[tuple[str, str, str, str], list[tuple[pd.Series, Routed]]] = {}

    ordered = events.sort_values(["triggered_at", "id"], na_position="first")
    for _, event in ordered.iterrows():
        event_id = int(event["id"])
        routed = route_event(event["system"], event["topic"], _parse(event["payload"]))
        owner = routing.system_owner(event["system"])
        record_trigger(ledger, kind="webhook", system=event["system"], account=event["account"], stream=routed.stream,
                       record_id=routed.record_id, reference=str(event["event_id"]), owner=owner,
                       details={"topic": event["topic"], "inbox_id": event_id})
        tag = trigger_tag("webhook", event["system"], str(event["event_id"]))

        if routed.action == "ignore":
            _finish(ledger, event_id, IGNORED, record_id=routed.record_id, run_id=run_id, error=routed.reason)
            finish_trigger(ledger, tag, run_id=run_id or "local", status=SUCCEEDED)
            outcome.statuses[event_id] = IGNORED
            continue

        entity = (by_name[(event["system"], routed.stream)].tables[0]
                  if routed.stream and (event["system"], routed.stream) in by_name else "compliance")
        _audit_triggered(ledger, event, routed, entity, run_id)

        if routed.action in ("compliance", "delete"):
            status, error = _apply(ledger, event, routed, entity, run_id)
            _finish(ledger, event_id, status, record_id=routed.record_id, run_id=run_id, error=error)
            finish_trigger(ledger, tag, run_id=run_id or "local", status=FAILED if error else SUCCEEDED, error=error)
            outcome.statuses[event_id] = status
            continue

        moment = event["triggered_at"] if pd.notna(event["triggered_at"]) else event["received_at"]
        day = pd.Timestamp(moment).tz_convert("UTC").strftime("%Y-%m-%d")
        groups.setdefault((event["system"], event["account"], routed.stream, day), []).append((event, routed))

    for (system, account, stream_name, day), members in sorted(groups.items()):
        stream = by_name[(system, stream_name)]
        members = _newest_per_record(ledger, system, members, outcome, run_id)
        if not members:
            continue
        batches = [SourceBatch(origin=f"webhook {event['topic']} {event['event_id']}", records=routed.records,
                               fetched_at=event["received_at"]) for event, routed in members]
        try:
            run = run_batches(stream, account, lambda pages=batches: pages, ledger, routing, partition_key=day,
                              run_id=run_id, max_failure_rate=max_failure_rate, logger=logger)
        except Exception as exc:  # noqa: BLE001 - each event records why it failed, then the run fails
            for event, routed in members:
                _fail(ledger, event, routed, run_id, f"{type(exc).__name__}: {exc}", outcome)
            raise
        outcome.runs.append(run)
        status = EVENT_FAILED if run.quarantined else PROCESSED
        error = "the partition's records failed validation above the maximum share" if run.quarantined else None
        for event, routed in members:
            _finish(ledger, int(event["id"]), status, record_id=routed.record_id, run_id=run_id, error=error)
            finish_trigger(ledger, trigger_tag("webhook", system, str(event["event_id"])), run_id=run_id or "local",
                           status=FAILED if error else SUCCEEDED, error=error)
            outcome.statuses[int(event["id"])] = status
    return outcome


def _fail(ledger, event, routed, run_id, error, outcome) -> None:
    _finish(ledger, int(event["id"]), EVENT_FAILED, record_id=routed.record_id, run_id=run_id, error=error[:500])
    finish_trigger(ledger, trigger_tag("webhook", event["system"], str(event["event_id"])), run_id=run_id or "local",
                   status=FAILED, error=error)
    outcome.statuses[int(event["id"])] = EVENT_FAILED


def _newest_per_record(ledger: Ledger, system: str, members: list, outcome: InboxRun,
                       run_id: str | None) -> list:
    """Keep one event per record: the newest. An older one is ignored, here or against what was applied.

    Shopify's own versions already protect stored state, but Stripe's objects carry none, so the
    trigger times of processed events decide.
    """
    newest: dict[str, tuple[pd.Series, Routed]] = {}
    chosen = []
    for event, routed in members:
        if routed.record_id is None:
            chosen.append((event, routed))
            continue
        earlier = newest.get(routed.record_id)
        if earlier is not None:
            _ignore_superseded(ledger, earlier, event, run_id, outcome)
        newest[routed.record_id] = (event, routed)

    applied = _last_applied(ledger, system, list(newest)) if system == "stripe" else {}
    for record_id, (event, routed) in newest.items():
        moment = event["triggered_at"]
        if record_id in applied and pd.notna(moment) and pd.Timestamp(moment) < applied[record_id]:
            reason = f"older than the event already applied to {record_id} ({applied[record_id].isoformat()})"
            _finish(ledger, int(event["id"]), IGNORED, record_id=record_id, run_id=run_id, error=reason)
            finish_trigger(ledger, trigger_tag("webhook", system, str(event["event_id"])), run_id=run_id or "local",
                           status=SUCCEEDED)
            outcome.statuses[int(event["id"])] = IGNORED
            continue
        chosen.append((event, routed))
    return chosen


def _ignore_superseded(ledger: Ledger, older: tuple, newer: pd.Series, run_id: str | None, outcome: InboxRun) -> None:
    event, routed = older
    reason = f"superseded by event {newer['event_id']} for the same record in this run"
    _finish(ledger, int(event["id"]), IGNORED, record_id=routed.record_id, run_id=run_id, error=reason)
    finish_trigger(ledger, trigger_tag("webhook", event["system"], str(event["event_id"])), run_id=run_id or "local",
                   status=SUCCEEDED)
    outcome.statuses[int(event["id"])] = IGNORED


def _apply(ledger: Ledger, event: pd.Series, routed: Routed, entity: str, run_id: str | None) -> tuple[str, str | None]:
    """Run a compliance request or record a deletion; return the event's status and error."""
    body = _parse(event["payload"])
    if routed.action == "compliance":
        try:
            compliance.handle(ledger, event["topic"], body, request_id=str(event["event_id"]))
        except compliance.ComplianceRequestError as exc:
            return EVENT_FAILED, str(exc)
        return PROCESSED, None

    # NOTE: a deletion at the source is recorded in the audit trail only; the stored row stays,
    # because reconciliation still needs what was sold.
    with ledger.engine.begin() as connection:
        connection.execute(audit_events.insert().values(
            trace_id=run_id or "local", system=event["system"], account=event["account"], entity=entity,
            record_id=routed.record_id or "unknown", step="deleted_at_source", actor=f"{event['system']}:webhook",
            at=utc_now(), details=canonical_json({"topic": event["topic"], "event_id": event["event_id"]})))
    return PROCESSED, None

