"""Stream assets: each stream as a daily-partitioned Dagster asset with blocking schema checks."""

import hashlib

import dagster as dg
import sqlalchemy as sa

from meshline_pipelines.alerts import notify
from meshline_pipelines.canonical.schemas import CANONICAL_MODELS
from meshline_pipelines.checks import schema_check_spec
from meshline_pipelines.ingest import StreamRun, run_batches, run_stream
from meshline_pipelines.ledger.store import INSERTED, UPDATED
from meshline_pipelines.partitions import daily_partitions
from meshline_pipelines.replay import RAW_SOURCE, SOURCE_TAG, raw_batches
from meshline_pipelines.sources.http import ApiAuthError, ApiRequestError, ApiResponseError, ApiUnavailable
from meshline_pipelines.streams import Stream


# Transient source failures (429, 5xx and timeouts that outlasted the client's own retries) are
# retried by the run with longer waits. Errors that a retry cannot fix fail at once.
SOURCE_RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL,
                                     jitter=dg.Jitter.PLUS_MINUS)
PERMANENT_ERRORS = (ApiAuthError, ApiRequestError, ApiResponseError)
# Failures a later attempt can get past: an unreachable API, a dropped database connection, a
# file share that is briefly gone. Any other error is a fault in the data or the code, and
# retrying it would only delay the failed partition by minutes.
TRANSIENT_ERRORS = (ApiUnavailable, sa.exc.OperationalError, OSError)


def materialize_metadata(run: StreamRun) -> dict:
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
    if run.new_fields:
        metadata["new_source_fields"] = dg.MetadataValue.json(dict(sorted(run.new_fields.items())))
    if run.unreadable_files:
        metadata["unreadable_files"] = dg.MetadataValue.json(run.unreadable_files)
    return metadata


def _alert_blocked(stream: Stream, account: str, context: dg.AssetExecutionContext, ledger, routing,
                   description: str) -> None:
    """Alert the owner of a partition whose blocking check failed; once per stream, account and partition."""
    primary = stream.tables[0]
    route = routing.route("failed_validation", stream.system, primary)
    parts = ["check_failed", stream.system, account, stream.name, context.partition_key]
    notify(ledger, routing, "check_failed", [{
        "fingerprint": hashlib.sha256("\x1f".join(parts).encode()).hexdigest(), "kind": "failed_validation",
        "system": stream.system, "account": account, "entity": primary, "partition_key": context.partition_key,
        "record_id": f"partition:{context.partition_key}", "owner": route.owner, "run_id": context.run.run_id,
        "reason": f"{stream.system}/{stream.name} partition {context.partition_key}: {description} "
                  f"`meshline exceptions list --system {stream.system}` lists the held records.",
    }])


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
        deps=[dg.AssetKey([stream.system, name]) for name in stream.depends_on],
        pool=stream.system,
        retry_policy=SOURCE_RETRY_POLICY,
    )
    def _asset(context: dg.AssetExecutionContext):
        routing_resource = context.resources.routing
        client = getattr(context.resources, client_key)
        ledger = context.resources.ledger.open()
        options = dict(partition_key=context.partition_key, run_id=context.run.run_id,
                       max_failure_rate=routing_resource.failure_rate_limit(), logger=context.log)
        try:
            if context.run.tags.get(SOURCE_TAG) == RAW_SOURCE:
                # A replay: the payloads landed for this partition, without calling the source.
                def read():
                    return raw_batches(ledger, stream.system, client.account, stream.name, context.partition_key)

                run = run_batches(stream, client.account, read, ledger, routing_resource.load(), **options)
            else:
                run = run_stream(stream, client, ledger, routing_resource.load(), **options)
        except PERMANENT_ERRORS as exc:
            # Credentials, settings or a body the API should never send: a retry would fail the same way.
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:
            raise dg.Failure(description=f"{stream.system}/{stream.name} partition {context.partition_key} failed "
                                         f"with {type(exc).__name__}: {exc}", allow_retries=False) from exc
        for table, outcome in run.checks.items():
            yield outcome.result(run.failed_rules.get(table, {}), context.partition_key, system=stream.system,
                                 held_records=run.held_records.get(table))
        if run.quarantined:
            # Failing without a materialization marks the partition failed, so Dagster's
            # "backfill failed and missing" replays it once the source is fixed.
            blocked = [outcome.describe() for outcome in run.checks.values() if outcome.blocks]
            _alert_blocked(stream, client.account, context, ledger, routing_resource.load(), " ".join(blocked))
            raise dg.Failure(
                description=f"{stream.system}/{stream.name} partition {context.partition_key}: {' '.join(blocked)}",
                metadata=materialize_metadata(run),
                allow_retries=False,
            )
        yield dg.MaterializeResult(metadata=materialize_metadata(run))

    return _asset
