"""Run the main job for every daily partition that has data, recording each run in the instance."""

import logging
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from meshline_pipelines import settings
from meshline_pipelines.definitions import DELIVERIES, MAIN_JOB, RECONCILIATION_JOB, STREAMS
from meshline_pipelines.ledger.store import utc_now
from meshline_pipelines.partitions import daily_partitions
from meshline_pipelines.queue_asset import QUEUE_JOB
from meshline_pipelines.triggers import FAILED, SUCCEEDED, TRIGGER_TAG, finish_trigger, record_trigger, trigger_tag

log = logging.getLogger(__name__)


@dataclass
class PartitionRun:
    partition_key: str
    assets: list[str]
    run_id: str
    success: bool
    failed_steps: list[str]


def partitions_with_data(defs: dg.Definitions) -> dict[str, list[dg.AssetKey]]:
    """Partition key -> the assets whose source has data for it, and the deliveries that follow them."""
    clients = defs.resources
    valid_keys = set(daily_partitions.get_partition_keys())
    planned: dict[str, list[dg.AssetKey]] = {}
    for stream in STREAMS:
        for partition_key in clients[stream.system].partitions_with_data(stream.name):
            if partition_key not in valid_keys:
                log.warning("%s/%s: day folder %s is outside the partitions %s to today and is skipped; "
                            "set %s to an earlier day to import it", stream.system, stream.name, partition_key,
                            settings.partitions_start(), settings.PARTITIONS_START_ENV)
                continue
            planned.setdefault(partition_key, []).append(stream.asset_key)
    # A delivery follows its streams: it runs in a partition where one of its upstream streams has data.
    for asset_keys in planned.values():
        asset_keys += [delivery.asset_key for delivery in DELIVERIES if set(delivery.upstream) & set(asset_keys)]
    return dict(sorted(planned.items()))


def run_main_job(defs: dg.Definitions, instance: dg.DagsterInstance, *, only: list[str] | None = None,
                 on_start: Callable[[str, int], None] | None = None, log_level: str = "INFO") -> list[PartitionRun]:
    job = defs.resolve_job_def(MAIN_JOB)
    planned = partitions_with_data(defs)
    if only:
        invalid = [key for key in only if not settings.PARTITION_KEY.match(key)]
        if invalid:
            raise ValueError(f"invalid partition key {', '.join(invalid)}: write a day as YYYY-MM-DD")
        unknown = sorted(set(only) - set(planned))
        if unknown:
            raise ValueError(f"no data for partitions {', '.join(unknown)}: "
                             f"partitions with data are {', '.join(planned) or 'none'}")
        planned = {key: planned[key] for key in only}

    ledger = defs.resources["ledger"].open()
    routing = defs.resources["routing"].load()
    runs = []
    for partition_key, asset_keys in planned.items():
        if on_start:
            on_start(partition_key, len(asset_keys))
        systems = sorted({key.path[0] for key in asset_keys})
        reference = f"{partition_key}@{utc_now().isoformat()}"
        for system in systems:
            record_trigger(ledger, kind="manual", system=system, reference=reference,
                           owner=routing.system_owner(system), partition_key=partition_key,
                           details={"command": "meshline run"})
        result = job.execute_in_process(
            partition_key=partition_key,
            instance=instance,
            asset_selection=asset_keys,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
            tags={TRIGGER_TAG: f"manual:meshline run:{reference}"},
        )
        for system in systems:
            finish_trigger(ledger, trigger_tag("manual", system, reference), run_id=result.run_id,
                           status=SUCCEEDED if result.success else FAILED)
        failed = [event.step_key for event in result.all_events if event.is_step_failure]
        if failed:
            log.error("partition %s: run %s failed in %s", partition_key, result.run_id, ", ".join(failed))
        runs.append(PartitionRun(partition_key, [key.to_user_string() for key in asset_keys], result.run_id,
                                 result.success, failed))
    return runs


@dataclass(frozen=True)
class QueueRefresh:
    """The outcome of `refresh_queue`: whether every step ran, and the blocking checks that failed."""

    succeeded: bool
    failed_checks: list[str]


def refresh_queue(defs: dg.Definitions, instance: dg.DagsterInstance, *, log_level: str = "INFO") -> QueueRefresh:
    """Run the reconciliations, then refresh the exception queue (detectors, links, source of truth, escalation).

    A reconciliation whose blocking check fails still counts as done: its differences are
    exceptions in the queue. The failed checks are returned so the caller can name them.
    """
    succeeded, failed_checks = True, []
    for job_name in (RECONCILIATION_JOB, QUEUE_JOB):
        result = defs.resolve_job_def(job_name).execute_in_process(
            instance=instance, raise_on_error=False, tags={TRIGGER_TAG: f"manual:meshline run:{job_name}"},
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        )
        failed_checks += [f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
                          for evaluation in result.get_asset_check_evaluations() if not evaluation.passed]
        # A failed blocking check is a finding (its differences are exceptions), not a failed refresh.
        failed_steps = [event.step_key for event in result.all_events if event.is_step_failure
                        and event.step_failure_data.error.cls_name != "DagsterAssetCheckFailedError"]
        if failed_steps:
            log.error("%s failed in run %s (steps %s)", job_name, result.run_id, ", ".join(failed_steps))
            succeeded = False
    return QueueRefresh(succeeded=succeeded, failed_checks=failed_checks)
