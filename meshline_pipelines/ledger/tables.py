"""Ledger schema (SQLAlchemy Core). Canonical tables are generated from the pandera models.

The Alembic migrations under `migrations/versions` create exactly this schema; a test compares
the two, so a model change without a migration fails the suite.
"""

import sqlalchemy as sa

from meshline_pipelines.canonical.schemas import CANONICAL_MODELS

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

UtcDateTime = sa.DateTime(timezone=True)
KEY_COLUMNS = ["system", "account", "source_id"]


def _column_type(pandas_dtype: str) -> sa.types.TypeEngine:
    if pandas_dtype.startswith("datetime64"):
        return UtcDateTime
    if pandas_dtype == "Int64":
        return sa.BigInteger()
    if pandas_dtype == "boolean":
        return sa.Boolean()
    if pandas_dtype.startswith("string"):
        return sa.Text()
    raise TypeError(f"no ledger column type for pandas dtype {pandas_dtype!r}: add one to _column_type")


def _canonical_table(name: str, model) -> sa.Table:
    schema = model.to_schema()
    key_columns = set(KEY_COLUMNS)
    columns = [
        sa.Column(column_name, _column_type(str(column.dtype)), primary_key=column_name in key_columns,
                  nullable=column.nullable and column_name not in key_columns)
        for column_name, column in schema.columns.items()
    ]
    bookkeeping = [
        sa.Column("content_hash", sa.Text(), nullable=False),
        sa.Column("partition_key", sa.Text(), nullable=False),
        sa.Column("run_id", sa.Text(), nullable=True),
        sa.Column("loaded_at", UtcDateTime, nullable=False),
    ]
    return sa.Table(name, metadata, *columns, *bookkeeping)


CANONICAL_TABLES: dict[str, sa.Table] = {
    name: _canonical_table(name, model) for name, model in CANONICAL_MODELS.items()
}

