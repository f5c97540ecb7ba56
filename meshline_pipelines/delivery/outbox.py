"""The outbox: every record version MeshLine sends to a target, once, and the target's response.

Delivery is two steps. `plan` writes one row per (target, entity, record key, version) with an
idempotency key, the payload and a status: `pending`, `held` while the source record has an
active exception, or `dry_run` when nothing is to be sent. `send` claims the pending rows
(`sending`), asks the target client to upsert them, and records each answer: `delivered` with
the target's ID, `rejected` with the target's message (an exception for the decision owner),
or back to `pending` for a transient failure. A replay plans the same keys again and changes
nothing already delivered.

Targets upsert by a key of their own (external ID, email, order key). A run that dies after the
target answered but before the outbox recorded it leaves the row `sending`; the next `send`
sends it again, and the target updates the same record instead of creating a second one.
"""

import hashlib
import json
import logging
import os
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from meshline_pipelines.delivery.base import DELIVERED, REJECTED, OutboundRecord, TargetClient
from meshline_pipelines.identity import canonical_id, link
from meshline_pipelines.ledger import Ledger
from meshline_pipelines.ledger.store import canonical_json, restore_types, utc_now
from meshline_pipelines.ledger.tables import exceptions, outbox
from meshline_pipelines.queue import ACTIVE, REJECTED as EXCEPTION_REJECTED
from meshline_pipelines.record_issues import exception_row
from meshline_pipelines.routing import Routing

log = logging.getLogger(__name__)

PENDING, HELD, DRY_RUN, SENDING = "pending", "held", "dry_run", "sending"
STATUSES = (PENDING, HELD, DRY_RUN, SENDING, DELIVERED, REJECTED)
MODE_ENV = "MESHLINE_DELIVERY_MODE"
DRY, LIVE = "dry_run", "live"
# The identity-map entity of each delivered entity: the target's record is the same order or customer.
XREF_ENTITIES = {"sales_order": "order", "order": "order", "customer": "customer", "contact": "customer"}
# Records per request to a target; every target here accepts at least 100 per batch call.
BATCH_SIZE = 100


def delivery_mode() -> str:
    value = (os.environ.get(MODE_ENV) or DRY).strip().lower()
    if value not in (DRY, LIVE):
        raise ValueError(f"{MODE_ENV}={value!r} is not a delivery mode: set dry_run (the default) or live")
    return value


def idempotency_key(target: str, entity: str, record_key: str, version: str) -> str:
    return "sha256:" + hashlib.sha256("\x1f".join([target, entity, record_key, version]).encode()).hexdigest()


@dataclass(frozen=True)
class Planned:
    """A record version a delivery asset wants in a target, with where it came from."""

    source_system: str
    source_account: str
    source_id: str
    version: str
    record_key: str
    payload: dict
    partition_key: str | None = None


def held_records(ledger: Ledger, system: str, source_ids: list[str]) -> set[str]:
    """Return the source records an exception keeps from delivery: an active one, or one its decision owner
    rejected."""
    if not source_ids:
        return set()
    query = sa.select(exceptions.c.record_id).where(
        exceptions.c.system == system, exceptions.c.record_id.in_(source_ids),
        exceptions.c.status.in_([*ACTIVE, EXCEPTION_REJECTED]))
    with ledger.engine.connect() as connection:
        return set(connection.execute(query).scalars())


def plan(ledger: Ledger, target: str, target_account: str, entity: str, planned: list[Planned], *,
         mode: str, run_id: str | None = None) -> dict[str, int]:
    """Write an outbox row for each new record version; release or hold earlier rows; return counts by status."""
    now = utc_now()
    counts: dict[str, int] = {}
    by_system: dict[str, list[Planned]] = {}
    for item in planned:
        by_system.setdefault(item.source_system, []).append(item)

    with ledger.engine.begin() as connection:
        insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
        for system, items in by_system.items():
            waiting = held_records(ledger, system, [item.source_id for item in items])
            ready = DRY_RUN if mode == DRY else PENDING
            for item in items:
                status = HELD if item.source_id in waiting else ready
                key = idempotency_key(target, entity, item.record_key, item.version)
                connection.execute(insert(outbox).values(
                    target=target, target_account=target_account, entity=entity, record_key=item.record_key,
                    source_system=item.source_system, source_account=item.source_account, source_id=item.source_id,
                    version=item.version, idempotency_key=key, payload=canonical_json(item.payload), status=status,
                    attempts=0, partition_key=item.partition_key, run_id=run_id, created_at=now, updated_at=now,
                ).on_conflict_do_nothing(index_elements=["idempotency_key"]))
                # A row planned earlier follows the record's exceptions and the mode, until it is sent.
                connection.execute(outbox.update().where(
                    outbox.c.idempotency_key == key, outbox.c.status.in_([PENDING, HELD, DRY_RUN]),
                    outbox.c.status != status).values(status=status, updated_at=now))
                counts[status] = counts.get(status, 0) + 1
    return counts


