"""Triggers as Dagster sensors and a schedule: dropped files, live streams, webhooks, failed runs.

Every sensor returns its run requests together with its new cursor, so a cursor never moves past
work that was not requested. Run keys carry the version of what triggered them (the content hash
of a day's files, the watermark of a stream), so the same version never runs twice and a new
version always runs. Runs are tagged with their `connector`, which the run queue limits per API.
"""

import hashlib
import json
import logging
from pathlib import Path

import dagster as dg
import pandas as pd

from meshline_pipelines.jobs import EXTRACT_JOB, INBOX_JOB, extract_run_config, inbox_run_config
from meshline_pipelines.ledger import Ledger
from meshline_pipelines.ledger.store import utc_now
from meshline_pipelines.partitions import daily_partitions
from meshline_pipelines.record_issues import exception_row
from meshline_pipelines.resources import LedgerResource, RoutingResource
from meshline_pipelines.sources.base import SourceClient
from meshline_pipelines.sources.files import FileSnapshotClient, import_root, matching_files, partition_dirs
from meshline_pipelines.sources.live import LiveClient, iso_utc
from meshline_pipelines.streams import Stream
from meshline_pipelines.triggers import FAILED, SUCCEEDED, TRIGGER_TAG, finish_trigger, record_trigger, trigger_tag
from meshline_pipelines.webhooks.inbox import pending

log = logging.getLogger(__name__)

# Seconds between evaluations. Polling a live stream more often than its API's rate allows only
# queues runs; the run queue still runs one per connector at a time.
IMPORT_FOLDER_INTERVAL = 60
POLL_INTERVAL = 300
INBOX_INTERVAL = 30
INBOX_BATCH = 500
# Minutes after which an event below the cursor that is still waiting is requested again.
STRAGGLER_MINUTES = 10
CATCH_UP_CRON = "30 2 * * *"


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _day_folders(client: FileSnapshotClient, streams: list[Stream], known: dict) -> dict[str, dict[str, list]]:
    """Return, per partition key, the system's files there as {relative path: [size, mtime_ns, sha256]}.

    A file whose size and modification time are those already in the cursor keeps its hash
    without being read again.
    """
    root = import_root(client.import_dir)
    valid_keys = set(daily_partitions.get_partition_keys())
    days: dict[str, dict[str, list]] = {}
    for folder in partition_dirs(root):
        if folder.name not in valid_keys:
            continue
        for stream in streams:
            for pattern in client.patterns(stream.name):
                for path in matching_files(root, folder.name, client.system, pattern.glob):
                    name = f"{folder.name}/{client.system}/{path.name}"
                    stat = path.stat()
                    seen = known.get(name)
                    if seen and seen[0] == stat.st_size and seen[1] == stat.st_mtime_ns:
                        entry = seen
                    else:
                        entry = [stat.st_size, stat.st_mtime_ns, _file_hash(path)]
                    days.setdefault(folder.name, {})[name] = entry
    return days


def _group_digest(files: dict[str, list]) -> str:
    listing = "\n".join(f"{name}:{entry[2]}" for name, entry in sorted(files.items()))
    return hashlib.sha256(listing.encode()).hexdigest()


