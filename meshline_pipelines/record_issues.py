"""Problems found in a partition's records, and the exception and audit rows they become.

An issue is one problem of one raw record under one rule: a dict with the columns of
`ISSUE_COLUMNS`. The queue opens one exception per issue fingerprint.
"""

import hashlib
from collections.abc import Mapping

import pandas as pd

from meshline_pipelines.checks import schema_failures
from meshline_pipelines.ledger.store import (
    ABSORBED, CONFLICT, INSERTED, STALE, UPDATED, canonical_json, is_timestamp_version, row_hashes, utc_now,
)
from meshline_pipelines.normalize import ISSUE_COLUMNS, RECORD
from meshline_pipelines.privacy import mask_personal
from meshline_pipelines.routing import Routing
from meshline_pipelines.streams import Stream

FIXES = {
    "missing_field": "add the field in {system} (or correct the export), then re-run the partition",
    "failed_validation": "correct the value in {system} (or the export), then re-run the partition",
    "duplicate_record": "decide in {system} which content is right, then re-run the partition",
    "unmapped_reference": "import the {system} record it refers to (for a variant, the product catalog), "
                          "then re-run the partition",
    "connector_failure": "export the file from {system} again, drop it in the same day folder, then re-run the partition",
}


def non_object_issues(records: pd.DataFrame, table: str) -> list[dict]:
    not_objects = records.index[~records["payload"].map(lambda payload: isinstance(payload, dict)).astype(bool)]
    return [
        {"record": int(position), "table": table, "column": None, "source_field": None, "kind": "failed_validation",
         "rule": f"{table}.record:type", "value": type(records.at[position, "payload"]).__name__,
         "message": "expected a JSON object for each record"}
        for position in not_objects
    ]


def resolve_in_batch_duplicates(table: str, frame: pd.DataFrame) -> tuple[pd.DataFrame, int, list[dict]]:
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


def new_schema_failures(table: str, frame: pd.DataFrame, known: list[dict]) -> list[dict]:
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


def collapse_unknown_currencies(issues: list[dict]) -> list[dict]:
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


def fingerprint(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def exception_row(routing: Routing, kind: str, *, system: str, account: str, entity: str, record_id: str,
                  partition_key: str | None, rule: str, reason: str, field: str | None = None, value=None,
                  details: dict | None = None, owner: str | None = None,
                  fingerprint_extra: tuple[str, ...] = ()) -> dict:
    """Build one exception row for `Ledger.open_exceptions`, owned and timed by the route of its kind.

    The fingerprint is (kind, system, account, entity, record ID, rule) and `fingerprint_extra`,
    so the same problem opens one exception however often it is found.
    """
    route = routing.route(kind, system, entity)
    return {
        "fingerprint": fingerprint(kind, system, account, entity, record_id, rule, *fingerprint_extra),
        "kind": kind, "system": system, "account": account, "entity": entity, "record_id": record_id,
        "partition_key": partition_key, "rule": rule, "field": field, "value": None if value is None else str(value),
        "owner": owner or route.owner, "decision_owner": route.decision_owner, "reason": reason,
        "details": canonical_json(details) if details is not None else None, "due_after": route.due_after,
    }


def exception_rows(stream: Stream, account: str, partition_key: str, issues: pd.DataFrame,
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
        rows.append({
            "fingerprint": fingerprint(issue["kind"], stream.system, account, issue["table"], record_id, issue["rule"]),
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


def audit_rows(stream: Stream, account: str, run_id: str | None, decisions: pd.DataFrame,
               rejected: dict[str, list[str]], table: str, partition_key: str | None = None) -> pd.DataFrame:
    """Build one audit event per record the run stored, skipped, rejected or saw redelivered.

    A redelivery is identical content arriving in another partition than the one that stored it, so
    a re-run of the storing partition adds no event, while each re-run of the redelivering one does.
    """
    steps = {INSERTED: "stored", UPDATED: "stored", STALE: "skipped_stale", CONFLICT: "conflict"}
    redelivered = (decisions["decision"] == ABSORBED) & decisions["stored_partition_key"].notna() & (
        decisions["stored_partition_key"] != partition_key)
    noted = decisions[decisions["decision"].isin(list(steps)) | redelivered]
    stored_details = noted[["decision", "version", "stored_version", "stored_partition_key"]].astype(object)
    stored = pd.DataFrame({
        "record_id": noted["source_id"].astype(str),
        "step": noted["decision"].map(steps).fillna("redelivered"),
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


def file_issues(stream: Stream, unreadable) -> pd.DataFrame:
    return pd.DataFrame([
        {"record": -1, "record_id": f"file:{batch.origin}", "origin": batch.origin, "table": stream.tables[0],
         "column": None, "source_field": None, "kind": "connector_failure",
         "rule": f"{stream.tables[0]}.file:unreadable", "value": None, "message": batch.error}
        for batch in unreadable
    ], columns=[*ISSUE_COLUMNS, "record_id", "origin"])


def unmapped_references(stream: Stream, frames: dict[str, pd.DataFrame], ledger, account: str,
                        held: set[int], logger) -> pd.DataFrame:
    """Issues for stored rows whose reference columns name no stored record of the target table.

    Before the first import of a target table for the account, every value would be unmapped, so the
    check is skipped with a warning instead of filling the queue.
    """
    issues = []
    for reference in stream.references:
        if not ledger.has_rows(reference.target_table, stream.system, account):
            logger.warning(f"{stream.system}/{stream.name}: no {reference.target_table} stored for {account} yet, "
                           f"so {reference.table}.{reference.column} is not checked; import them first")
            continue
        rows = frames[reference.table]
        rows = rows[rows[reference.column].notna() & ~rows[RECORD].isin(held)]
        if rows.empty:
            continue
        values = rows[reference.column].astype(str)
        known = ledger.known_source_ids(reference.target_table, stream.system, account, sorted(set(values)))
        for position, value in zip(rows[RECORD], values):
            if value in known:
                continue
            issues.append({
                "record": int(position), "table": reference.table, "column": reference.column,
                "source_field": reference.source_field, "kind": "unmapped_reference",
                "rule": f"{reference.table}.{reference.column}:unmapped", "value": value,
                "message": f"{value} is in no stored {reference.target_table}",
            })
    return pd.DataFrame(issues, columns=ISSUE_COLUMNS)