def send(ledger: Ledger, client: TargetClient, routing: Routing, *, target: str, entity: str,
         run_id: str | None = None) -> dict[str, int]:
    """Deliver the pending rows of a target and entity; return counts by outcome."""
    now = utc_now()
    with ledger.engine.begin() as connection:
        # Rows left `sending` by a run that died are sent again: the target's upsert keeps one record.
        rows = connection.execute(sa.select(outbox).where(
            outbox.c.target == target, outbox.c.entity == entity,
            outbox.c.status.in_([PENDING, SENDING])).order_by(outbox.c.id)).mappings().all()
        ids = [row["id"] for row in rows]
        if ids:
            connection.execute(outbox.update().where(outbox.c.id.in_(ids)).values(
                status=SENDING, attempts=outbox.c.attempts + 1, updated_at=now, run_id=run_id))

    counts: dict[str, int] = {}
    for start in range(0, len(rows), BATCH_SIZE):
        batch = rows[start:start + BATCH_SIZE]
        records = [OutboundRecord(target=row["target"], entity=row["entity"], record_key=row["record_key"],
                                  version=row["version"], idempotency_key=row["idempotency_key"],
                                  payload=json.loads(row["payload"])) for row in batch]
        results = {result.idempotency_key: result for result in client.deliver(entity, records)}
        for row in batch:
            result = results.get(row["idempotency_key"])
            status = _record(ledger, routing, row, result)
            counts[status] = counts.get(status, 0) + 1
    return counts


def _record(ledger: Ledger, routing: Routing, row, result) -> str:
    now = utc_now()
    if result is None:
        status, values = PENDING, {"last_error": "the target returned no result for this record"}
    elif result.status == DELIVERED:
        status, values = DELIVERED, {"target_id": result.target_id, "delivered_at": now, "last_error": None}
        if result.target_id:
            kind = XREF_ENTITIES.get(row["entity"], row["entity"])
            link(ledger, [{"entity": kind, "system": row["target"], "account": row["target_account"],
                           "canonical_id": canonical_id(kind, row["source_system"], row["source_account"],
                                                        row["source_id"]),
                           "system_id": str(result.target_id), "link_source": "delivered by MeshLine",
                           "confidence": 1.0}])
    elif result.status == REJECTED:
        status, values = REJECTED, {"last_error": result.message}
        _open_rejection(ledger, routing, row, result.message or "the target rejected the record")
    else:
        status, values = PENDING, {"last_error": result.message}
    with ledger.engine.begin() as connection:
        connection.execute(outbox.update().where(outbox.c.id == row["id"]).values(status=status, updated_at=now,
                                                                                   **values))
    if status == PENDING:
        log.warning("%s %s %s: not delivered, will be sent again: %s", row["target"], row["entity"],
                    row["record_key"], values["last_error"])
    return status


def _open_rejection(ledger: Ledger, routing: Routing, row, message: str) -> None:
    """Open a failed_validation exception for the decision owner, with the target's message."""
    route = routing.route("failed_validation", row["source_system"], row["entity"])
    ledger.open_exceptions(pd.DataFrame([exception_row(
        routing, "failed_validation", system=row["source_system"], account=row["source_account"], entity=row["entity"],
        record_id=row["source_id"], partition_key=row["partition_key"],
        rule=f"{row['target']}.{row['entity']}:rejected",
        owner=route.decision_owner, fingerprint_extra=(row["version"],),
        reason=f"{row['target'].capitalize()} rejected {row['entity']} {row['record_key']}: {message[:400]}. "
               f"Fix: correct the record in {row['source_system'].capitalize()} (or the mapping), then replay "
               f"its partition; `meshline outbox show {row['id']}` shows what was sent",
        details={"outbox_id": row["id"], "target": row["target"]})]), run_id=row["run_id"])


def release(ledger: Ledger, system: str, record_id: str) -> int:
    """Release the held rows of a record that no exception holds any more; return how many were released.

    They become pending in live mode and dry_run otherwise, as `plan` would make them at the next
    run of their partition.
    """
    if record_id in held_records(ledger, system, [record_id]):
        return 0
    ready = DRY_RUN if delivery_mode() == DRY else PENDING
    with ledger.engine.begin() as connection:
        return connection.execute(outbox.update().where(
            outbox.c.source_system == system, outbox.c.source_id == record_id, outbox.c.status == HELD,
        ).values(status=ready, updated_at=utc_now())).rowcount


def holding_exceptions(ledger: Ledger, system: str, record_id: str) -> list[int]:
    """Return the IDs of the exceptions that keep a record from delivery."""
    query = sa.select(exceptions.c.id).where(
        exceptions.c.system == system, exceptions.c.record_id == record_id,
        exceptions.c.status.in_([*ACTIVE, EXCEPTION_REJECTED])).order_by(exceptions.c.id)
    with ledger.engine.connect() as connection:
        return list(connection.execute(query).scalars())


def read_outbox(ledger: Ledger, *, status: str | None = None, target: str | None = None) -> pd.DataFrame:
    query = sa.select(outbox).order_by(outbox.c.id)
    if status:
        query = query.where(outbox.c.status == status)
    if target:
        query = query.where(outbox.c.target == target)
    with ledger.engine.connect() as connection:
        frame = pd.DataFrame(connection.execute(query).mappings().all(), columns=[c.name for c in outbox.columns])
    return restore_types(frame, outbox)
