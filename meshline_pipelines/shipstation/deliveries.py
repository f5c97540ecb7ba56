"""Deliveries to ShipStation: the channels' orders to fulfill, created or updated by order key."""

import pandas as pd

from meshline_pipelines.delivery.assets import Delivery
from meshline_pipelines.delivery.base import record_key
from meshline_pipelines.netsuite.deliveries import CHANNEL_ORDERS
from meshline_pipelines.shipstation.outbound import order_payload


def _order(ledger, order: dict, related: dict[str, pd.DataFrame]) -> tuple[str, dict] | None:
    lines = related["order_lines"]
    order_lines = lines[(lines["system"] == order["system"]) & (lines["account"] == order["account"])
                        & (lines["order_source_id"] == order["source_id"])]
    if order_lines.empty or order.get("fulfillment_status") == "fulfilled":
        # Nothing to pick yet, or already shipped by the channel itself.
        return None
    key = record_key(order["system"], order["account"], order["source_id"])
    return key, order_payload(order, order_lines.to_dict(orient="records"), key)


DELIVERIES = [
    Delivery(target="shipstation", entity="order", name="order_upserts",
             description="ShipStation orders created or updated by order key from the Shopify and Amazon orders of "
                         "the partition (a cancelled order is sent as cancelled), through the outbox; dry run unless "
                         "MESHLINE_DELIVERY_MODE=live.",
             source_table="orders", source_systems=("shopify", "amazon"), upstream=CHANNEL_ORDERS,
             build=_order, needs=("order_lines",)),
]
