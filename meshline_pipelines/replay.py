"""Retry and replay of an exception's partition, as Dagster runs that the exception links to.

`retry` runs the partition again from the source (the fixed file, or the API). `replay` runs it
from the raw payloads the ledger landed, without calling the source: the path for a mapping or
routing fix. Both run through the instance, so they show in the Dagster UI, and both decide the
exception's outcome from the run. If the run succeeded and did not see the problem again, the
exception closes with that run as its outcome. Otherwise it returns to its owner, open.
"""

import json
import logging
from dataclasses import dataclass

import dagster as dg
import sqlalchemy as sa

from meshline_pipelines.ledger import Ledger
from meshline_pipelines.ledger.store import utc_now
from meshline_pipelines.ledger.tables import raw_payloads
from meshline_pipelines.queue import CLOSED, OPEN, TransitionError, get_exception, transition
from meshline_pipelines.sources.base import SourceBatch
from meshline_pipelines.streams import Stream
from meshline_pipelines.triggers import TRIGGER_TAG

log = logging.getLogger(__name__)

SOURCE_TAG = "meshline/source"
EXCEPTION_TAG = "meshline/exception"
RAW_SOURCE = "raw"


def raw_batches(ledger: Ledger, system: str, account: str, stream: str, partition_key: str) -> list[SourceBatch]:
    """Return the payloads landed for a stream's partition, one batch per origin, in landing order.

    A raw row kept for an unreadable file becomes an unreadable batch again.
    """
    query = (sa.select(raw_payloads.c.record_id, raw_payloads.c.payload, raw_payloads.c.origin,
                       raw_payloads.c.fetched_at)
             .where(raw_payloads.c.system == system, raw_payloads.c.account == account,
                    raw_payloads.c.stream == stream, raw_payloads.c.partition_key == partition_key)
             .order_by(raw_payloads.c.id))
    with ledger.engine.connect() as connection:
        rows = connection.execute(query).all()

    batches: dict[str, SourceBatch] = {}
    for record_id, payload, origin, fetched_at in rows:
        if record_id.startswith("file:"):
            batches[f"{origin}:unreadable"] = SourceBatch(origin=origin, fetched_at=fetched_at, raw_text=payload,
                                                          error=f"{origin} was unreadable when it was landed")
            continue
        batch = batches.setdefault(origin, SourceBatch(origin=origin, fetched_at=fetched_at))
        batch.records.append(json.loads(payload))
    return list(batches.values())


def streams_for(streams: list[Stream], system: str, entity: str) -> list[Stream]:
    """Return the streams of a system that fill the exception's entity (canonical table)."""
    return [stream for stream in streams if stream.system == system and entity in stream.tables]


@dataclass
class Rerun:
    exception_id: int
    action: str
    run_id: str
    success: bool
    fixed: bool
    status: str


def rerun_exception(ledger: Ledger, definitions: dg.Definitions, instance: dg.DagsterInstance, streams: list[Stream],
                    exception_id: int, action: str, *, job_name: str, actor: str | None = None,
                    reason: str | None = None) -> Rerun:
    """Launch the run that retries or replays the exception's partition, then record its outcome."""
    current = get_exception(ledger, exception_id)
    affected = streams_for(streams, current["system"], current["entity"])
    if not affected or not current["partition_key"]:
        raise TransitionError(f"exception {exception_id} names no partition of a {current['system']} stream "
                              f"(entity {current['entity']}, partition {current['partition_key']}): "
                              "re-execute its run from the Dagster UI instead")
    transition(ledger, exception_id, action, actor=actor, reason=reason)

    started = utc_now()
    tags = {EXCEPTION_TAG: str(exception_id), "connector": current["system"],
            TRIGGER_TAG: f"manual:{current['system']}:exception {exception_id} {action}"}
    if action == "replay":
        tags[SOURCE_TAG] = RAW_SOURCE
    result = definitions.resolve_job_def(job_name).execute_in_process(
        partition_key=current["partition_key"], instance=instance, raise_on_error=False, tags=tags,
        asset_selection=[stream.asset_key for stream in affected],
    )

    after = get_exception(ledger, exception_id)
    seen_again = after["last_seen_at"] >= started
    fixed = result.success and not seen_again
    if fixed:
        transition(ledger, exception_id, "close", actor="meshline", run_id=result.run_id, outcome=action,
                   reason=f"{action} run {result.run_id} no longer found the problem")
    else:
        cause = "the run failed" if not result.success else "the run found the problem again"
        transition(ledger, exception_id, "run_finished", actor="meshline", run_id=result.run_id, to_status=OPEN,
                   reason=f"{cause}; back to its owner")
    return Rerun(exception_id, action, result.run_id, result.success, fixed, CLOSED if fixed else OPEN)
