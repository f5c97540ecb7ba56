"""Deliveries to NetSuite: sales orders from the selling channels, and the storefront's customers."""

import dagster as dg
import pandas as pd

from meshline_pipelines.delivery.assets import Delivery
from meshline_pipelines.netsuite.outbound import customer_payload, external_id, sales_order_payload

CHANNEL_ORDERS = (dg.AssetKey(["shopify", "orders"]), dg.AssetKey(["amazon", "orders"]),
                  dg.AssetKey(["amazon", "order_items"]))


def _sales_order(ledger, order: dict, related: dict[str, pd.DataFrame]) -> tuple[str, dict] | None:
    lines = related["order_lines"]
    order_lines = lines[(lines["system"] == order["system"]) & (lines["account"] == order["account"])
                        & (lines["order_source_id"] == order["source_id"])]
    if order_lines.empty or pd.notna(order.get("cancelled_at")):
        # An order without lines has nothing to invoice yet; a cancelled one is not booked.
        return None
    customer = (external_id(order["system"], order["account"], order["customer_source_id"])
                if pd.notna(order.get("customer_source_id")) else None)
    payload = sales_order_payload(order, order_lines.to_dict(orient="records"), customer)
    return payload["externalId"], payload


def _customer(ledger, customer: dict, related: dict[str, pd.DataFrame]) -> tuple[str, dict] | None:
    payload = customer_payload(customer)
    return payload["externalId"], payload


DELIVERIES = [
    Delivery(target="netsuite", entity="sales_order", name="sales_orders",
             description="NetSuite sales orders upserted by external ID from the Shopify and Amazon orders of the "
                         "partition, through the outbox; dry run unless MESHLINE_DELIVERY_MODE=live.",
             source_table="orders", source_systems=("shopify", "amazon"), upstream=CHANNEL_ORDERS,
             build=_sales_order, needs=("order_lines",)),
    Delivery(target="netsuite", entity="customer", name="customers",
             description="NetSuite customers upserted by external ID from the storefront's customers of the "
                         "partition, through the outbox; dry run unless MESHLINE_DELIVERY_MODE=live.",
             source_table="customers", source_systems=("shopify",), upstream=(dg.AssetKey(["shopify", "customers"]),),
             build=_customer),
]
