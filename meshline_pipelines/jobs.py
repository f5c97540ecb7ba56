"""The incremental extraction job: one live stream from its watermark, through the ledger.

Polling sensors launch it; an operator can launch it from the Launchpad with a system and a
stream. Each daily partition it stores is reported as a materialization of that stream's asset,
so the asset's Partitions tab shows what the extraction brought in.
"""

from datetime import datetime

import dagster as dg
from pydantic import Field

from meshline_pipelines.assets import PERMANENT_ERRORS, SOURCE_RETRY_POLICY, materialize_metadata
from meshline_pipelines.extract import extract_stream
from meshline_pipelines.sources.live import LiveClient, iso_utc
from meshline_pipelines.streams import Stream

EXTRACT_JOB = "meshline_extract"
SYSTEMS = ("shopify", "amazon", "stripe")


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

    @dg.op(name="extract_live_stream", required_resource_keys={*SYSTEMS, "ledger", "routing"},
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
