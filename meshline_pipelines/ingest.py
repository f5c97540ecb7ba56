"""The path of one stream's partition: extract, land raw, normalize, validate, store, open exceptions.

Each system declares its streams as `Stream`s. `run_stream` does the work, and `stream_asset`
wraps it as a daily-partitioned Dagster asset whose blocking checks are the canonical models.
"""

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import dagster as dg
import pandas as pd

from meshline_pipelines.canonical.schemas import CANONICAL_MODELS
from meshline_pipelines.checks import CheckOutcome, schema_check_spec, schema_failures
from meshline_pipelines.ledger import Ledger, StoreOutcome
from meshline_pipelines.ledger.store import (
    CONFLICT, INSERTED, STALE, UPDATED, canonical_json, content_hash, is_timestamp_version, row_hashes, utc_now,
)
from meshline_pipelines.normalize import ISSUE_COLUMNS, RECORD, MapContext, Normalized, empty_table, record_hashes
from meshline_pipelines.partitions import daily_partitions
from meshline_pipelines.privacy import mask_personal
from meshline_pipelines.routing import Routing
from meshline_pipelines.sources.base import SourceBatch, SourceClient

log = logging.getLogger(__name__)

# Records mapped and validated at a time; a larger partition is read in chunks of about this many.
# 10,000 generated Shopify orders peaked at 0.9 GB of memory in benchmarks/ingest.py.
RECORDS_PER_CHUNK = 10_000

FIXES = {
    "missing_field": "add the field in {system} (or correct the export), then re-run the partition",
    "failed_validation": "correct the value in {system} (or the export), then re-run the partition",
    "duplicate_record": "decide in {system} which content is right, then re-run the partition",
    "connector_failure": "export the file from {system} again, drop it in the same day folder, then re-run the partition",
}


@dataclass(frozen=True)
class Stream:
    """One stream of a system, declared once: what it reads and which canonical tables it fills."""

    system: str
    name: str
    description: str
    tables: tuple[str, ...]
    record_id: Callable[[pd.Series], pd.Series]
    normalize: Callable[[pd.DataFrame, MapContext], Normalized]
    source_fields: Mapping[str, str] = field(default_factory=dict)

    @property
    def asset_key(self) -> dg.AssetKey:
        return dg.AssetKey([self.system, self.name])


def id_at(path: str) -> Callable[[pd.Series], pd.Series]:
    """Source ID from a top-level field of each payload."""

    def read(payloads: pd.Series) -> pd.Series:
        values = payloads.map(lambda payload: payload.get(path) if isinstance(payload, dict) else None)
        values = values.where(values.map(lambda value: isinstance(value, (str, int)) and value != ""), None)
        return values.astype("string")

    return read


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


def _non_object_issues(records: pd.DataFrame, table: str) -> list[dict]:
    not_objects = records.index[~records["payload"].map(lambda payload: isinstance(payload, dict)).astype(bool)]
    return [
        {"record": int(position), "table": table, "column": None, "source_field": None, "kind": "failed_validation",
         "rule": f"{table}.record:type", "value": type(records.at[position, "payload"]).__name__,
         "message": "expected a JSON object for each record"}
        for position in not_objects
    ]