def import_folder_sensor(streams: list[Stream], job_name: str) -> dg.SensorDefinition:
    """Request a run of a system's assets for a day whose dropped files are new or changed."""
    systems = sorted({stream.system for stream in streams})

    @dg.sensor(name="import_folder_sensor", job_name=job_name, minimum_interval_seconds=IMPORT_FOLDER_INTERVAL,
               default_status=dg.DefaultSensorStatus.STOPPED, required_resource_keys={*systems, "ledger", "routing"},
               description="Runs a system's assets for a day when files in its import folder are new or changed "
                           "(by content hash).")
    def _sensor(context: dg.SensorEvaluationContext):
        cursor = json.loads(context.cursor) if context.cursor else {"files": {}, "days": {}}
        ledger = context.resources.ledger.open()
        routing = context.resources.routing.load()

        requests, files, days = [], {}, {}
        for system in systems:
            client = getattr(context.resources, system)
            if not isinstance(client, FileSnapshotClient):
                continue
            system_streams = [stream for stream in streams if stream.system == system]
            for partition_key, day_files in sorted(_day_folders(client, system_streams, cursor["files"]).items()):
                files.update(day_files)
                group = f"{partition_key}/{system}"
                digest = _group_digest(day_files)
                days[group] = digest
                if cursor["days"].get(group) == digest:
                    continue

                reference = f"{group}@{digest[:16]}"
                record_trigger(ledger, kind="file", system=system, account=client.account, reference=reference,
                               owner=routing.system_owner(system), run_key=f"files:{reference}",
                               partition_key=partition_key, details={"files": sorted(day_files)})
                requests.append(dg.RunRequest(
                    run_key=f"files:{reference}", partition_key=partition_key,
                    asset_selection=[stream.asset_key for stream in system_streams],
                    tags={"connector": system, TRIGGER_TAG: trigger_tag("file", system, reference)},
                ))

        return dg.SensorResult(run_requests=requests, cursor=json.dumps({"files": files, "days": days}, sort_keys=True))

    return _sensor


def poll_sensor(stream: Stream) -> dg.SensorDefinition:
    """Request an incremental extraction of a live stream from its watermark, once per interval.

    The run key contains the watermark and the interval, so a tick evaluated twice requests one run,
    and a stream whose watermark did not move is still read again in the next interval.
    """

    @dg.sensor(name=f"{stream.system}_{stream.name}_poll", job_name=EXTRACT_JOB,
               minimum_interval_seconds=POLL_INTERVAL, default_status=dg.DefaultSensorStatus.STOPPED,
               required_resource_keys={stream.system, "ledger", "routing"},
               description=f"Extracts {stream.system}/{stream.name} from its live API since the stored watermark.")
    def _sensor(context: dg.SensorEvaluationContext):
        client = getattr(context.resources, stream.system)
        if not isinstance(client, LiveClient):
            return dg.SkipReason(f"{stream.system} reads files; set {stream.system.upper()}_MODE=api to poll its API")

        interval = int(utc_now().timestamp()) // POLL_INTERVAL
        if context.cursor and int(context.cursor) >= interval:
            return dg.SkipReason("this interval's extraction is already requested")
        in_flight = context.instance.get_run_ids(filters=dg.RunsFilter(
            tags={TRIGGER_TAG: f"poll:{stream.system}:{stream.name}"},
            statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                      dg.DagsterRunStatus.STARTED]), limit=1)
        if in_flight:
            return dg.SkipReason(f"run {in_flight[0]} is still extracting {stream.system}/{stream.name}")

        ledger = context.resources.ledger.open()
        watermark = ledger.read_watermark(stream.system, client.account, stream.name)
        mark = iso_utc(watermark.cursor) if watermark.cursor else "start"
        reference = f"{stream.name}@{mark}#{interval}"
        record_trigger(ledger, kind="poll", system=stream.system, account=client.account, stream=stream.name,
                       reference=reference, owner=context.resources.routing.load().system_owner(stream.system),
                       run_key=f"poll:{stream.system}:{reference}", details={"watermark": mark})
        request = dg.RunRequest(
            run_key=f"poll:{stream.system}:{reference}",
            run_config=extract_run_config(stream.system, stream.name),
            # The trigger tag without the interval finds this stream's runs still in flight.
            tags={"connector": stream.system, TRIGGER_TAG: f"poll:{stream.system}:{stream.name}",
                  "meshline/trigger_reference": reference},
        )
        return dg.SensorResult(run_requests=[request], cursor=str(interval))

    return _sensor


