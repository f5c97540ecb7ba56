"""The ledger's end state, as compared across re-runs and replays."""

import sqlalchemy as sa

from meshline_pipelines.ledger.tables import CANONICAL_TABLES, exceptions, raw_payloads

# Bookkeeping that may differ between a first run and a re-run of the same data.
RUN_COLUMNS = {"loaded_at", "run_id"}


def end_state(ledger) -> dict:
    state = {}
    with ledger.engine.connect() as connection:
        for name, table in CANONICAL_TABLES.items():
            columns = [column for column in table.columns if column.name not in RUN_COLUMNS]
            rows = connection.execute(sa.select(*columns).order_by(*table.primary_key.columns)).all()
            state[name] = [tuple(row) for row in rows]
        state["exceptions"] = sorted(connection.execute(
            sa.select(exceptions.c.fingerprint, exceptions.c.status, exceptions.c.kind, exceptions.c.record_id)
        ).all())
        state["raw_payloads"] = sorted(connection.execute(
            sa.select(raw_payloads.c.system, raw_payloads.c.stream, raw_payloads.c.record_id,
                      raw_payloads.c.content_hash)
        ).all())
    return state