def _in_batch_duplicates(table: str, frame: pd.DataFrame) -> tuple[pd.DataFrame, int, list[dict]]:
    """Resolve rows that share a source ID within one partition.

    Identical rows are one redelivery. With update-time versions the newest wins, and the same
    version with other content is a duplicate_record for each record involved. Content-hash
    versions cannot be ordered, so the one read last wins, as it would in the ledger.
    """
    if frame.empty or not frame["source_id"].duplicated().any():
        return frame, 0, []
    columns = [c for c in frame.columns if c != RECORD]
    identical = frame.assign(_hash=row_hashes(frame, columns)).duplicated(["source_id", "_hash"], keep="last")
    redelivered = int(identical.sum())
    frame = frame[~identical]

    repeated = frame[frame["source_id"].duplicated(keep=False)]
    issues = []
    drop = []
    for source_id, group in repeated.groupby("source_id"):
        versions = group["version"]
        if not is_timestamp_version(versions).all():
            drop.extend(group.index[:-1])
            continue
        newest = versions == versions.max()
        if newest.sum() == 1:
            drop.extend(group.index[~newest])
            continue
        drop.extend(group.index)
        for position in group[RECORD]:
            issues.append({
                "record": int(position), "table": table, "column": "source_id", "source_field": None,
                "kind": "duplicate_record", "rule": f"{table}.source_id:conflicting_duplicate",
                "value": str(source_id),
                "message": f"{source_id} arrived {len(group)} times in this partition at version {versions.max()} "
                           "with different content",
            })
    return frame.drop(index=drop), redelivered, issues


def _new_schema_failures(table: str, frame: pd.DataFrame, known: list[dict]) -> list[dict]:
    """Schema failures that the mapping has not already explained.

    A value the mapping could not convert is left empty, so the schema would also report it as
    missing. And `version` derives from the update time, so it fails whenever that did.
    """
    explained = {(issue["record"], issue["table"], issue["column"]) for issue in known}
    failures = schema_failures(table, frame).to_dict(orient="records")
    flagged_records = {issue["record"] for issue in known}
    flagged_records |= {failure["record"] for failure in failures if failure["column"] != "version"}
    return [
        failure for failure in failures
        if (failure["record"], table, failure["column"]) not in explained
        and not (failure["column"] == "version" and failure["record"] in flagged_records)
    ]


def _collapse_unknown_currencies(issues: list[dict]) -> list[dict]:
    """Report an unknown currency once, on its currency column, not again on every amount it prices."""
    unknown = {issue["record"] for issue in issues
               if issue["rule"].endswith("currency:isin") and issue["kind"] == "failed_validation"}
    return [issue for issue in issues
            if not (issue["record"] in unknown and str(issue["message"] or "").startswith("unknown currency"))]


def _describe(issue: Mapping, source_field: str | None) -> str:
    if issue["kind"] == "connector_failure":
        return issue["message"]
    where = source_field or issue["column"] or "record"
    if issue["kind"] == "missing_field":
        return f"required field {where} is missing"
    return f"{where}: {issue['message']}"


def _subject(stream: Stream, record_id: str, origin: str | None, table: str) -> str:
    if record_id.startswith("file:"):
        return f"{stream.name} file {origin}"
    return f"{table} record {record_id} in {origin}"


def _exception_rows(stream: Stream, account: str, partition_key: str, issues: pd.DataFrame,
                    records: pd.DataFrame, routing: Routing) -> pd.DataFrame:
    rows = []
    system_name = stream.system.capitalize()
    for issue in issues.to_dict(orient="records"):
        record = records.loc[issue["record"]] if issue["record"] in records.index else None
        record_id = str(record["record_id"]) if record is not None else issue.get("record_id", "unknown")
        origin = str(record["origin"]) if record is not None else issue.get("origin")
        source_field = issue["source_field"] or stream.source_fields.get(f"{issue['table']}.{issue['column']}")
        route = routing.route(issue["kind"], stream.system, issue["table"])
        fix = FIXES.get(issue["kind"], "review the record, then re-run the partition").format(system=system_name)
        fingerprint_parts = [issue["kind"], stream.system, account, issue["table"], record_id, issue["rule"]]
        rows.append({
            "fingerprint": hashlib.sha256("\x1f".join(fingerprint_parts).encode()).hexdigest(),
            "kind": issue["kind"],
            "system": stream.system,
            "account": account,
            "entity": issue["table"],
            "record_id": record_id,
            "partition_key": partition_key,
            "rule": issue["rule"],
            "field": source_field or issue["column"],
            "value": mask_personal(issue["column"], issue["value"]),
            "owner": route.owner,
            "decision_owner": route.decision_owner,
            "reason": f"{system_name} {_subject(stream, record_id, origin, issue['table'])}: "
                      f"{_describe({**issue, 'value': mask_personal(issue['column'], issue['value'])}, source_field)}. "
                      f"Fix: {fix}.",
            "details": canonical_json({"origin": origin, "column": issue["column"], "source_field": source_field,
                                       "stream": stream.name}),
            "due_after": route.due_after,
        })
    return pd.DataFrame(rows)


