"""The path of one stream's partition: extract, land raw, normalize, validate, store, open exceptions."""

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import dagster as dg
import pandas as pd

from meshline_pipelines.checks import CheckOutcome
from meshline_pipelines.drift import new_fields
from meshline_pipelines.ledger import Ledger, StoreOutcome, Watermark
from meshline_pipelines.ledger.store import CONFLICT, STALE, content_hash, utc_now
from meshline_pipelines.normalize import ISSUE_COLUMNS, RECORD, MapContext, Normalized, empty_table, record_hashes
from meshline_pipelines.record_issues import (
    audit_rows, collapse_unknown_currencies, exception_rows, file_issues, new_schema_failures, non_object_issues,
    resolve_in_batch_duplicates, unmapped_references,
)
from meshline_pipelines.routing import Routing
from meshline_pipelines.sources.base import SourceBatch, SourceClient
from meshline_pipelines.streams import Stream

log = logging.getLogger(__name__)

# Records mapped and validated at a time; a larger partition is read in chunks of about this many.
# 10,000 generated Shopify orders peaked at 0.9 GB of memory in benchmarks/ingest.py.
RECORDS_PER_CHUNK = 10_000
# Record IDs a failed check lists in its metadata; the exception queue has them all.
HELD_RECORDS_SHOWN = 50


@dataclass
class StreamRun:
    """Outcome of one run of a stream's partition, for asset metadata, tests and the CLI."""

    stream: Stream
    partition_key: str
    records: int = 0
    raw_landed: int = 0
    unreadable_files: list[str] = field(default_factory=list)
    checks: dict[str, CheckOutcome] = field(default_factory=dict)
    failed_rules: dict[str, dict[str, int]] = field(default_factory=dict)
    stored: dict[str, StoreOutcome] = field(default_factory=dict)
    failed_by_table: dict[str, int] = field(default_factory=dict)
    redelivered: int = 0
    new_fields: dict[str, int] = field(default_factory=dict)  # top-level fields outside the documented shape
    held_records: dict[str, list[str]] = field(default_factory=dict)  # per table, the first held record IDs
    chunks: int = 0
    exceptions: dict[str, int] = field(default_factory=dict)
    quarantined: bool = False

    @property
    def failed_records(self) -> int:
        return max((outcome.failed_records for outcome in self.checks.values()), default=0)


def _record_frame(batches, record_id: Callable[[pd.Series], pd.Series]) -> pd.DataFrame:
    rows = [
        {"payload": payload, "origin": batch.origin, "position_in_file": position, "fetched_at": batch.fetched_at}
        for batch in batches if not batch.error
        for position, payload in enumerate(batch.records)
    ]
    records = pd.DataFrame(rows, columns=["payload", "origin", "position_in_file", "fetched_at"])
    fallback = records["origin"] + "#" + records["position_in_file"].astype(str)
    records["record_id"] = record_id(records["payload"]).fillna(fallback.astype("string"))
    records["content_hash"] = record_hashes(records["payload"])
    return records


def _raw_rows(stream: Stream, account: str, partition_key: str, records: pd.DataFrame, unreadable) -> pd.DataFrame:
    now = utc_now()
    landed = pd.DataFrame({
        "system": stream.system,
        "account": account,
        "stream": stream.name,
        "record_id": records["record_id"],
        "content_hash": records["content_hash"],
        "payload": records["payload"].map(lambda payload: json.dumps(payload, ensure_ascii=False)),
        "origin": records["origin"],
        "partition_key": partition_key,
        "fetched_at": records["fetched_at"].fillna(now),
    })
    files = pd.DataFrame([
        {"system": stream.system, "account": account, "stream": stream.name, "record_id": f"file:{batch.origin}",
         "content_hash": content_hash(batch.raw_text or ""), "payload": batch.raw_text or "", "origin": batch.origin,
         "partition_key": partition_key, "fetched_at": batch.fetched_at or now}
        for batch in unreadable
    ], columns=landed.columns)
    parts = [frame for frame in (landed, files) if not frame.empty]
    return pd.concat(parts, ignore_index=True) if parts else landed


