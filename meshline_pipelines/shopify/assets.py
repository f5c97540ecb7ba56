"""Shopify streams, declared once; each becomes a daily-partitioned asset in the `shopify` group."""

from meshline_pipelines.streams import Stream, id_at
from meshline_pipelines.shopify import normalize

SYSTEM = "shopify"

STREAMS = [
    Stream(
        system=SYSTEM,
        name="orders",
        description="Shopify orders with their line items, shop and presentment money side by side.",
        tables=("orders", "order_lines"),
        record_id=id_at("id"),
        normalize=normalize.normalize_orders,
        source_fields={
            "orders.source_id": "id",
            "orders.created_at": "created_at",
            "orders.updated_at": "updated_at",
            "orders.total_amount": "total_price_set.shop_money.amount",
            "orders.total_currency": "total_price_set.shop_money.currency_code",
            "orders.email": "email",
            "order_lines.source_id": "line_items[].id",
            "order_lines.quantity": "line_items[].quantity",
            "order_lines.currency": "line_items[].price_set.shop_money.currency_code",
        },
    ),
    Stream(
        system=SYSTEM,
        name="refunds",
        description="Shopify refunds, from refund responses and from the refunds embedded in orders.",
        tables=("refunds",),
        record_id=id_at("id"),
        normalize=normalize.normalize_refunds,
        source_fields={"refunds.source_id": "id", "refunds.created_at": "created_at",
                       "refunds.currency": "transactions[].currency"},
    ),
    Stream(
        system=SYSTEM,
        name="transactions",
        description="Shopify order transactions (authorizations, captures, sales, refunds) as payments.",
        tables=("payments",),
        record_id=id_at("id"),
        normalize=normalize.normalize_transactions,
        source_fields={"payments.source_id": "id", "payments.amount": "amount", "payments.currency": "currency",
                       "payments.kind": "kind", "payments.created_at": "created_at"},
    ),
    Stream(
        system=SYSTEM,
        name="customers",
        description="Shopify customers with marketing consent and lifetime spend.",
        tables=("customers",),
        record_id=id_at("id"),
        normalize=normalize.normalize_customers,
        source_fields={"customers.source_id": "id", "customers.created_at": "created_at",
                       "customers.updated_at": "updated_at", "customers.email": "email"},
    ),
    Stream(
        system=SYSTEM,
        name="inventory_levels",
        description="Shopify inventory levels per inventory item and location; the partition is the snapshot's day.",
        tables=("inventory_levels",),
        record_id=normalize.inventory_level_ids,
        normalize=normalize.normalize_inventory_levels,
        source_fields={"inventory_levels.source_id": "inventory_item_id, location_id",
                       "inventory_levels.available": "available"},
    ),
    Stream(
        system=SYSTEM,
        name="payouts",
        description="Shopify Payments payouts.",
        tables=("payouts",),
        record_id=id_at("id"),
        normalize=normalize.normalize_payouts,
        source_fields={"payouts.source_id": "id", "payouts.amount": "amount", "payouts.currency": "currency"},
    ),
    Stream(
        system=SYSTEM,
        name="balance_transactions",
        description="Shopify Payments balance transactions: the lines that make up each payout.",
        tables=("payout_lines",),
        record_id=id_at("id"),
        normalize=normalize.normalize_balance_transactions,
        source_fields={"payout_lines.source_id": "id", "payout_lines.amount": "amount",
                       "payout_lines.currency": "currency", "payout_lines.type": "type"},
    ),
]