def inbox_sensor() -> dg.SensorDefinition:
    """Request a run of the inbox job for the webhook events received since the last tick, one per system.

    The cursor is the highest inbox ID requested. An ID is taken when a row is inserted, not when it
    commits, so an event can become visible below the cursor. Such an event, still waiting after
    STRAGGLER_MINUTES, is requested again under a run key of its own IDs.
    """

    @dg.sensor(name="inbox_sensor", job_name=INBOX_JOB, minimum_interval_seconds=INBOX_INTERVAL,
               default_status=dg.DefaultSensorStatus.RUNNING, required_resource_keys={"ledger"},
               description="Processes the webhook events that `meshline webhooks serve` stored in the inbox.")
    def _sensor(context: dg.SensorEvaluationContext):
        ledger = context.resources.ledger.open()
        cursor = int(context.cursor or 0)
        waiting = pending(ledger, after_id=0, limit=INBOX_BATCH)
        if waiting.empty:
            return dg.SkipReason("no webhook events are waiting")

        fresh = waiting[waiting["id"] > cursor]
        stale_before = utc_now() - pd.Timedelta(minutes=STRAGGLER_MINUTES)
        stragglers = waiting[(waiting["id"] <= cursor) & (waiting["received_at"] < stale_before)]

        requests = []
        for kind, events in (("inbox", fresh), ("inbox-again", stragglers)):
            for system, group in events.groupby("system"):
                ids = [int(event_id) for event_id in group["id"]]
                key = (f"{kind}:{system}:{ids[0]}-{ids[-1]}" if kind == "inbox"
                       else f"{kind}:{system}:{hashlib.sha256(str(ids).encode()).hexdigest()[:16]}")
                requests.append(dg.RunRequest(run_key=key, run_config=inbox_run_config(ids),
                                              tags={"connector": system, "meshline/inbox_events": str(len(ids))}))
        new_cursor = max(cursor, int(fresh["id"].max())) if not fresh.empty else cursor
        return dg.SensorResult(run_requests=requests, cursor=str(new_cursor))

    return _sensor


def catch_up_schedule(live_streams: list[Stream], job_name: str) -> dg.ScheduleDefinition:
    """Re-read yesterday's partition of every live stream each night, after the look-back has passed.

    A change that a source indexed later than the look-back window allows is still picked up the
    next night; the ledger absorbs everything else.
    """
    systems = sorted({stream.system for stream in live_streams})

    @dg.schedule(name="live_catch_up_schedule", cron_schedule=CATCH_UP_CRON, execution_timezone="UTC",
                 job_name=job_name, default_status=dg.DefaultScheduleStatus.STOPPED,
                 required_resource_keys={*systems, "ledger", "routing"},
                 description="Each night, re-reads yesterday's partition of every live stream from its API.")
    def _schedule(context: dg.ScheduleEvaluationContext):
        day = (context.scheduled_execution_time - pd.Timedelta(days=1)).strftime("%Y-%m-%d")
        ledger = context.resources.ledger.open()
        routing = context.resources.routing.load()
        for system in systems:
            reference = f"catch-up:{day}"
            record_trigger(ledger, kind="schedule", system=system, account=getattr(context.resources, system).account,
                           reference=reference, owner=routing.system_owner(system), partition_key=day,
                           run_key=f"schedule:{system}:{day}")
            yield dg.RunRequest(
                run_key=f"schedule:{system}:{day}", partition_key=day,
                asset_selection=[stream.asset_key for stream in live_streams if stream.system == system],
                tags={"connector": system, TRIGGER_TAG: trigger_tag("schedule", system, reference)},
            )

    return _schedule


def _trigger_of(run: dg.DagsterRun) -> str | None:
    tag = run.tags.get(TRIGGER_TAG)
    reference = run.tags.get("meshline/trigger_reference")
    if tag and reference and tag.startswith("poll:"):
        kind, system, _ = tag.split(":", 2)
        return trigger_tag(kind, system, reference)
    return tag


def _step_stream(step_key: str, streams: list[Stream]) -> Stream | None:
    return next((stream for stream in streams if "__".join(stream.asset_key.path) == step_key), None)


