"""The MeshLine code location: per-system assets with their schema checks, the main job, resources."""

import dagster as dg

from meshline_pipelines.amazon.assets import STREAMS as AMAZON_STREAMS
from meshline_pipelines.assets import stream_asset
from meshline_pipelines.clients import LIVE_CLIENTS, source_clients
from meshline_pipelines.delivery.assets import DeliveryTargetsResource, delivery_asset
from meshline_pipelines.jobs import build_extract_job, build_inbox_job
from meshline_pipelines.hubspot.assets import STREAMS as HUBSPOT_STREAMS
from meshline_pipelines.hubspot.deliveries import DELIVERIES as HUBSPOT_DELIVERIES
from meshline_pipelines.netsuite.assets import STREAMS as NETSUITE_STREAMS
from meshline_pipelines.netsuite.deliveries import DELIVERIES as NETSUITE_DELIVERIES
from meshline_pipelines.queue_asset import exception_queue, queue_after_main_job, queue_job, queue_schedule
from meshline_pipelines.reconciliation.payouts import payout_reconciliation_asset
from meshline_pipelines.reconciliation.records import customer_reconciliation, inventory_reconciliation
from meshline_pipelines.resources import LedgerResource, RoutingResource
from meshline_pipelines.review import weekly_review_asset, weekly_review_job, weekly_review_schedule
from meshline_pipelines.routing import load_routing
from meshline_pipelines.shipstation.assets import STREAMS as SHIPSTATION_STREAMS
from meshline_pipelines.shopify.deliveries import DELIVERIES as SHOPIFY_DELIVERIES
from meshline_pipelines.shipstation.deliveries import DELIVERIES as SHIPSTATION_DELIVERIES
from meshline_pipelines.sensors import (
    catch_up_schedule, connector_failure_sensor, import_folder_sensor, inbox_sensor, poll_sensor,
    trigger_success_sensor,
)
from meshline_pipelines.shopify.assets import STREAMS as SHOPIFY_STREAMS
from meshline_pipelines.stripe.assets import STREAMS as STRIPE_STREAMS
from meshline_pipelines.sources.live import LiveClient
from meshline_pipelines.streams import Stream

MAIN_JOB = "meshline_main"
RECONCILIATION_JOB = "meshline_reconciliation"
STREAMS: list[Stream] = [*SHOPIFY_STREAMS, *AMAZON_STREAMS, *STRIPE_STREAMS]
TARGET_STREAMS: list[Stream] = [*NETSUITE_STREAMS, *HUBSPOT_STREAMS, *SHIPSTATION_STREAMS]
DELIVERIES = [*NETSUITE_DELIVERIES, *HUBSPOT_DELIVERIES, *SHIPSTATION_DELIVERIES]


def build_definitions(resources: dict[str, dg.ConfigurableResource] | None = None) -> dg.Definitions:
    """Build the code location. `resources` replaces the default clients, ledger or routing by key."""
    routing = load_routing()
    clients = {**source_clients(), **{key: value for key, value in (resources or {}).items() if key in LIVE_CLIENTS}}
    # ERP, CRM and fulfillment streams are read only from their APIs, so they exist when configured.
    streams = [*STREAMS, *[stream for stream in TARGET_STREAMS if stream.system in clients]]
    assets = [
        stream_asset(stream, client_key=stream.system, owners=[routing.system_owner(stream.system)])
        for stream in streams
    ]
    # Stock from the source of truth needs the NetSuite stream it follows.
    stock = SHOPIFY_DELIVERIES if "netsuite" in clients else []
    deliveries = [delivery_asset(delivery) for delivery in [*DELIVERIES, *stock]]
    main_job = dg.define_asset_job(
        MAIN_JOB,
        selection=dg.AssetSelection.assets(*assets, *deliveries),
        description="Imports every per-system stream for one daily partition, with its schema checks, then plans "
        "(or, in live mode, sends) the deliveries of that partition. `meshline run` launches it for each "
        "partition that has data.",
    )

    # A live stream gets a polling sensor when its system is in API mode.
    live_streams = [stream for stream in streams
                    if isinstance(clients[stream.system], LiveClient) and stream.name in clients[stream.system].streams]
    sensors = [
        import_folder_sensor(STREAMS, MAIN_JOB),
        inbox_sensor(),
        *[poll_sensor(stream) for stream in live_streams],
        connector_failure_sensor(STREAMS),
        trigger_success_sensor(),
    ]
    reconciliation = [payout_reconciliation_asset(), inventory_reconciliation, customer_reconciliation]
    reconciliation_job = dg.define_asset_job(
        RECONCILIATION_JOB, selection=dg.AssetSelection.assets(*reconciliation),
        description="Reconciles payouts with their lines, stock with the source of truth, and CRM contacts with "
                    "the storefront.")
    reconciliation_schedule = dg.ScheduleDefinition(
        name="reconciliation_daily", job=reconciliation_job, cron_schedule="0 4 * * *", execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING, description="Runs the reconciliations every night.")
    return dg.Definitions(
        assets=[*assets, *deliveries, exception_queue, *reconciliation, weekly_review_asset()],
        jobs=[main_job, build_extract_job(streams), build_inbox_job(STREAMS), queue_job, reconciliation_job,
              weekly_review_job],
        sensors=[*sensors, queue_after_main_job(MAIN_JOB)],
        schedules=[queue_schedule, reconciliation_schedule, weekly_review_schedule,
                   *([catch_up_schedule(live_streams, MAIN_JOB)] if live_streams else [])],
        resources={**clients, "ledger": LedgerResource(), "routing": RoutingResource(),
                   "delivery_targets": DeliveryTargetsResource(), **(resources or {})},
    )


defs = build_definitions()