def _audit_rows(stream: Stream, account: str, run_id: str | None, decisions: pd.DataFrame,
                rejected: dict[str, list[str]], table: str) -> pd.DataFrame:
    """One audit event per record the run stored, skipped or rejected; an absorbed repeat adds none."""
    steps = {INSERTED: "stored", UPDATED: "stored", STALE: "skipped_stale", CONFLICT: "conflict"}
    noted = decisions[decisions["decision"].isin(list(steps))]
    stored_details = noted[["decision", "version", "stored_version"]].astype(object)
    stored = pd.DataFrame({
        "record_id": noted["source_id"].astype(str),
        "step": noted["decision"].map(steps),
        "details": pd.Series(
            stored_details.where(stored_details.notna(), None).to_json(orient="records", lines=True).splitlines()
            if not noted.empty else [], index=noted.index, dtype=object),
    })
    rejections = pd.DataFrame({
        "record_id": list(rejected),
        "step": "rejected",
        "details": [canonical_json({"rules": rules}) for rules in rejected.values()],
    })
    events = pd.concat([frame for frame in (stored, rejections) if not frame.empty] or [stored], ignore_index=True)
    return events.assign(trace_id=run_id or "local", system=stream.system, account=account, entity=table,
                         actor="meshline", at=utc_now())