def connector_failure_sensor(streams: list[Stream]) -> dg.SensorDefinition:
    """Open a connector_failure exception, owned by the system owner, for each failed stream partition."""

    @dg.run_failure_sensor(name="connector_failure_sensor", default_status=dg.DefaultSensorStatus.RUNNING,
                           description="Turns a failed run of a stream into a connector_failure exception with an "
                                       "owner and a due time, and marks its trigger failed.")
    def _sensor(context: dg.RunFailureSensorContext, ledger: LedgerResource, routing: RoutingResource,
                shopify: SourceClient, amazon: SourceClient, stripe: SourceClient):
        clients = {"shopify": shopify, "amazon": amazon, "stripe": stripe}
        record_run_failure(context.dagster_run, context.failure_event.message or "the run failed",
                           {event.step_key: _failure_message(event) for event in context.get_step_failure_events()},
                           streams, clients, ledger.open(), routing.load())

    return _sensor


def _failure_message(event: dg.DagsterEvent) -> str:
    """Return the error a failed step raised: a Failure's description, else the error's own message."""
    data = event.step_failure_data
    if data is None:
        return event.message or "the step failed"
    if data.user_failure_data and data.user_failure_data.description:
        return data.user_failure_data.description
    error = data.error
    while error is not None and error.cause is not None and "dagster" in error.cls_name.lower():
        error = error.cause
    return error.message.strip() if error else (event.message or "the step failed")


def record_run_failure(run: dg.DagsterRun, message: str, step_messages: dict, streams: list[Stream],
                       clients: dict, ledger: Ledger, routing) -> pd.DataFrame:
    """Mark the run's trigger failed and open one connector_failure exception per failed stream step."""
    trigger = _trigger_of(run)
    if trigger:
        finish_trigger(ledger, trigger, run_id=run.run_id, status=FAILED, error=message)

    rows = []
    for step_key in step_messages or {None: message}:
        stream = _step_stream(step_key, streams) if step_key else None
        system = stream.system if stream else run.tags.get("connector")
        if system not in clients:
            continue
        rows.append(failure_exception(stream, system, clients[system].account, run.tags.get("dagster/partition"),
                                      run.run_id, step_messages.get(step_key) or message, routing))
    exceptions = pd.DataFrame(rows)
    if not exceptions.empty:
        ledger.open_exceptions(exceptions, run_id=run.run_id)
    return exceptions


def failure_exception(stream: Stream | None, system: str, account: str, partition_key: str | None, run_id: str,
                      message: str, routing) -> dict:
    """Build the connector_failure exception of a failed run: one per stream and partition, opened once."""
    entity = stream.tables[0] if stream else "run"
    subject = f"{system}/{stream.name}" if stream else f"{system} run"
    where = f"partition {partition_key}" if partition_key else f"run {run_id}"
    replay = (f"re-materialize {where} of {subject} from the asset's Partitions tab"
              if stream and partition_key else "re-execute the run from the Dagster UI")
    return exception_row(
        routing, "connector_failure", system=system, account=account, entity=entity,
        record_id=f"partition:{partition_key}" if partition_key else f"run:{run_id}", partition_key=partition_key,
        rule=f"{stream.name if stream else 'run'}:run_failed",
        reason=f"{subject} {where} failed in run {run_id}: {message[:400]}. Fix: remove the cause named here, "
               f"then {replay}.",
        details={"run_id": run_id, "stream": stream.name if stream else None})


def trigger_success_sensor() -> dg.SensorDefinition:
    @dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, name="trigger_success_sensor",
                          default_status=dg.DefaultSensorStatus.RUNNING,
                          description="Marks the trigger of each successful run as succeeded.")
    def _sensor(context: dg.RunStatusSensorContext, ledger: LedgerResource):
        trigger = _trigger_of(context.dagster_run)
        if trigger:
            finish_trigger(ledger.open(), trigger, run_id=context.dagster_run.run_id, status=SUCCEEDED)

    return _sensor
