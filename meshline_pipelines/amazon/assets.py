"""Amazon streams, declared once; each becomes a daily-partitioned asset in the `amazon` group."""

from meshline_pipelines.amazon import finances, normalize
from meshline_pipelines.streams import Stream, id_at

SYSTEM = "amazon"

STREAMS = [
    Stream(
        system=SYSTEM,
        name="orders",
        description="Amazon orders from SP-API getOrders and getOrder responses.",
        tables=("orders",),
        record_id=id_at("AmazonOrderId"),
        normalize=normalize.normalize_orders,
        source_fields={"orders.source_id": "AmazonOrderId", "orders.total_amount": "OrderTotal.Amount",
                       "orders.total_currency": "OrderTotal.CurrencyCode", "orders.created_at": "PurchaseDate",
                       "orders.updated_at": "LastUpdateDate"},
    ),
    Stream(
        system=SYSTEM,
        name="order_items",
        description="Amazon order lines from SP-API getOrderItems responses.",
        tables=("order_lines",),
        record_id=id_at("AmazonOrderId"),
        normalize=normalize.normalize_order_items,
        source_fields={"order_lines.source_id": "OrderItems[].OrderItemId",
                       "order_lines.quantity": "OrderItems[].QuantityOrdered",
                       "order_lines.currency": "OrderItems[].ItemPrice.CurrencyCode",
                       "order_lines.order_source_id": "AmazonOrderId"},
    ),
    Stream(
        system=SYSTEM,
        name="settlements",
        description="Amazon settlements (V2 flat-file report): one payout per settlement and its transaction lines.",
        tables=("payouts", "payout_lines"),
        record_id=normalize.settlement_row_ids,
        normalize=normalize.normalize_settlements,
        source_fields={"payouts.amount": "total-amount", "payouts.currency": "currency",
                       "payout_lines.currency": "currency (of the settlement's summary row)",
                       "payout_lines.amount": "price-amount, promotion-amount, direct-payment-amount, other-amount",
                       "payout_lines.fee_amount": "the *-fee-amount columns, negated",
                       "payout_lines.type": "transaction-type"},
    ),
    Stream(
        system=SYSTEM,
        name="financial_events",
        description="Amazon shipment and refund events (Finances API listFinancialEvents): item charges and fees "
                    "not yet in a settlement, and refunds.",
        tables=("payout_lines", "refunds"),
        record_id=finances.financial_event_ids,
        normalize=finances.normalize_financial_events,
        source_fields={"payout_lines.amount": "ItemChargeList[] and PromotionList[] (adjustments for refunds)",
                       "payout_lines.fee_amount": "ItemFeeList[], negated",
                       "payout_lines.order_source_id": "AmazonOrderId", "payout_lines.processed_at": "PostedDate",
                       "refunds.amount": "ItemChargeAdjustmentList[] and PromotionAdjustmentList[], negated"},
    ),
    Stream(
        system=SYSTEM,
        name="inventory",
        description="Amazon FBA inventory (GET_AFN_INVENTORY_DATA) per SKU and warehouse condition.",
        tables=("inventory_levels",),
        record_id=normalize.inventory_ids,
        normalize=normalize.normalize_inventory,
        source_fields={"inventory_levels.available": "Quantity Available", "inventory_levels.sku": "seller-sku"},
    ),
]