def _normalize_and_validate(stream: Stream, records: pd.DataFrame, context: MapContext,
                            run: StreamRun) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Map the records to canonical frames and collect every problem, one issue per record and rule.

    The frames returned hold only rows of records without issues.
    """
    primary = stream.tables[0]
    issues = non_object_issues(records, primary)
    objects = records[records["payload"].map(lambda payload: isinstance(payload, dict)).astype(bool)]
    if objects.empty:
        normalized = Normalized(tables={table: empty_table(table) for table in stream.tables})
    else:
        normalized = stream.normalize(objects, context)
    issues += normalized.issues

    frames = dict(normalized.tables)
    for table in stream.tables:
        issues += new_schema_failures(table, frames[table], issues)
    issues = collapse_unknown_currencies(issues)

    failed = {issue["record"] for issue in issues}
    for table in stream.tables:
        valid_rows = frames[table][~frames[table][RECORD].isin(failed)]
        valid_rows, redelivered, duplicate_issues = resolve_in_batch_duplicates(table, valid_rows)
        if table == primary:
            run.redelivered += redelivered
        issues += duplicate_issues
        frames[table] = valid_rows

    failed = {issue["record"] for issue in issues}
    frames = {table: frame[~frame[RECORD].isin(failed)] for table, frame in frames.items()}
    return frames, pd.DataFrame(issues, columns=ISSUE_COLUMNS)


def _store(stream: Stream, frames: dict[str, pd.DataFrame], ledger: Ledger, account: str, partition_key: str,
           run_id: str | None, watermark: Watermark | None) -> tuple[dict[str, StoreOutcome], pd.DataFrame, set[int]]:
    """Upsert the valid rows; return the outcomes, a duplicate_record issue per conflict, and held records.

    The primary table goes first. A record whose primary row is stale or conflicts keeps its stored
    state in every table, so an old order version never brings back its old lines. The watermark
    moves with the last table, once every table of the records is stored. The trail follows records:
    an order's lines travel with it, so only the primary table is audited, in its own transaction.
    """
    primary = stream.tables[0]

    def audit(decisions: pd.DataFrame) -> pd.DataFrame:
        return audit_rows(stream, account, run_id, decisions, {}, primary, partition_key)

    outcomes = {}
    conflicts = []
    held: set[int] = set()
    for table in stream.tables:
        rows = frames[table][~frames[table][RECORD].isin(held)]
        last = table == stream.tables[-1]
        outcome = ledger.store(table, rows, partition_key=partition_key, run_id=run_id,
                               watermark=watermark if last else None, audit=audit if table == primary else None)
        outcomes[table] = outcome

        positions = rows.drop_duplicates("source_id", keep="last").set_index("source_id")[RECORD]
        decided = outcome.decisions.assign(record=outcome.decisions["source_id"].map(positions))
        if table == primary:
            held = set(decided.loc[decided["decision"].isin([STALE, CONFLICT]), "record"].astype(int))
        for row in decided[decided["decision"] == CONFLICT].itertuples():
            conflicts.append({
                "record": int(row.record), "table": table, "column": "version", "source_field": None,
                "kind": "duplicate_record", "rule": f"{table}.version:conflicting_content", "value": row.version,
                "message": f"version {row.version} is already stored with different content",
            })
    return outcomes, pd.DataFrame(conflicts, columns=ISSUE_COLUMNS), held


def _chunks(batches: Iterable[SourceBatch], size: int) -> Iterator[list[SourceBatch]]:
    """Group batches (files or pages) into chunks of about `size` records; a batch is never split."""
    chunk: list[SourceBatch] = []
    count = 0
    for batch in batches:
        chunk.append(batch)
        count += len(batch.records)
        if count >= size:
            yield chunk
            chunk, count = [], 0
    if chunk:
        yield chunk


def _validate_chunk(stream: Stream, batches: list[SourceBatch], ledger: Ledger, routing: Routing,
                    run: StreamRun, account: str, run_id: str | None, logger) -> tuple[pd.DataFrame, dict]:
    """Land a chunk raw, validate it, open its exceptions and add its counts to `run`."""
    where = f"{stream.system}/{stream.name} partition {run.partition_key}"
    unreadable = [batch for batch in batches if batch.error]
    for batch in unreadable:
        logger.error(f"{where}: {batch.error}")
    run.unreadable_files += [batch.origin for batch in unreadable]

    records = _record_frame(batches, stream.record_id)
    run.records += len(records)
    for name, count in new_fields(stream.system, stream.name, records["payload"]).items():
        run.new_fields[name] = run.new_fields.get(name, 0) + count
    run.raw_landed += ledger.land_raw(_raw_rows(stream, account, run.partition_key, records, unreadable))

    context = MapContext(system=stream.system, account=account, partition_key=run.partition_key)
    frames, issues = _normalize_and_validate(stream, records, context, run)
    for table in stream.tables:
        table_issues = issues[issues["table"] == table]
        run.failed_by_table[table] = run.failed_by_table.get(table, 0) + table_issues["record"].nunique()
        rules = run.failed_rules.setdefault(table, {})
        for rule, count in table_issues.groupby("rule")["record"].nunique().items():
            rules[rule] = rules.get(rule, 0) + int(count)
        held = run.held_records.setdefault(table, [])
        positions = [position for position in table_issues["record"].unique() if position in records.index]
        held += [str(records.at[position, "record_id"]) for position in positions[:HELD_RECORDS_SHOWN - len(held)]]

    opened = ledger.open_exceptions(pd.concat([
        exception_rows(stream, account, run.partition_key, issues, records, routing),
        exception_rows(stream, account, run.partition_key, file_issues(stream, unreadable), records, routing),
    ], ignore_index=True), run_id=run_id)
    for key, count in opened.items():
        run.exceptions[key] = run.exceptions.get(key, 0) + count
    _audit_rejections(stream, account, run_id, issues, records, ledger)
    return records, frames


def _store_chunk(stream: Stream, records: pd.DataFrame, frames: dict[str, pd.DataFrame], ledger: Ledger,
                 routing: Routing, run: StreamRun, account: str, run_id: str | None, logger,
                 watermark: Watermark | None = None) -> None:
    """Store a validated chunk, then open an exception per version conflict and unmapped reference."""
    outcomes, conflicts, held = _store(stream, frames, ledger, account, run.partition_key, run_id, watermark)
    for table, outcome in outcomes.items():
        earlier = run.stored.get(table)
        run.stored[table] = outcome if earlier is None else StoreOutcome(
            decisions=pd.concat([earlier.decisions, outcome.decisions], ignore_index=True))

    unmapped = unmapped_references(stream, frames, ledger, account, held, logger)
    problems = pd.concat([frame for frame in (conflicts, unmapped) if not frame.empty] or [conflicts],
                         ignore_index=True)
    opened = ledger.open_exceptions(
        exception_rows(stream, account, run.partition_key, problems, records, routing), run_id=run_id)
    for key, count in opened.items():
        run.exceptions[key] = run.exceptions.get(key, 0) + count


def _audit_rejections(stream: Stream, account: str, run_id: str | None, issues: pd.DataFrame,
                      records: pd.DataFrame, ledger: Ledger) -> None:
    for table in stream.tables:
        table_issues = issues[issues["table"] == table]
        rejected = {
            str(records.at[position, "record_id"]): sorted(group["rule"].unique())
            for position, group in table_issues.groupby("record")
        }
        ledger.record_audit(audit_rows(stream, account, run_id, StoreOutcome().decisions, rejected, table))


def run_stream(stream: Stream, client: SourceClient, ledger: Ledger, routing: Routing, *, partition_key: str,
               run_id: str | None = None, max_failure_rate: float = 0.2,
               logger: logging.Logger | dg.DagsterLogManager = log,
               records_per_chunk: int = RECORDS_PER_CHUNK) -> StreamRun:
    """Import one partition of a stream from a client: land it raw, validate it, store it, open its exceptions."""
    return run_batches(stream, client.account, lambda: client.extract(stream.name, partition_key), ledger, routing,
                       partition_key=partition_key, run_id=run_id, max_failure_rate=max_failure_rate, logger=logger,
                       records_per_chunk=records_per_chunk)


def run_batches(stream: Stream, account: str, read: Callable[[], Iterable[SourceBatch]], ledger: Ledger,
                routing: Routing, *, partition_key: str, run_id: str | None = None, max_failure_rate: float = 0.2,
                logger: logging.Logger | dg.DagsterLogManager = log, records_per_chunk: int = RECORDS_PER_CHUNK,
                watermark: Watermark | None = None) -> StreamRun:
    """Import one partition of a stream: land it raw, validate it, store it and open its exceptions.

    `read` returns the partition's batches and may be called twice: a partition larger than one
    chunk is validated whole before anything is stored, so a partition over the failure maximum
    stores nothing. Its records are then read and mapped a second time, chunk by chunk, which
    keeps memory bounded. `watermark` is written with the last chunk's rows, never for a blocked
    partition.
    """
    run = StreamRun(stream=stream, partition_key=partition_key)
    where = f"{stream.system}/{stream.name} partition {partition_key}"

    chunks = _chunks(read(), records_per_chunk)
    first_records, first_frames = _validate_chunk(stream, next(chunks, []), ledger, routing, run, account,
                                                   run_id, logger)
    run.chunks = 1
    for chunk in chunks:
        # Only the first chunk's frames are kept; the store pass maps the other chunks again.
        _validate_chunk(stream, chunk, ledger, routing, run, account, run_id, logger)
        run.chunks += 1

    for table in stream.tables:
        run.checks[table] = CheckOutcome(
            table=table, records=run.records, failed_records=run.failed_by_table.get(table, 0),
            max_failure_rate=max_failure_rate,
            unreadable_files=run.unreadable_files if table == stream.tables[0] else [],
        )
        for rule, count in sorted(run.failed_rules.get(table, {}).items()):
            logger.warning(f"{where}: {count} {'record' if count == 1 else 'records'} failed {rule}")
    if run.new_fields:
        fields = ", ".join(f"{name} ({count})" for name, count in sorted(run.new_fields.items()))
        logger.warning(f"{where}: records carry fields the documented {stream.system} shape does not have; "
                       f"they are kept in `extra`: {fields}")
    run.quarantined = any(outcome.blocks for outcome in run.checks.values())
    if run.quarantined:
        logger.error(f"{where}: {run.failed_records} of {run.records} records failed validation, "
                     f"above the maximum share {max_failure_rate:.0%}; nothing stored")
        return run

    if run.chunks == 1:
        _store_chunk(stream, first_records, first_frames, ledger, routing, run, account, run_id, logger, watermark)
        return run

    context = MapContext(system=stream.system, account=account, partition_key=partition_key)
    chunks = _chunks(read(), records_per_chunk)
    chunk = next(chunks, [])
    while chunk:
        following = next(chunks, [])
        records = _record_frame(chunk, stream.record_id)
        frames, _ = _normalize_and_validate(stream, records, context, StreamRun(stream, partition_key))
        _store_chunk(stream, records, frames, ledger, routing, run, account, run_id, logger,
                     None if following else watermark)
        chunk = following
    return run
