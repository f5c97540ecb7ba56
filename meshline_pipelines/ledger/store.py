"""The ledger: raw payloads, canonical tables, exceptions and audit events on SQLite or PostgreSQL.

Every write is idempotent. Raw payloads are unique on (system, account, stream, record ID, content
hash). Canonical rows are upserted by (system, account, source ID) and their version. Exceptions are
opened once per fingerprint.
"""

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from meshline_pipelines import settings
from meshline_pipelines.canonical.schemas import CANONICAL_MODELS, model_columns
from meshline_pipelines.ledger import migrate
from meshline_pipelines.ledger.bulk import copy_and_merge, copy_new_rows, copy_rows
from meshline_pipelines.ledger.tables import (
    CANONICAL_TABLES, KEY_COLUMNS, audit_events, exception_transitions, exceptions, raw_payloads, watermarks,
)

log = logging.getLogger(__name__)

# SQLite allows 32766 bound parameters per statement; 500 keys of three columns stay far below it.
KEY_CHUNK = 500

RAW_UNIQUE_COLUMNS = ["system", "account", "stream", "record_id", "content_hash"]
INSERTED, UPDATED, ABSORBED, STALE, CONFLICT = "inserted", "updated", "absorbed", "stale", "conflict"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def content_hash(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical_json(payload) -> str:
    """JSON with sorted keys, so equal content hashes equally whatever the key order."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def row_hashes(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    if frame.empty:
        return pd.Series([], index=frame.index, dtype="string")
    lines = frame[columns].to_json(orient="records", lines=True, date_format="iso", date_unit="us").splitlines()
    return pd.Series([content_hash(line) for line in lines], index=frame.index, dtype="string")


def is_timestamp_version(versions: pd.Series) -> pd.Series:
    """Versions from a source update time are ISO timestamps; the others are content hashes."""
    return versions.astype("string").str.match(r"^\d{4}-\d{2}-\d{2}T").fillna(False).astype(bool)


def _python_rows(frame: pd.DataFrame) -> list[dict]:
    converted = frame.astype(object).where(frame.notna(), None)
    rows = converted.to_dict(orient="records")
    for row in rows:
        for column, value in row.items():
            if isinstance(value, pd.Timestamp):
                row[column] = value.to_pydatetime()
            elif hasattr(value, "item") and not isinstance(value, (str, bytes)):
                row[column] = value.item()
    return rows


@dataclass
class StoreOutcome:
    """Per canonical row: its key and what the ledger did with it."""

    decisions: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(
            columns=[*KEY_COLUMNS, "decision", "version", "stored_version", "stored_partition_key"])
    )

    def count(self, decision: str) -> int:
        return int((self.decisions["decision"] == decision).sum())

    def counts(self) -> dict[str, int]:
        return {decision: self.count(decision) for decision in (INSERTED, UPDATED, ABSORBED, STALE, CONFLICT)}


@dataclass(frozen=True)
class Watermark:
    """How far a live stream is stored: its highest cursor value and the record IDs stored at it."""

    system: str
    account: str
    stream: str
    cursor: datetime | None = None
    ids_at_cursor: frozenset[str] = frozenset()

    def already_stored(self, cursor: datetime | None, record_id: str | None) -> bool:
        """True for a record read again because it ties with the cursor and was stored by an earlier run."""
        return cursor is not None and cursor == self.cursor and record_id in self.ids_at_cursor

    def advanced(self, cursors: pd.Series, record_ids: pd.Series) -> "Watermark":
        """Return the watermark after storing records with these cursors and IDs.

        Ties with the new cursor keep their IDs.
        """
        known = cursors.notna()
        if not known.any():
            return self
        highest = cursors[known].max().to_pydatetime()
        if self.cursor is not None and highest < self.cursor:
            return self
        at_highest = set(record_ids[known & (cursors == highest)].dropna().astype(str))
        if highest == self.cursor:
            at_highest |= self.ids_at_cursor
        return Watermark(self.system, self.account, self.stream, highest, frozenset(at_highest))


class Ledger:
    """The ledger on one database. On PostgreSQL, canonical upserts take the COPY bulk path unless
    `bulk_copy` is False; elsewhere they go through SQLAlchemy statements."""

    def __init__(self, engine: sa.Engine, *, bulk_copy: bool | None = None):
        self.engine = engine
        is_postgres = engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
        self.bulk_copy = is_postgres if bulk_copy is None else bulk_copy and is_postgres

    @classmethod
    def connect(cls, database_url: str | None = None, *, upgrade: bool = True,
                bulk_copy: bool | None = None) -> "Ledger":
        url = make_url(database_url or settings.database_url())
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url)
        if upgrade:
            migrate.upgrade(engine)
        return cls(engine, bulk_copy=bulk_copy)

    def dispose(self) -> None:
        self.engine.dispose()

    # Raw payloads

    def land_raw(self, raw: pd.DataFrame) -> int:
        """Store raw payloads that are not stored yet; return how many were new."""
        if raw.empty:
            return 0
        with self.engine.begin() as connection:
            if self.bulk_copy:
                return copy_new_rows(connection, raw_payloads, raw, RAW_UNIQUE_COLUMNS)
            existing = self._existing_raw(connection, raw)
            fresh = raw[~raw.set_index(["record_id", "content_hash"]).index.isin(existing)]
            fresh = fresh.drop_duplicates(RAW_UNIQUE_COLUMNS)
            if not fresh.empty:
                self._append(connection, raw_payloads, fresh)
        return len(fresh)

    def _append(self, connection: sa.Connection, table: sa.Table, rows: pd.DataFrame) -> None:
        if self.bulk_copy:
            copy_rows(connection, table, rows)
        else:
            connection.execute(table.insert(), _python_rows(rows))

    def _existing_raw(self, connection: sa.Connection, raw: pd.DataFrame) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        first = raw.iloc[0]
        record_ids = raw["record_id"].unique().tolist()
        for start in range(0, len(record_ids), KEY_CHUNK):
            query = sa.select(raw_payloads.c.record_id, raw_payloads.c.content_hash).where(
                raw_payloads.c.system == first["system"],
                raw_payloads.c.account == first["account"],
                raw_payloads.c.stream == first["stream"],
                raw_payloads.c.record_id.in_(record_ids[start:start + KEY_CHUNK]),
            )
            found.update((row.record_id, row.content_hash) for row in connection.execute(query))
        return found

    # Canonical tables

    def store(self, table_name: str, frame: pd.DataFrame, *, partition_key: str, run_id: str | None,
              watermark: Watermark | None = None,
              audit: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> StoreOutcome:
        """Upsert canonical rows by version, and in the same transaction move `watermark` and write the
        audit events that `audit` builds from the decisions. A crash leaves all or none of them.

        Same content as stored: absorbed. Older version than stored: stale, never overwrites.
        Same version, other content: conflict, the stored row stays. Newer version: updated. A
        content-hash version that differs is stale from an earlier partition than the stored row's,
        and updated otherwise.
        """
        if frame.empty:
            if watermark is not None:
                with self.engine.begin() as connection:
                    self._write_watermark(connection, watermark, run_id)
            return StoreOutcome()
        table = CANONICAL_TABLES[table_name]
        columns = model_columns(CANONICAL_MODELS[table_name])

        incoming = frame[columns].copy()
        incoming["content_hash"] = row_hashes(incoming, columns)
        incoming = incoming.drop_duplicates(KEY_COLUMNS, keep="last").reset_index(drop=True)

        # NOTE: two runs inserting the same new key at once conflict on the primary key; the later
        # one fails and its partition is replayed. The run queue's per-connector limit avoids that.
        writes = incoming.assign(partition_key=partition_key, run_id=run_id, loaded_at=utc_now())
        with self.engine.begin() as connection:
            if watermark is not None:
                self._write_watermark(connection, watermark, run_id)
            if self.bulk_copy:
                decisions = copy_and_merge(connection, table, writes).astype({"decision": "string"})
            else:
                stored = self._stored_versions(connection, table, incoming)
                decisions = _decide(incoming, stored, partition_key)
                inserts = writes[decisions["decision"] == INSERTED]
                updates = writes[decisions["decision"] == UPDATED]
                if not inserts.empty:
                    connection.execute(table.insert(), _python_rows(inserts))
                if not updates.empty:
                    self._update_rows(connection, table, updates)

            events = audit(decisions) if audit is not None else None
            if events is not None and not events.empty:
                self._append(connection, audit_events, events)

        return StoreOutcome(decisions=decisions)

    def _stored_versions(self, connection: sa.Connection, table: sa.Table, incoming: pd.DataFrame) -> pd.DataFrame:
        keys = list(incoming[KEY_COLUMNS].itertuples(index=False, name=None))
        parts = []
        for start in range(0, len(keys), KEY_CHUNK):
            query = sa.select(table.c.system, table.c.account, table.c.source_id, table.c.version,
                              table.c.content_hash, table.c.partition_key).where(
                sa.tuple_(table.c.system, table.c.account, table.c.source_id).in_(keys[start:start + KEY_CHUNK])
            )
            parts.append(pd.DataFrame(connection.execute(query).all(),
                                      columns=[*KEY_COLUMNS, "version", "content_hash", "partition_key"]))
        return pd.concat(parts, ignore_index=True).astype("string")

    def _update_rows(self, connection: sa.Connection, table: sa.Table, updates: pd.DataFrame) -> None:
        value_columns = [column for column in updates.columns if column not in KEY_COLUMNS]
        statement = table.update().where(
            *[table.c[column] == sa.bindparam(f"key_{column}") for column in KEY_COLUMNS]
        ).values({column: sa.bindparam(f"new_{column}") for column in value_columns})
        rows = [
            {**{f"key_{c}": row[c] for c in KEY_COLUMNS}, **{f"new_{c}": row[c] for c in value_columns}}
            for row in _python_rows(updates)
        ]
        connection.execute(statement, rows)

    # Watermarks

    def read_watermark(self, system: str, account: str, stream: str) -> Watermark:
        query = sa.select(watermarks.c.cursor_value, watermarks.c.ids_at_cursor).where(
            watermarks.c.system == system, watermarks.c.account == account, watermarks.c.stream == stream)
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        if row is None:
            return Watermark(system, account, stream)
        cursor = pd.Timestamp(row.cursor_value)
        cursor = cursor.tz_localize("UTC") if cursor.tzinfo is None else cursor.tz_convert("UTC")
        return Watermark(system, account, stream, cursor.to_pydatetime(), frozenset(json.loads(row.ids_at_cursor)))

    def _write_watermark(self, connection: sa.Connection, watermark: Watermark, run_id: str | None) -> None:
        values = {
            "system": watermark.system, "account": watermark.account, "stream": watermark.stream,
            "cursor_value": watermark.cursor, "ids_at_cursor": json.dumps(sorted(watermark.ids_at_cursor)),
            "updated_at": utc_now(), "run_id": run_id,
        }
        insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
        statement = insert(watermarks).values(values)
        connection.execute(statement.on_conflict_do_update(
            index_elements=["system", "account", "stream"],
            set_={column: statement.excluded[column]
                  for column in ("cursor_value", "ids_at_cursor", "updated_at", "run_id")},
        ))

    def has_rows(self, table_name: str, system: str, account: str) -> bool:
        table = CANONICAL_TABLES[table_name]
        query = sa.select(table.c.source_id).where(table.c.system == system, table.c.account == account).limit(1)
        with self.engine.connect() as connection:
            return connection.execute(query).first() is not None

    def known_source_ids(self, table_name: str, system: str, account: str, source_ids: list[str]) -> set[str]:
        """Return the subset of `source_ids` stored in the table for this system and account."""
        table = CANONICAL_TABLES[table_name]
        found: set[str] = set()
        with self.engine.connect() as connection:
            for start in range(0, len(source_ids), KEY_CHUNK):
                query = sa.select(table.c.source_id).where(
                    table.c.system == system, table.c.account == account,
                    table.c.source_id.in_(source_ids[start:start + KEY_CHUNK]),
                )
                found.update(connection.execute(query).scalars())
        return found

    def read_table(self, table_name: str, *, system: str | None = None) -> pd.DataFrame:
        table = CANONICAL_TABLES[table_name]
        query = sa.select(table).order_by(table.c.system, table.c.account, table.c.source_id)
        if system:
            query = query.where(table.c.system == system)
        with self.engine.connect() as connection:
            frame = pd.DataFrame(connection.execute(query).mappings().all(), columns=[c.name for c in table.columns])
        return restore_types(frame, table)

    # Exceptions and audit events

    def open_exceptions(self, opened: pd.DataFrame, *, run_id: str | None) -> dict[str, int]:
        """Open each exception once per fingerprint; a repeat updates `last_seen_at` and `occurrences`.

        A closed exception whose problem is seen again reopens, with a new due time and a
        `reopen` transition; one approved or rejected stays as decided.
        """
        if opened.empty:
            return {"opened": 0, "seen_again": 0, "reopened": 0}
        opened = opened.drop_duplicates("fingerprint")
        now = utc_now()
        with self.engine.begin() as connection:
            fingerprints = opened["fingerprint"].tolist()
            known: dict[str, tuple[int, str, str]] = {}
            for start in range(0, len(fingerprints), KEY_CHUNK):
                query = sa.select(exceptions.c.fingerprint, exceptions.c.id, exceptions.c.status,
                                  exceptions.c.owner).where(
                    exceptions.c.fingerprint.in_(fingerprints[start:start + KEY_CHUNK])
                )
                known.update({row.fingerprint: (row.id, row.status, row.owner) for row in connection.execute(query)})

            fresh = opened[~opened["fingerprint"].isin(known)].assign(
                status="open", attempts=0, occurrences=1, opened_at=now, last_seen_at=now, updated_at=now,
                run_id=run_id,
            )
            fresh = fresh.assign(due_at=now + fresh.pop("due_after"))
            if not fresh.empty:
                connection.execute(exceptions.insert(), _python_rows(fresh))

            seen_again = [fingerprint for fingerprint in fingerprints if fingerprint in known]
            if seen_again:
                connection.execute(
                    exceptions.update()
                    .where(exceptions.c.fingerprint == sa.bindparam("key_fingerprint"))
                    .values(last_seen_at=now, occurrences=exceptions.c.occurrences + 1),
                    [{"key_fingerprint": fingerprint} for fingerprint in seen_again],
                )

            due_after = opened.set_index("fingerprint")["due_after"]
            reopened = [fingerprint for fingerprint in seen_again if known[fingerprint][1] == "closed"]
            for fingerprint in reopened:
                exception_id, _, owner = known[fingerprint]
                connection.execute(exceptions.update().where(exceptions.c.id == exception_id).values(
                    status="open", outcome=None, closed_at=None, updated_at=now, due_at=now + due_after[fingerprint],
                    run_id=run_id))
                connection.execute(exception_transitions.insert().values(
                    exception_id=exception_id, action="reopen", from_status="closed", to_status="open",
                    from_owner=owner, to_owner=owner, actor="meshline", run_id=run_id, at=now,
                    reason="the problem was seen again after the exception was closed"))
        return {"opened": len(fresh), "seen_again": len(seen_again), "reopened": len(reopened)}

    def read_exceptions(self, *, status: str | None = None) -> pd.DataFrame:
        query = sa.select(exceptions).order_by(exceptions.c.due_at, exceptions.c.id)
        if status:
            query = query.where(exceptions.c.status == status)
        with self.engine.connect() as connection:
            frame = pd.DataFrame(connection.execute(query).mappings().all(), columns=[c.name for c in exceptions.columns])
        return restore_types(frame, exceptions)

    def record_audit(self, events: pd.DataFrame) -> None:
        if events.empty:
            return
        with self.engine.begin() as connection:
            self._append(connection, audit_events, events)

    def read_raw(self, *, system: str | None = None, stream: str | None = None) -> pd.DataFrame:
        query = sa.select(raw_payloads).order_by(raw_payloads.c.id)
        if system:
            query = query.where(raw_payloads.c.system == system)
        if stream:
            query = query.where(raw_payloads.c.stream == stream)
        with self.engine.connect() as connection:
            frame = pd.DataFrame(connection.execute(query).mappings().all(), columns=[c.name for c in raw_payloads.columns])
        return restore_types(frame, raw_payloads)

    def count_rows(self) -> pd.DataFrame:
        """Canonical rows per system and table."""
        parts = []
        with self.engine.connect() as connection:
            for name, table in CANONICAL_TABLES.items():
                query = sa.select(table.c.system, sa.func.count().label("records")).group_by(table.c.system)
                for system, records in connection.execute(query):
                    parts.append({"system": system, "entity": name, "records": records})
        return pd.DataFrame(parts, columns=["system", "entity", "records"])


def _decide(incoming: pd.DataFrame, stored: pd.DataFrame, partition_key: str) -> pd.DataFrame:
    merged = incoming[[*KEY_COLUMNS, "version", "content_hash"]].merge(
        stored, on=KEY_COLUMNS, how="left", suffixes=("", "_stored")
    )
    timestamps = is_timestamp_version(merged["version"]) & is_timestamp_version(merged["version_stored"])

    # Content-hash versions cannot be ordered by themselves, so their partitions order them. A
    # differing version from an earlier partition than the stored one is stale, so a replay of an
    # old day never brings back an old inventory snapshot. Within one partition, the file or
    # response read last wins.
    decision = pd.Series(UPDATED, index=merged.index, dtype="string")
    decision[merged["version_stored"].isna()] = INSERTED
    present = merged["version_stored"].notna()
    same_content = present & (merged["content_hash"] == merged["content_hash_stored"]).fillna(False)
    decision[present & timestamps & (merged["version"] < merged["version_stored"]).fillna(False)] = STALE
    decision[present & timestamps & (merged["version"] == merged["version_stored"]).fillna(False)] = CONFLICT
    decision[present & ~timestamps & (merged["partition_key"] > partition_key).fillna(False)] = STALE
    decision[same_content] = ABSORBED

    return merged[KEY_COLUMNS].assign(decision=decision, version=merged["version"],
                                      stored_version=merged["version_stored"],
                                      stored_partition_key=merged["partition_key"])


def restore_types(frame: pd.DataFrame, table: sa.Table) -> pd.DataFrame:
    """SQLite returns naive datetimes; the ledger always writes UTC, so read them back as UTC."""
    for column in table.columns:
        if isinstance(column.type, sa.DateTime) and column.name in frame:
            frame[column.name] = pd.to_datetime(frame[column.name], utc=True)
        elif isinstance(column.type, sa.BigInteger) and column.name in frame:
            frame[column.name] = frame[column.name].astype("Int64")
    return frame
