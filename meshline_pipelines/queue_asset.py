"""The exception queue as a Dagster asset: detect, escalate what is overdue, alert, report.

Materializing `meshline/exception_queue` runs the cross-record detectors, links records across
systems in the identity map, applies the source-of-truth rules, and escalates every
exception past its due time to its route's escalation target. It alerts owners about new,
overdue and escalated exceptions through the channels their routes name, and records the open
queue in the asset's metadata: counts by owner, kind and due status, and the oldest open items
as a Markdown table. An hourly schedule and every successful main-job run refresh it.
"""

import dagster as dg
import pandas as pd

from meshline_pipelines.alerts import notify
from meshline_pipelines.detectors import detect
from meshline_pipelines.identity import build_links
from meshline_pipelines.ledger.store import utc_now
from meshline_pipelines.queue import ACTIVE, escalate_overdue
from meshline_pipelines.source_of_truth import check as check_source_of_truth

QUEUE_ASSET = dg.AssetKey(["meshline", "exception_queue"])
QUEUE_JOB = "meshline_queue"
OLDEST_SHOWN = 15


def due_status(due_at: pd.Series, now: pd.Timestamp) -> pd.Series:
    """Label each due time: overdue, due within a day, or later."""
    labels = pd.Series("later", index=due_at.index, dtype="string")
    labels[due_at < now + pd.Timedelta(days=1)] = "due within 24h"
    labels[due_at < now] = "overdue"
    return labels


def queue_metadata(active: pd.DataFrame, now: pd.Timestamp) -> dict:
    """Build the metadata: counts by owner, kind and due status, and the oldest active exceptions as Markdown."""
    status = due_status(active["due_at"], now)
    oldest = active.sort_values("opened_at").head(OLDEST_SHOWN)
    lines = ["| id | kind | system | record | owner | status | due |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for row, label in zip(oldest.itertuples(), status.loc[oldest.index]):
        lines.append(f"| {row.id} | {row.kind} | {row.system} | {row.record_id} | {row.owner} | {row.status} | "
                     f"{row.due_at:%Y-%m-%d %H:%M} UTC ({label}) |")
    return {
        "active_exceptions": len(active),
        "overdue": int((status == "overdue").sum()),
        "by_owner": dg.MetadataValue.json(active["owner"].value_counts().sort_index().to_dict()),
        "by_kind": dg.MetadataValue.json(active["kind"].value_counts().sort_index().to_dict()),
        "by_due_status": dg.MetadataValue.json(status.value_counts().sort_index().to_dict()),
        "oldest_active": dg.MetadataValue.md("\n".join(lines) if len(active) else "No active exceptions."),
    }


@dg.asset(key=QUEUE_ASSET, group_name="meshline", kinds={"meshline"}, required_resource_keys={"ledger", "routing"},
          description="The exception queue: escalates overdue exceptions, then reports counts by owner, kind and "
                      "due status and the oldest active items. `meshline exceptions list` shows the same queue.")
def exception_queue(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    ledger = context.resources.ledger.open()
    routing = context.resources.routing.load()

    found = detect(ledger, routing, run_id=context.run.run_id)
    if found["opened"]:
        context.log.warning(f"{found['opened']} new exceptions from the cross-record detectors")
    links = build_links(ledger, routing, run_id=context.run.run_id)
    truth = check_source_of_truth(ledger, routing, run_id=context.run.run_id)
    if truth["opened"]:
        context.log.warning(f"{truth['opened']} new stale_source_of_truth or reconciliation_mismatch exceptions")

    now = pd.Timestamp(utc_now())
    before = ledger.read_exceptions()
    overdue = before[before["status"].isin(ACTIVE) & (before["due_at"] < now)]
    escalated = escalate_overdue(ledger, routing, actor="meshline")
    for step in escalated:
        context.log.warning(f"exception {step.exception_id} is overdue: escalated from {step.from_owner} to "
                            f"{step.to_owner}")

    # Alerts go out once per exception, event and channel. One that failed or was rate-limited
    # is tried again at the next refresh, because it was not recorded as sent.
    exceptions = ledger.read_exceptions()
    active = exceptions[exceptions["status"].isin(ACTIVE)]
    escalated_ids = {step.exception_id for step in escalated}
    results = [
        *notify(ledger, routing, "opened", active, now=now.to_pydatetime()),
        *notify(ledger, routing, "overdue", overdue, now=now.to_pydatetime()),
        *notify(ledger, routing, "escalated", exceptions[exceptions["id"].isin(escalated_ids)],
                now=now.to_pydatetime()),
    ]
    alerts = pd.Series([result.status for result in results], dtype="string").value_counts().to_dict()

    metadata = queue_metadata(active, now)
    metadata["escalated_now"] = len(escalated)
    metadata["identity_links"] = dg.MetadataValue.json(links)
    metadata["alerts"] = dg.MetadataValue.json(alerts)
    return dg.MaterializeResult(metadata=metadata)


queue_job = dg.define_asset_job(QUEUE_JOB, selection=[QUEUE_ASSET],
                                description="Escalates overdue exceptions and refreshes the queue asset.")

queue_schedule = dg.ScheduleDefinition(name="exception_queue_hourly", job=queue_job, cron_schedule="5 * * * *",
                                       execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING,
                                       description="Refreshes the exception queue and escalates overdue exceptions.")


def queue_after_main_job(main_job_name: str) -> dg.SensorDefinition:
    @dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, name="exception_queue_after_import",
                          request_job=queue_job, default_status=dg.DefaultSensorStatus.RUNNING,
                          description="Refreshes the exception queue after each successful import run.")
    def _sensor(context: dg.RunStatusSensorContext):
        if context.dagster_run.job_name != main_job_name:
            return dg.SkipReason(f"{context.dagster_run.job_name} is not the import job")
        return dg.RunRequest(run_key=f"queue-after:{context.dagster_run.run_id}")

    return _sensor
