"""The webhook inbox in the ledger: received events wait here until the inbox sensor starts runs for them.

Each source event is stored once per (system, event ID). A repeated delivery keeps the stored
payload and only increments `deliveries`, in one INSERT ... ON CONFLICT statement, so two
deliveries of the same event that arrive at the same moment still give one row.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from meshline_pipelines.ledger import Ledger
from meshline_pipelines.ledger.store import KEY_CHUNK, content_hash, restore_types, utc_now
from meshline_pipelines.ledger.tables import inbox_events

log = logging.getLogger(__name__)

RECEIVED, PROCESSED, FAILED, IGNORED = "received", "processed", "failed", "ignored"
STATUSES = (RECEIVED, PROCESSED, FAILED, IGNORED)


@dataclass(frozen=True)
class InboxEvent:
    """A verified webhook event as the receiver stores it; `payload` is the raw body text, unchanged."""

    system: str
    account: str
    event_id: str
    topic: str
    payload: str
    webhook_id: str | None = None
    triggered_at: datetime | None = None


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown inbox status {status!r}: expected one of {', '.join(STATUSES)}")


def receive(ledger: Ledger, event: InboxEvent) -> tuple[int, bool]:
    """Store an event with status `received`; return its inbox ID and whether it was a duplicate delivery.

    A duplicate keeps the first payload. When its content differs from the stored one, a line is
    logged, because Shopify sends one delivery per subscription and subscriptions may differ in
    API version.
    """
    stored_hash = content_hash(event.payload)
    values = {
        "system": event.system, "account": event.account, "event_id": event.event_id, "topic": event.topic,
        "webhook_id": event.webhook_id, "triggered_at": event.triggered_at, "received_at": utc_now(),
        "payload": event.payload, "content_hash": stored_hash, "status": RECEIVED, "deliveries": 1,
    }
    with ledger.engine.begin() as connection:
        insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
        statement = insert(inbox_events).values(values)
        statement = statement.on_conflict_do_update(
            index_elements=["system", "event_id"],
            set_={"deliveries": inbox_events.c.deliveries + 1},
        ).returning(inbox_events.c.id, inbox_events.c.deliveries, inbox_events.c.content_hash)
        row = connection.execute(statement).one()

    # RETURNING gives deliveries == 1 only to the statement that inserted the row. Each
    # conflicting statement gets the count after its own increment.
    duplicate = row.deliveries > 1
    if duplicate and row.content_hash != stored_hash:
        log.info("duplicate delivery of %s event %s (inbox ID %s) has other content than the stored one; "
                 "kept the stored payload", event.system, event.event_id, row.id)
    return row.id, duplicate


def pending(ledger: Ledger, *, after_id: int = 0, limit: int = 100) -> pd.DataFrame:
    """Read up to `limit` events with status `received` and an ID above `after_id`, in ID order.

    NOTE: IDs are assigned when a row is inserted, not when its transaction commits. While
    deliveries are written at the same time, a lower ID can become visible after a higher one, so a
    caller that only moves `after_id` forward can skip an event. The status filter makes a rescan
    from `after_id=0` safe.
    """
    if limit < 1:
        raise ValueError(f"limit {limit} is below 1: ask for at least one event")
    query = (
        sa.select(inbox_events)
        .where(inbox_events.c.status == RECEIVED, inbox_events.c.id > after_id)
        .order_by(inbox_events.c.id)
        .limit(limit)
    )
    return _read(ledger, query)


def mark(ledger: Ledger, ids: Iterable[int], status: str, *, run_id: str | None = None,
         error: str | None = None) -> int:
    """Set the status, run ID and error of inbox events; return how many rows changed.

    `processed_at` is set to now for every status but `received`. Marking an event `received`
    again clears it, so `pending` returns the event again.
    """
    _check_status(status)
    ids = [int(inbox_id) for inbox_id in ids]
    if not ids:
        return 0
    processed_at = None if status == RECEIVED else utc_now()
    changed = 0
    with ledger.engine.begin() as connection:
        for start in range(0, len(ids), KEY_CHUNK):
            statement = (
                inbox_events.update()
                .where(inbox_events.c.id.in_(ids[start:start + KEY_CHUNK]))
                .values(status=status, processed_at=processed_at, run_id=run_id, error=error)
            )
            changed += connection.execute(statement).rowcount
    return changed


def read_inbox(ledger: Ledger, status: str | None = None, system: str | None = None) -> pd.DataFrame:
    """Read inbox events in ID order, optionally only one status or one system."""
    query = sa.select(inbox_events).order_by(inbox_events.c.id)
    if status is not None:
        _check_status(status)
        query = query.where(inbox_events.c.status == status)
    if system is not None:
        query = query.where(inbox_events.c.system == system)
    return _read(ledger, query)


def _read(ledger: Ledger, query: sa.Select) -> pd.DataFrame:
    with ledger.engine.connect() as connection:
        rows = connection.execute(query).mappings().all()
    frame = pd.DataFrame(rows, columns=[column.name for column in inbox_events.columns])
    frame = restore_types(frame, inbox_events)
    # `restore_types` converts BigInteger columns only; the inbox's counters are plain Integer.
    for column in ("id", "deliveries"):
        frame[column] = frame[column].astype("Int64")
    return frame


def events_by_id(ledger: Ledger, ids: Iterable[int]) -> pd.DataFrame:
    """Read the inbox events with these IDs, in ID order."""
    ids = [int(inbox_id) for inbox_id in ids]
    frames = [_read(ledger, sa.select(inbox_events).where(inbox_events.c.id.in_(ids[start:start + KEY_CHUNK]))
                    .order_by(inbox_events.c.id)) for start in range(0, len(ids), KEY_CHUNK)]
    return pd.concat(frames, ignore_index=True) if frames else _read(ledger, sa.select(inbox_events).where(sa.false()))