def _normalize_and_validate(stream: Stream, records: pd.DataFrame, context: MapContext,
                            run: StreamRun) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Map the records to canonical frames and collect every problem, one issue per record and rule.

    The frames returned hold only rows of records without issues.
    """
    primary = stream.tables[0]
    issues = _non_object_issues(records, primary)
    objects = records[records["payload"].map(lambda payload: isinstance(payload, dict)).astype(bool)]
    if objects.empty:
        normalized = Normalized(tables={table: empty_table(table) for table in stream.tables})
    else:
        normalized = stream.normalize(objects, context)
    issues += normalized.issues

    frames = dict(normalized.tables)
    for table in stream.tables:
        issues += _new_schema_failures(table, frames[table], issues)
    issues = _collapse_unknown_currencies(issues)

    failed = {issue["record"] for issue in issues}
    for table in stream.tables:
        valid_rows = frames[table][~frames[table][RECORD].isin(failed)]
        valid_rows, redelivered, duplicate_issues = _in_batch_duplicates(table, valid_rows)
        if table == primary:
            run.redelivered += redelivered
        issues += duplicate_issues
        frames[table] = valid_rows

    failed = {issue["record"] for issue in issues}
    frames = {table: frame[~frame[RECORD].isin(failed)] for table, frame in frames.items()}
    return frames, pd.DataFrame(issues, columns=ISSUE_COLUMNS)


def _store(stream: Stream, frames: dict[str, pd.DataFrame], ledger: Ledger, partition_key: str,
           run_id: str | None) -> tuple[dict[str, StoreOutcome], pd.DataFrame]:
    """Upsert the valid rows; return a duplicate_record issue for each version conflict.

    The primary table goes first. A record whose primary row is stale or conflicts keeps its stored
    state in every table, so an old order version never brings back its old lines.
    """
    outcomes = {}
    conflicts = []
    held: set[int] = set()
    for table in stream.tables:
        rows = frames[table][~frames[table][RECORD].isin(held)]
        outcome = ledger.store(table, rows, partition_key=partition_key, run_id=run_id)
        outcomes[table] = outcome

        positions = rows.drop_duplicates("source_id", keep="last").set_index("source_id")[RECORD]
        decided = outcome.decisions.assign(record=outcome.decisions["source_id"].map(positions))
        if table == stream.tables[0]:
            held = set(decided.loc[decided["decision"].isin([STALE, CONFLICT]), "record"].astype(int))
        for row in decided[decided["decision"] == CONFLICT].itertuples():
            conflicts.append({
                "record": int(row.record), "table": table, "column": "version", "source_field": None,
                "kind": "duplicate_record", "rule": f"{table}.version:conflicting_content", "value": row.version,
                "message": f"version {row.version} is already stored with different content",
            })
    return outcomes, pd.DataFrame(conflicts, columns=ISSUE_COLUMNS)


def _file_issues(stream: Stream, unreadable) -> pd.DataFrame:
    return pd.DataFrame([
        {"record": -1, "record_id": f"file:{batch.origin}", "origin": batch.origin, "table": stream.tables[0],
         "column": None, "source_field": None, "kind": "connector_failure",
         "rule": f"{stream.tables[0]}.file:unreadable", "value": None, "message": batch.error}
        for batch in unreadable
    ], columns=[*ISSUE_COLUMNS, "record_id", "origin"])


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
    run.raw_landed += ledger.land_raw(_raw_rows(stream, account, run.partition_key, records, unreadable))

    context = MapContext(system=stream.system, account=account, partition_key=run.partition_key)
    frames, issues = _normalize_and_validate(stream, records, context, run)
    for table in stream.tables:
        table_issues = issues[issues["table"] == table]
        run.failed_by_table[table] = run.failed_by_table.get(table, 0) + table_issues["record"].nunique()
        rules = run.failed_rules.setdefault(table, {})
        for rule, count in table_issues.groupby("rule")["record"].nunique().items():
            rules[rule] = rules.get(rule, 0) + int(count)

    opened = ledger.open_exceptions(pd.concat([
        _exception_rows(stream, account, run.partition_key, issues, records, routing),
        _exception_rows(stream, account, run.partition_key, _file_issues(stream, unreadable), records, routing),
    ], ignore_index=True), run_id=run_id)
    for key, count in opened.items():
        run.exceptions[key] = run.exceptions.get(key, 0) + count
    _audit_rejections(stream, account, run_id, issues, records, ledger)
    return records, frames


def _store_chunk(stream: Stream, records: pd.DataFrame, frames: dict[str, pd.DataFrame], ledger: Ledger,
                 routing: Routing, run: StreamRun, account: str, run_id: str | None) -> None:
    """Store a validated chunk, open an exception per version conflict and record the audit trail."""
    outcomes, conflicts = _store(stream, frames, ledger, run.partition_key, run_id)
    for table, outcome in outcomes.items():
        earlier = run.stored.get(table)
        run.stored[table] = outcome if earlier is None else StoreOutcome(
            decisions=pd.concat([earlier.decisions, outcome.decisions], ignore_index=True))
    # The trail follows records: an order's lines travel with it, so only the primary table is audited.
    primary = stream.tables[0]
    ledger.record_audit(_audit_rows(stream, account, run_id, outcomes[primary].decisions, {}, primary))

    opened = ledger.open_exceptions(
        _exception_rows(stream, account, run.partition_key, conflicts, records, routing), run_id=run_id)
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
        ledger.record_audit(_audit_rows(stream, account, run_id, StoreOutcome().decisions, rejected, table))


def run_stream(stream: Stream, client: SourceClient, ledger: Ledger, routing: Routing, *, partition_key: str,
               run_id: str | None = None, max_failure_rate: float = 0.2,
               logger: logging.Logger | dg.DagsterLogManager = log,
               records_per_chunk: int = RECORDS_PER_CHUNK) -> StreamRun:
    """Import one partition of a stream: land it raw, validate it, store it and open its exceptions.

    A partition larger than one chunk is validated whole before anything is stored, so a partition
    over the failure maximum stores nothing; its records are then read and mapped a second time,
    chunk by chunk, to keep memory bounded.
    """
    run = StreamRun(stream=stream, partition_key=partition_key)
    account = client.account
    where = f"{stream.system}/{stream.name} partition {partition_key}"

    chunks = _chunks(client.extract(stream.name, partition_key), records_per_chunk)
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
    run.quarantined = any(outcome.blocks for outcome in run.checks.values())
    if run.quarantined:
        logger.error(f"{where}: {run.failed_records} of {run.records} records failed validation, "
                     f"above the maximum share {max_failure_rate:.0%}; nothing stored")
        return run

    if run.chunks == 1:
        _store_chunk(stream, first_records, first_frames, ledger, routing, run, account, run_id)
        return run

    context = MapContext(system=stream.system, account=account, partition_key=partition_key)
    for chunk in _chunks(client.extract(stream.name, partition_key), records_per_chunk):
        records = _record_frame(chunk, stream.record_id)
        frames, _ = _normalize_and_validate(stream, records, context, StreamRun(stream, partition_key))
        _store_chunk(stream, records, frames, ledger, routing, run, account, run_id)
    return run


def _materialize_metadata(run: StreamRun) -> dict:
    primary = run.stream.tables[0]
    model = CANONICAL_MODELS[primary]
    metadata = {
        "dagster/row_count": sum(
            outcome.count(INSERTED) + outcome.count(UPDATED) + outcome.count("absorbed")
            for table, outcome in run.stored.items() if table == primary
        ),
        "dagster/column_schema": dg.TableSchema(columns=[
            dg.TableColumn(name, str(column.dtype), description=None)
            for name, column in model.to_schema().columns.items()
        ]),
        "records": run.records,
        "failed_records": run.failed_records,
        "raw_payloads_landed": run.raw_landed,
        "redelivered_in_partition": run.redelivered,
        "exceptions_opened": run.exceptions.get("opened", 0),
        "exceptions_seen_again": run.exceptions.get("seen_again", 0),
        "quarantined": run.quarantined,
    }
    for table, outcome in run.stored.items():
        metadata[f"{table}_stored"] = dg.MetadataValue.json(outcome.counts())
    if run.unreadable_files:
        metadata["unreadable_files"] = dg.MetadataValue.json(run.unreadable_files)
    return metadata


def stream_asset(stream: Stream, *, client_key: str, owners: list[str]) -> dg.AssetsDefinition:
    """Build the stream's daily-partitioned asset, with one blocking schema check per canonical table."""

    @dg.asset(
        key=stream.asset_key,
        partitions_def=daily_partitions,
        group_name=stream.system,
        owners=owners,
        kinds={stream.system, "pandas"},
        description=stream.description,
        check_specs=[schema_check_spec(stream.asset_key, table) for table in stream.tables],
        required_resource_keys={client_key, "ledger", "routing"},
        tags={"connector": stream.system},
        pool=stream.system,
    )
    def _asset(context: dg.AssetExecutionContext):
        routing_resource = context.resources.routing
        run = run_stream(
            stream,
            getattr(context.resources, client_key),
            context.resources.ledger.open(),
            routing_resource.load(),
            partition_key=context.partition_key,
            run_id=context.run.run_id,
            max_failure_rate=routing_resource.failure_rate_limit(),
            logger=context.log,
        )
        for table, outcome in run.checks.items():
            yield outcome.result(run.failed_rules.get(table, {}), context.partition_key)
        if run.quarantined:
            # Failing without a materialization marks the partition failed, so Dagster's
            # "backfill failed and missing" replays it once the source is fixed.
            blocked = [outcome.describe() for outcome in run.checks.values() if outcome.blocks]
            raise dg.Failure(
                description=f"{stream.system}/{stream.name} partition {context.partition_key}: {' '.join(blocked)}",
                metadata=_materialize_metadata(run),
            )
        yield dg.MaterializeResult(metadata=_materialize_metadata(run))

    return _asset
