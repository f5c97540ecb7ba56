"""Op jobs beside the assets: incremental extraction of a live stream, and the webhook inbox.

Polling sensors launch the extraction job; an operator can launch it from the Launchpad with a
system and a stream. The inbox sensor launches the inbox job. Each daily partition either job
stores is reported as a materialization of that stream's asset, so the asset's Partitions tab
shows what came in.
"""

from datetime import datetime

import dagster as dg
import pandas as pd
from pydantic import Field

from meshline_pipelines.assets import PERMANENT_ERRORS, SOURCE_RETRY_POLICY, materialize_metadata
from meshline_pipelines.extract import extract_stream
from meshline_pipelines.sources.live import LiveClient, iso_utc
from meshline_pipelines.streams import Stream
from meshline_pipelines.webhooks.inbox import FAILED as EVENT_FAILED
from meshline_pipelines.webhooks.inbox import RECEIVED, events_by_id
from meshline_pipelines.webhooks.process import process_events

EXTRACT_JOB = "meshline_extract"


class ExtractConfig(dg.Config):
    system: str = Field(description="shopify, amazon or stripe; the system must be in API mode (<SYSTEM>_MODE=api).")
    stream: str = Field(description="A stream of the system, e.g. orders or charges.")
    since: str | None = Field(default=None, description="ISO 8601 start. Unset: the watermark less the look-back.")
    until: str | None = Field(default=None, description="ISO 8601 end, exclusive. Unset: now.")


def extract_run_config(system: str, stream: str) -> dict:
    return {"ops": {"extract_live_stream": {"config": {"system": system, "stream": stream}}}}


def _moment(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def build_extract_job(streams: list[Stream]) -> dg.JobDefinition:
    by_key = {(stream.system, stream.name): stream for stream in streams}

    @dg.op(name="extract_live_stream", required_resource_keys={*{system for system, _ in by_key}, "ledger", "routing"},
           retry_policy=SOURCE_RETRY_POLICY)
    def extract_live_stream(context: dg.OpExecutionContext, config: ExtractConfig) -> None:
        stream = by_key.get((config.system, config.stream))
        if stream is None:
            raise dg.Failure(f"unknown stream {config.system}/{config.stream}: expected one of "
                             f"{', '.join(f'{s}/{n}' for s, n in by_key)}", allow_retries=False)
        client = getattr(context.resources, config.system)
        if not isinstance(client, LiveClient):
            raise dg.Failure(f"{config.system} reads files: set {config.system.upper()}_MODE=api and its "
                             "credentials to extract from its API", allow_retries=False)

        routing = context.resources.routing
        try:
            extraction = extract_stream(
                stream, client, context.resources.ledger.open(), routing.load(), since=_moment(config.since),
                until=_moment(config.until), run_id=context.run_id, max_failure_rate=routing.failure_rate_limit(),
                logger=context.log,
            )
        except PERMANENT_ERRORS as exc:
            raise dg.Failure(str(exc), allow_retries=False) from exc

        for run in extraction.runs:
            context.log_event(dg.AssetMaterialization(asset_key=stream.asset_key, partition=run.partition_key,
                                                      metadata=materialize_metadata(run)))
        summary = (f"{stream.system}/{stream.name}: fetched {extraction.fetched}, stored {extraction.stored}, "
                   f"unchanged {extraction.unchanged}, watermark "
                   f"{iso_utc(extraction.watermark_after.cursor) if extraction.watermark_after.cursor else 'not set'}")
        context.log.info(summary)
        if extraction.blocked_partitions:
            raise dg.Failure(f"{stream.system}/{stream.name}: partitions {', '.join(extraction.blocked_partitions)} "
                             "are blocked by failed validation; see `meshline exceptions list`", allow_retries=False)

    @dg.job(name=EXTRACT_JOB, description="Extracts one live stream since its watermark and stores it. "
                                          "Polling sensors launch it; set system and stream in the Launchpad.")
    def extract_job():
        extract_live_stream()

    return extract_job


INBOX_JOB = "meshline_inbox"


class InboxConfig(dg.Config):
    event_ids: list[int] = Field(description="IDs of inbox events to process; events no longer `received` are skipped.")


def inbox_run_config(event_ids: list[int]) -> dict:
    return {"ops": {"process_inbox_events": {"config": {"event_ids": event_ids}}}}


def build_inbox_job(streams: list[Stream]) -> dg.JobDefinition:
    @dg.op(name="process_inbox_events", required_resource_keys={"ledger", "routing"})
    def process_inbox_events(context: dg.OpExecutionContext, config: InboxConfig) -> None:
        ledger = context.resources.ledger.open()
        routing = context.resources.routing
        events = events_by_id(ledger, config.event_ids)
        waiting = events[events["status"] == RECEIVED]
        if len(waiting) < len(events):
            context.log.info(f"{len(events) - len(waiting)} of {len(events)} inbox events were already handled")

        outcome = process_events(waiting, streams, ledger, routing.load(), run_id=context.run_id,
                                 max_failure_rate=routing.failure_rate_limit(), logger=context.log)
        for run in outcome.runs:
            context.log_event(dg.AssetMaterialization(asset_key=run.stream.asset_key, partition=run.partition_key,
                                                      metadata=materialize_metadata(run)))
        counts = pd.Series(list(outcome.statuses.values()), dtype="string").value_counts().to_dict()
        context.log.info(f"inbox events: {counts or 'none waiting'}")
        failed = sorted(event_id for event_id, status in outcome.statuses.items() if status == EVENT_FAILED)
        if failed:
            raise dg.Failure(f"inbox events {', '.join(map(str, failed))} failed; "
                             "`meshline inbox list --status failed` "
                             "shows why", allow_retries=False)

    @dg.job(name=INBOX_JOB, description="Stores the records of received webhook events. The inbox sensor launches it.")
    def inbox_job():
        process_inbox_events()

    return inbox_job