raw_payloads = sa.Table(
    "raw_payloads",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("system", sa.Text(), nullable=False),
    sa.Column("account", sa.Text(), nullable=False),
    sa.Column("stream", sa.Text(), nullable=False),
    sa.Column("record_id", sa.Text(), nullable=False),
    sa.Column("content_hash", sa.Text(), nullable=False),
    sa.Column("payload", sa.Text(), nullable=False),
    sa.Column("origin", sa.Text(), nullable=False),
    sa.Column("partition_key", sa.Text(), nullable=False),
    sa.Column("fetched_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("system", "account", "stream", "record_id", "content_hash"),
)

exceptions = sa.Table(
    "exceptions",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("fingerprint", sa.Text(), nullable=False, unique=True),
    sa.Column("kind", sa.Text(), nullable=False),
    sa.Column("system", sa.Text(), nullable=False),
    sa.Column("account", sa.Text(), nullable=False),
    sa.Column("entity", sa.Text(), nullable=False),
    sa.Column("record_id", sa.Text(), nullable=False),
    sa.Column("partition_key", sa.Text(), nullable=True),
    sa.Column("rule", sa.Text(), nullable=False),
    sa.Column("field", sa.Text(), nullable=True),
    sa.Column("value", sa.Text(), nullable=True),
    sa.Column("owner", sa.Text(), nullable=False),
    sa.Column("decision_owner", sa.Text(), nullable=True),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("details", sa.Text(), nullable=True),
    sa.Column("status", sa.Text(), nullable=False),
    sa.Column("outcome", sa.Text(), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("occurrences", sa.Integer(), nullable=False),
    sa.Column("due_at", UtcDateTime, nullable=False),
    sa.Column("opened_at", UtcDateTime, nullable=False),
    sa.Column("last_seen_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("run_id", sa.Text(), nullable=True),
    sa.Column("closed_at", UtcDateTime, nullable=True),
    sa.Index(None, "status", "owner"),
)

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("trace_id", sa.Text(), nullable=False),
    sa.Column("system", sa.Text(), nullable=False),
    sa.Column("account", sa.Text(), nullable=False),
    sa.Column("entity", sa.Text(), nullable=False),
    sa.Column("record_id", sa.Text(), nullable=False),
    sa.Column("step", sa.Text(), nullable=False),
    sa.Column("actor", sa.Text(), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("details", sa.Text(), nullable=True),
    sa.Index(None, "system", "record_id"),
)

# The highest cursor value of a live stream whose records are all stored, and the IDs stored at
# exactly that value. The next run requests from the cursor again, so records that tie with it are
# read again, and the IDs show which of them are already stored.
watermarks = sa.Table(
    "watermarks",
    metadata,
    sa.Column("system", sa.Text(), primary_key=True),
    sa.Column("account", sa.Text(), primary_key=True),
    sa.Column("stream", sa.Text(), primary_key=True),
    sa.Column("cursor_value", UtcDateTime, nullable=False),
    sa.Column("ids_at_cursor", sa.Text(), nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("run_id", sa.Text(), nullable=True),
)

# Webhook events as received, one per source event ID. The receiver stores them and responds at
# once, and the inbox sensor turns them into runs. `deliveries` counts repeated deliveries.
inbox_events = sa.Table(
    "inbox_events",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("system", sa.Text(), nullable=False),
    sa.Column("account", sa.Text(), nullable=False),
    sa.Column("event_id", sa.Text(), nullable=False),
    sa.Column("topic", sa.Text(), nullable=False),
    sa.Column("webhook_id", sa.Text(), nullable=True),
    sa.Column("triggered_at", UtcDateTime, nullable=True),
    sa.Column("received_at", UtcDateTime, nullable=False),
    sa.Column("payload", sa.Text(), nullable=False),
    sa.Column("content_hash", sa.Text(), nullable=False),
    sa.Column("status", sa.Text(), nullable=False),
    sa.Column("deliveries", sa.Integer(), nullable=False),
    sa.Column("processed_at", UtcDateTime, nullable=True),
    sa.Column("run_id", sa.Text(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    # The source ID of the record the event changed, set when the event is processed.
    sa.Column("record_id", sa.Text(), nullable=True),
    sa.UniqueConstraint("system", "event_id"),
    sa.Index(None, "status", "id"),
    sa.Index(None, "system", "record_id"),
)

# The trigger of each run: a webhook, a polled change, a dropped file, a schedule or an operator.
triggers = sa.Table(
    "triggers",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("kind", sa.Text(), nullable=False),
    sa.Column("system", sa.Text(), nullable=False),
    sa.Column("account", sa.Text(), nullable=True),
    sa.Column("stream", sa.Text(), nullable=True),
    sa.Column("record_id", sa.Text(), nullable=True),
    sa.Column("reference", sa.Text(), nullable=False),
    sa.Column("owner", sa.Text(), nullable=False),
    sa.Column("status", sa.Text(), nullable=False),
    sa.Column("run_key", sa.Text(), nullable=True),
    sa.Column("run_id", sa.Text(), nullable=True),
    sa.Column("partition_key", sa.Text(), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("details", sa.Text(), nullable=True),
    sa.UniqueConstraint("kind", "system", "reference"),
    sa.Index(None, "system", "record_id"),
)

# Every change of an exception's status, owner or outcome: who, why, when, and the run it launched.
exception_transitions = sa.Table(
    "exception_transitions",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("exception_id", sa.Integer(), nullable=False),
    sa.Column("action", sa.Text(), nullable=False),
    sa.Column("from_status", sa.Text(), nullable=True),
    sa.Column("to_status", sa.Text(), nullable=False),
    sa.Column("from_owner", sa.Text(), nullable=True),
    sa.Column("to_owner", sa.Text(), nullable=True),
    sa.Column("actor", sa.Text(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("run_id", sa.Text(), nullable=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Index(None, "exception_id", "id"),
)

# One row per alert: an exception's fingerprint, the event (opened, escalated, overdue,
# check_failed) and the channel it went to. `status` is sent, failed, rate_limited, or sending
# while a notifier has claimed the alert. Only a sent alert counts as delivered, so failed and
# rate-limited alerts are tried again. `sent_at` is the time of the latest attempt.
alerts_sent = sa.Table(
    "alerts_sent",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("fingerprint", sa.Text(), nullable=False),
    sa.Column("event", sa.Text(), nullable=False),
    sa.Column("channel", sa.Text(), nullable=False),
    sa.Column("sent_at", UtcDateTime, nullable=False),
    sa.Column("status", sa.Text(), nullable=False),
    sa.Column("error", sa.Text(), nullable=True),
    sa.UniqueConstraint("fingerprint", "event", "channel"),
    sa.Index(None, "channel", "sent_at"),
)

# Links between the same business record in different systems: an order, a customer or a SKU.
# `canonical_id` names the anchor record (the channel's order, the storefront's customer, the
# SKU itself). Each row links a record of another system to it, with the link's source.
xref = sa.Table(
    "xref",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("entity", sa.Text(), nullable=False),
    sa.Column("canonical_id", sa.Text(), nullable=False),
    sa.Column("system", sa.Text(), nullable=False),
    sa.Column("account", sa.Text(), nullable=False),
    sa.Column("system_id", sa.Text(), nullable=False),
    sa.Column("link_source", sa.Text(), nullable=False),
    sa.Column("confidence", sa.Float(), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("entity", "system", "account", "system_id"),
    sa.Index(None, "entity", "canonical_id"),
)

# One row per target record version: the payload MeshLine sends, or would send in a dry run, and
# the target's response. The idempotency key makes a replay of the same version a no-op.
outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("target", sa.Text(), nullable=False),
    sa.Column("target_account", sa.Text(), nullable=False),
    sa.Column("entity", sa.Text(), nullable=False),
    sa.Column("record_key", sa.Text(), nullable=False),
    sa.Column("source_system", sa.Text(), nullable=False),
    sa.Column("source_account", sa.Text(), nullable=False),
    sa.Column("source_id", sa.Text(), nullable=False),
    sa.Column("version", sa.Text(), nullable=False),
    sa.Column("idempotency_key", sa.Text(), nullable=False, unique=True),
    sa.Column("payload", sa.Text(), nullable=False),
    sa.Column("status", sa.Text(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("target_id", sa.Text(), nullable=True),
    sa.Column("partition_key", sa.Text(), nullable=True),
    sa.Column("run_id", sa.Text(), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("delivered_at", UtcDateTime, nullable=True),
    sa.Index(None, "status", "target"),
    sa.Index(None, "source_system", "source_id"),
)
