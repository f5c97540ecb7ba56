"""A record's path from trigger to outcome, gathered from every ledger table that mentions it.

The path lists, in time order, the triggers of the runs that touched the record and each payload
landed for it. Then come its audit steps (stored, rejected, skipped as stale, redelivered,
redacted), the exceptions opened on it with every decision and replay taken on them, the records
of other systems mapped to it, and its deliveries.
"""

import json

import pandas as pd
import sqlalchemy as sa

from meshline_pipelines.ledger import Ledger
from meshline_pipelines.ledger.tables import (
    CANONICAL_TABLES, audit_events, exception_transitions, exceptions, inbox_events, outbox, raw_payloads, triggers,
    xref,
)

COLUMNS = ["at", "step", "what", "run_id"]


def _frame(connection: sa.Connection, query) -> pd.DataFrame:
    return pd.DataFrame(connection.execute(query).mappings().all())


def _short(details: str | None) -> str:
    if not details:
        return ""
    try:
        parsed = json.loads(details)
    except json.JSONDecodeError:
        return details[:120]
    if isinstance(parsed, dict):
        return ", ".join(f"{key}={value}" for key, value in parsed.items() if value not in (None, "", []))[:160]
    return str(parsed)[:160]


def trace_record(ledger: Ledger, system: str, record_id: str) -> pd.DataFrame:
    """Return the record's path as rows of (at, step, what, run_id), oldest first."""
    steps: list[dict] = []
    with ledger.engine.connect() as connection:
        audit = _frame(connection, sa.select(audit_events).where(
            audit_events.c.system == system, audit_events.c.record_id == record_id))
        run_ids = set(audit["trace_id"]) if not audit.empty else set()

        inbox = _frame(connection, sa.select(inbox_events).where(
            inbox_events.c.system == system, inbox_events.c.record_id == record_id))
        for event in inbox.to_dict(orient="records"):
            steps.append({"at": event["received_at"], "step": "webhook received",
                          "what": f"{event['topic']} event {event['event_id']} ({event['status']}, "
                                  f"{event['deliveries']} deliveries)", "run_id": event["run_id"]})

        trigger_query = sa.select(triggers).where(triggers.c.system == system, sa.or_(
            triggers.c.record_id == record_id, triggers.c.run_id.in_(sorted(run_ids) or [""])))
        for trigger in _frame(connection, trigger_query).to_dict(orient="records"):
            steps.append({"at": trigger["created_at"], "step": f"trigger: {trigger['kind']}",
                          "what": f"{trigger['reference']} by {trigger['owner']} ({trigger['status']})",
                          "run_id": trigger["run_id"]})

        landed = _frame(connection, sa.select(raw_payloads.c.stream, raw_payloads.c.origin, raw_payloads.c.fetched_at,
                                              raw_payloads.c.partition_key, raw_payloads.c.content_hash).where(
            raw_payloads.c.system == system, raw_payloads.c.record_id == record_id))
        for payload in landed.to_dict(orient="records"):
            steps.append({"at": payload["fetched_at"], "step": "landed raw",
                          "what": f"{payload['stream']} from {payload['origin']} into partition "
                                  f"{payload['partition_key']} ({payload['content_hash'][:19]})", "run_id": None})

        for event in audit.to_dict(orient="records"):
            steps.append({"at": event["at"], "step": event["step"],
                          "what": f"{event['entity']} by {event['actor']}: {_short(event['details'])}".rstrip(": "),
                          "run_id": event["trace_id"]})

        opened = _frame(connection, sa.select(exceptions).where(
            exceptions.c.system == system, exceptions.c.record_id == record_id))
        for exception in opened.to_dict(orient="records"):
            steps.append({"at": exception["opened_at"], "step": f"exception {exception['id']} opened",
                          "what": f"{exception['kind']} {exception['rule']}, owner {exception['owner']}, "
                                  f"due {exception['due_at']}, now {exception['status']}",
                          "run_id": exception["run_id"]})
        if not opened.empty:
            decisions = _frame(connection, sa.select(exception_transitions).where(
                exception_transitions.c.exception_id.in_([int(value) for value in opened["id"]])))
            for decision in decisions.to_dict(orient="records"):
                step = f"exception {decision['exception_id']} {decision['action']}"
                steps.append({"at": decision["at"], "step": step,
                              "what": f"{decision['from_status']} -> {decision['to_status']} by {decision['actor']}"
                                      + (f": {decision['reason']}" if decision["reason"] else ""),
                              "run_id": decision["run_id"]})

        links = _frame(connection, sa.select(xref).where(xref.c.canonical_id.like(f"%:{system}:%:{record_id}")))
        for item in links.to_dict(orient="records"):
            steps.append({"at": item["updated_at"], "step": f"mapped: {item['entity']}",
                          "what": f"{item['system']} {item['system_id']} ({item['link_source']}, confidence "
                                  f"{item['confidence']:.1f})", "run_id": None})

        sent = _frame(connection, sa.select(outbox).where(outbox.c.source_system == system,
                                                          outbox.c.source_id == record_id))
        for row in sent.to_dict(orient="records"):
            answer = f", target ID {row['target_id']}" if row["target_id"] else ""
            problem = f": {row['last_error']}" if row["last_error"] else ""
            steps.append({"at": row["delivered_at"] or row["updated_at"], "step": f"delivery: {row['status']}",
                          "what": f"{row['target']} {row['entity']} {row['record_key']} version {row['version']}, "
                                  f"outbox {row['id']}, {row['attempts']} attempts{answer}{problem}",
                          "run_id": row["run_id"]})

        for name, table in CANONICAL_TABLES.items():
            row = connection.execute(sa.select(table.c.version, table.c.partition_key, table.c.loaded_at).where(
                table.c.system == system, table.c.source_id == record_id)).first()
            if row is not None:
                steps.append({"at": row.loaded_at, "step": "current state",
                              "what": f"{name} version {row.version} from partition {row.partition_key}",
                              "run_id": None})

    path = pd.DataFrame(steps, columns=COLUMNS)
    path["at"] = pd.to_datetime(path["at"], utc=True)
    return path.sort_values("at", kind="stable").reset_index(drop=True)
