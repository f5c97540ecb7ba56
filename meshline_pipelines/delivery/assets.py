"""Delivery assets: a target entity fed from canonical records, per daily partition, through the outbox.

Each `Delivery` declares where its records come from (a canonical table and the systems that
sell), how one record becomes the target's payload, and which stream assets it follows. The
asset plans one outbox row per record version stored in its partition and, in live mode, sends
what is pending. It depends on the stream assets, so a blocking check that fails upstream in the
same run stops it, and records with an active exception stay held in the outbox.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
import pandas as pd
from pydantic import Field

from meshline_pipelines.delivery.outbox import DRY, Planned, delivery_mode, plan, send
from meshline_pipelines.ledger import Ledger
from meshline_pipelines.partitions import daily_partitions
from meshline_pipelines.record_issues import exception_row


@dataclass(frozen=True)
class Delivery:
    """One target entity, declared once: its source records, its payload and its upstream assets."""

    target: str
    entity: str
    name: str
    description: str
    source_table: str
    source_systems: tuple[str, ...]
    upstream: tuple[dg.AssetKey, ...]
    # (ledger, source row, the partition's rows of every table it needs) -> (record key, payload), or None to skip
    build: Callable[[Ledger, dict, dict[str, pd.DataFrame]], tuple[str, dict] | None]
    needs: tuple[str, ...] = ()  # other canonical tables the payload reads, e.g. order_lines
    # The partition's source rows, when they are not simply the source table's rows of the partition.
    rows: Callable[[Ledger, str], pd.DataFrame] | None = None

    @property
    def asset_key(self) -> dg.AssetKey:
        return dg.AssetKey([self.target, self.name])


class DeliveryTargetsResource(dg.ConfigurableResource):
    """The delivery mode and, in live mode, the target clients built from their environment variables."""

    mode: str | None = Field(default=None, description="dry_run or live. Unset: MESHLINE_DELIVERY_MODE, else dry_run.")

    def resolved_mode(self) -> str:
        return self.mode or delivery_mode()

    def client(self, target: str):
        from meshline_pipelines.clients import live_client

        return live_client(target)

    def account(self, target: str) -> str:
        """Return the target account for outbox rows: the configured one, or `dry-run` when nothing is configured."""
        from meshline_pipelines.clients import SettingError, live_client

        try:
            return live_client(target, resolve_secrets=False).account
        except SettingError:
            if self.resolved_mode() == DRY:
                return "dry-run"
            raise


def _source_rows(ledger: Ledger, delivery: Delivery, partition_key: str) -> tuple[pd.DataFrame, dict]:
    if delivery.rows is not None:
        rows = delivery.rows(ledger, partition_key)
    else:
        frame = ledger.read_table(delivery.source_table)
        rows = frame[frame["system"].isin(delivery.source_systems) & (frame["partition_key"] == partition_key)]
    related = {table: ledger.read_table(table) for table in delivery.needs}
    return rows, related


def _cannot_build(delivery: Delivery, row: dict, message: str, routing) -> dict:
    """Build the failed_validation exception of a record whose target payload cannot be built."""
    return exception_row(
        routing, "failed_validation", system=row["system"], account=row["account"], entity=delivery.source_table,
        record_id=row["source_id"], partition_key=row["partition_key"],
        rule=f"{delivery.target}.{delivery.entity}:cannot_build",
        reason=f"{row['system'].capitalize()} {delivery.source_table} record {row['source_id']} cannot become a "
               f"{delivery.target.capitalize()} {delivery.entity}: {message}. Fix: complete the record in "
               f"{row['system'].capitalize()}, then replay its partition",
        details={"target": delivery.target, "entity": delivery.entity})


def delivery_asset(delivery: Delivery) -> dg.AssetsDefinition:
    @dg.asset(key=delivery.asset_key, partitions_def=daily_partitions, group_name=delivery.target,
              kinds={delivery.target, "outbox"}, description=delivery.description, deps=list(delivery.upstream),
              required_resource_keys={"ledger", "routing", "delivery_targets"}, tags={"connector": delivery.target},
              pool=delivery.target)
    def _asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        ledger = context.resources.ledger.open()
        targets = context.resources.delivery_targets
        mode = targets.resolved_mode()
        rows, related = _source_rows(ledger, delivery, context.partition_key)

        planned, unbuildable = [], []
        for row in rows.to_dict(orient="records"):
            try:
                built = delivery.build(ledger, row, related)
            except ValueError as exc:
                unbuildable.append(_cannot_build(delivery, row, str(exc), context.resources.routing.load()))
                continue
            if built is None:
                continue
            record_key, payload = built
            planned.append(Planned(source_system=row["system"], source_account=row["account"],
                                   source_id=row["source_id"], version=row["version"], record_key=record_key,
                                   payload=payload, partition_key=context.partition_key))
        counts = plan(ledger, delivery.target, targets.account(delivery.target), delivery.entity, planned, mode=mode,
                      run_id=context.run.run_id)

        if unbuildable:
            ledger.open_exceptions(pd.DataFrame(unbuildable), run_id=context.run.run_id)
            context.log.warning(f"{len(unbuildable)} {delivery.source_table} records cannot become a {delivery.target} "
                                f"{delivery.entity}; see `meshline exceptions list --kind failed_validation`")

        sent: dict[str, int] = {}
        if mode != DRY:
            sent = send(ledger, targets.client(delivery.target), context.resources.routing.load(),
                        target=delivery.target, entity=delivery.entity, run_id=context.run.run_id)
        outcome = "nothing sent (dry run)" if mode == DRY else f"sent {sent}"
        context.log.info(f"{delivery.target} {delivery.entity} partition {context.partition_key}: planned {counts}, "
                         f"{outcome}")
        metadata = {"mode": mode, "planned": dg.MetadataValue.json(counts), "sent": dg.MetadataValue.json(sent),
                    "cannot_build": len(unbuildable)}
        if planned:
            metadata["first_payload"] = dg.MetadataValue.json(json.loads(json.dumps(planned[0].payload, default=str)))
        return dg.MaterializeResult(metadata=metadata)

    return _asset
