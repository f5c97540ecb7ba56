"""Trigger records: what started each run, who owns it, and how it ended.

A sensor records a trigger when it requests a run (a dropped file, a polled change, a webhook
event), and `meshline run` records a manual one. The run carries the trigger's reference in its
`meshline/trigger` tag; run status sensors set the outcome. Recording is idempotent on
(kind, system, reference), so a sensor tick that is evaluated again records nothing twice.
"""

import json

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from meshline_pipelines.ledger import Ledger
from meshline_pipelines.ledger.store import utc_now
from meshline_pipelines.ledger.tables import triggers

TRIGGER_TAG = "meshline/trigger"
KINDS = ("webhook", "poll", "file", "schedule", "manual")
REQUESTED, SUCCEEDED, FAILED = "requested", "succeeded", "failed"


def trigger_tag(kind: str, system: str, reference: str) -> str:
    return f"{kind}:{system}:{reference}"


def record_trigger(ledger: Ledger, *, kind: str, system: str, reference: str, owner: str,
                   account: str | None = None, stream: str | None = None, record_id: str | None = None,
                   run_key: str | None = None, partition_key: str | None = None,
                   details: dict | None = None) -> None:
    """Store a trigger with status `requested`; a trigger already stored is left as it is."""
    if kind not in KINDS:
        raise ValueError(f"unknown trigger kind {kind!r}: expected one of {', '.join(KINDS)}")
    now = utc_now()
    values = {
        "kind": kind, "system": system, "account": account, "stream": stream, "record_id": record_id,
        "reference": reference, "owner": owner, "status": REQUESTED, "run_key": run_key,
        "partition_key": partition_key, "created_at": now, "updated_at": now,
        "details": json.dumps(details, sort_keys=True) if details else None,
    }
    with ledger.engine.begin() as connection:
        insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
        connection.execute(insert(triggers).values(values).on_conflict_do_nothing(
            index_elements=["kind", "system", "reference"]))


def finish_trigger(ledger: Ledger, tag: str, *, run_id: str, status: str, error: str | None = None) -> int:
    """Set the outcome of the trigger named by a run's `meshline/trigger` tag; return the rows changed."""
    kind, _, rest = tag.partition(":")
    system, _, reference = rest.partition(":")
    details = json.dumps({"error": error[:500]}) if error else None
    statement = triggers.update().where(
        triggers.c.kind == kind, triggers.c.system == system, triggers.c.reference == reference,
    ).values(status=status, run_id=run_id, updated_at=utc_now(), **({"details": details} if details else {}))
    with ledger.engine.begin() as connection:
        return connection.execute(statement).rowcount


def read_triggers(ledger: Ledger, *, system: str | None = None) -> pd.DataFrame:
    query = sa.select(triggers).order_by(triggers.c.id)
    if system:
        query = query.where(triggers.c.system == system)
    with ledger.engine.connect() as connection:
        return pd.DataFrame(connection.execute(query).mappings().all(), columns=[c.name for c in triggers.columns])
