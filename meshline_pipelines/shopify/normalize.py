"""Shopify Admin REST payloads to canonical frames.

Money comes from the `*_set` objects, which give the shop currency and the buyer's presentment
currency side by side. Each amount is paired with the currency code of its own money set.
"""

import pandas as pd

from meshline_pipelines.ledger.store import row_hashes
from meshline_pipelines.normalize import (
    RECORD, FieldReader, MapContext, Normalized, children, explode, extra_fields, flatten, in_model_order, record_hashes,
    sum_child_money, timestamp_versions, with_identity,
)

ORDER_MONEY_SETS = {
    "total": "total_price_set",
    "subtotal": "subtotal_price_set",
    "tax": "total_tax_set",
    "discounts": "total_discounts_set",
    "shipping": "total_shipping_price_set",
}
ORDER_FIELDS = {
    "id", "name", "financial_status", "fulfillment_status", "email", "customer", "created_at", "updated_at",
    "cancelled_at", "line_items", "refunds", *ORDER_MONEY_SETS.values(),
}


def normalize_orders(records: pd.DataFrame, context: MapContext) -> Normalized:
    issues: list[dict] = []
    payloads = records["payload"]
    flat = flatten(payloads)
    read = FieldReader(flat, pd.Series(records.index, index=records.index), "orders", issues)

    orders = pd.DataFrame(index=flat.index)
    orders["version"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    orders["extra"] = extra_fields(payloads, ORDER_FIELDS)
    orders["order_number"] = read.text("name")
    orders["status"] = read.text("financial_status")
    orders["fulfillment_status"] = read.text("fulfillment_status")
    orders["email"] = read.text("email")
    orders["customer_source_id"] = read.text("customer.id")
    orders["marketplace_id"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    orders["created_at"] = read.timestamp("created_at", "created_at")
    orders["updated_at"] = read.timestamp("updated_at", "updated_at")
    orders["cancelled_at"] = read.timestamp("cancelled_at", "cancelled_at")
    for name, money_set in ORDER_MONEY_SETS.items():
        for side, suffix in (("shop_money", ""), ("presentment_money", "_presentment")):
            currency = read.currency(f"{money_set}.{side}.currency_code")
            orders[f"{name}{suffix}_amount"] = read.money(f"{money_set}.{side}.amount", currency, f"{name}{suffix}_amount")
            orders[f"{name}{suffix}_currency"] = currency
    orders["version"] = timestamp_versions(orders["updated_at"])
    orders = with_identity(orders, context, read.text("id"), pd.Series(records.index, index=flat.index))

    lines = _order_lines(payloads, context, issues)
    return Normalized(tables={"orders": in_model_order("orders", orders), "order_lines": lines}, issues=issues)


def _order_lines(payloads: pd.Series, context: MapContext, issues: list) -> pd.DataFrame:
    line_items = explode(payloads, "line_items")
    items, parents, flat = line_items.items, line_items.records, line_items.flat
    read = FieldReader(flat, parents, "order_lines", issues)

    lines = pd.DataFrame(index=flat.index)
    currency = read.currency("price_set.shop_money.currency_code")
    unit_price = read.money("price_set.shop_money.amount", currency, "unit_price_amount")
    quantity = read.integer("quantity", "quantity")
    lines["version"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    lines["extra"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    lines["order_source_id"] = line_items.parent_field(payloads, "id")
    lines["sku"] = read.text("sku")
    lines["product_id"] = read.text("product_id")
    lines["variant_id"] = read.text("variant_id")
    lines["title"] = read.text("name")
    lines["quantity"] = quantity
    lines["currency"] = currency
    lines["unit_price_amount"] = unit_price
    lines["line_total_amount"] = unit_price * quantity
    lines["discount_amount"] = sum_child_money(
        items, "discount_allocations", "amount_set.shop_money.amount", "amount_set.shop_money.currency_code",
        "discount_amount", parents, issues)
    lines["tax_amount"] = sum_child_money(
        items, "tax_lines", "price_set.shop_money.amount", "price_set.shop_money.currency_code", "tax_amount",
        parents, issues)
    lines = with_identity(lines, context, read.text("id"), parents)

    # Line items have no update time of their own, so a line's version is its content hash.
    lines["version"] = row_hashes(lines, [c for c in lines.columns if c not in (RECORD, "version")])
    return in_model_order("order_lines", lines)


def normalize_refunds(records: pd.DataFrame, context: MapContext) -> Normalized:
    issues: list[dict] = []
    payloads = records["payload"]
    flat = flatten(payloads)
    positions = pd.Series(records.index, index=records.index)
    read = FieldReader(flat, positions, "refunds", issues)

    # The refunded money is the sum of the refund's successful `refund` transactions.
    transactions = children(payloads, "transactions")
    owners = pd.Series(transactions.index, dtype="int64")
    transactions_flat = flatten(transactions.reset_index(drop=True))
    transaction_read = FieldReader(transactions_flat, owners, "refunds", issues)
    succeeded = (transaction_read.text("kind") == "refund") & (transaction_read.text("status") == "success")
    currency = transaction_read.currency("currency")
    amounts = transaction_read.money("amount", currency, "amount")
    refunded = amounts[succeeded.fillna(False)].groupby(owners[succeeded.fillna(False)].to_numpy()).sum()
    refund_currency = currency[succeeded.fillna(False)].groupby(owners[succeeded.fillna(False)].to_numpy()).first()
    any_currency = currency.groupby(owners.to_numpy()).first() if not currency.empty else pd.Series(dtype="string")

    refunds = pd.DataFrame(index=flat.index)
    refunds["version"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    refunds["extra"] = extra_fields(payloads, {"id", "order_id", "transactions", "note", "created_at", "processed_at"})
    refunds["order_source_id"] = read.text("order_id")
    refunds["payment_source_id"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    # NOTE: a refund with no successful refund transaction (a restock-only refund) is stored as 0 in
    # the currency of its other transactions. With no transaction at all, its currency is missing.
    refunds["amount"] = refunded.reindex(flat.index).fillna(0).astype("Int64")
    refunds["currency"] = refund_currency.reindex(flat.index).fillna(any_currency.reindex(flat.index)).astype("string")
    refunds["status"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    refunds["reason"] = read.text("note")
    refunds["created_at"] = read.timestamp("created_at", "created_at")
    refunds["processed_at"] = read.timestamp("processed_at", "processed_at")
    # Shopify never edits a refund, so its creation time is its version.
    refunds["version"] = timestamp_versions(refunds["created_at"])
    refunds = with_identity(refunds, context, read.text("id"), positions)
    return Normalized(tables={"refunds": in_model_order("refunds", refunds)}, issues=issues)


def normalize_transactions(records: pd.DataFrame, context: MapContext) -> Normalized:
    issues: list[dict] = []
    payloads = records["payload"]
    flat = flatten(payloads)
    positions = pd.Series(records.index, index=records.index)
    read = FieldReader(flat, positions, "payments", issues)

    payments = pd.DataFrame(index=flat.index)
    currency = read.currency("currency")
    payments["version"] = record_hashes(payloads)
    payments["extra"] = extra_fields(payloads, {"id", "order_id", "kind", "status", "gateway", "amount", "currency",
                                                "created_at", "processed_at"})
    payments["order_source_id"] = read.text("order_id")
    payments["kind"] = read.text("kind")
    payments["status"] = read.text("status")
    payments["gateway"] = read.text("gateway")
    payments["amount"] = read.money("amount", currency, "amount")
    payments["currency"] = currency
    payments["refunded_amount"] = pd.Series(pd.NA, index=flat.index, dtype="Int64")
    payments["captured"] = pd.Series(pd.NA, index=flat.index, dtype="boolean")
    payments["created_at"] = read.timestamp("created_at", "created_at")
    payments["processed_at"] = read.timestamp("processed_at", "processed_at")
    payments = with_identity(payments, context, read.text("id"), positions)
    return Normalized(tables={"payments": in_model_order("payments", payments)}, issues=issues)


def normalize_customers(records: pd.DataFrame, context: MapContext) -> Normalized:
    issues: list[dict] = []
    payloads = records["payload"]
    flat = flatten(payloads)
    positions = pd.Series(records.index, index=records.index)
    read = FieldReader(flat, positions, "customers", issues)

    customers = pd.DataFrame(index=flat.index)
    currency = read.currency("currency")
    customers["version"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    customers["extra"] = extra_fields(payloads, {"id", "email", "phone", "first_name", "last_name", "state",
                                                 "email_marketing_consent", "orders_count", "total_spent",
                                                 "currency", "created_at", "updated_at"})
    customers["email"] = read.text("email").str.strip()
    customers["phone"] = read.text("phone")
    customers["first_name"] = read.text("first_name")
    customers["last_name"] = read.text("last_name")
    customers["state"] = read.text("state")
    customers["email_marketing_state"] = read.text("email_marketing_consent.state")
    customers["orders_count"] = read.integer("orders_count", "orders_count")
    customers["total_spent_amount"] = read.money("total_spent", currency, "total_spent_amount")
    customers["total_spent_currency"] = currency.where(customers["total_spent_amount"].notna())
    customers["created_at"] = read.timestamp("created_at", "created_at")
    customers["updated_at"] = read.timestamp("updated_at", "updated_at")
    customers["version"] = timestamp_versions(customers["updated_at"])
    customers = with_identity(customers, context, read.text("id"), positions)
    return Normalized(tables={"customers": in_model_order("customers", customers)}, issues=issues)


def inventory_level_ids(payloads: pd.Series) -> pd.Series:
    """Identify an inventory level by its inventory item and location."""
    flat = flatten(payloads)
    item = flat.get("inventory_item_id").astype("string")
    location = flat.get("location_id").astype("string")
    return (item + "@" + location).astype("string")


def normalize_inventory_levels(records: pd.DataFrame, context: MapContext) -> Normalized:
    issues: list[dict] = []
    payloads = records["payload"]
    flat = flatten(payloads)
    positions = pd.Series(records.index, index=records.index)
    read = FieldReader(flat, positions, "inventory_levels", issues)

    levels = pd.DataFrame(index=flat.index)
    levels["version"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    levels["extra"] = extra_fields(payloads, {"inventory_item_id", "location_id", "available", "updated_at"})
    levels["sku"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    levels["inventory_item_id"] = read.text("inventory_item_id")
    levels["location_id"] = read.text("location_id")
    levels["condition"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    levels["available"] = read.integer("available", "available")
    levels["updated_at"] = read.timestamp("updated_at", "updated_at")
    levels["version"] = timestamp_versions(levels["updated_at"])
    levels = with_identity(levels, context, inventory_level_ids(payloads), positions)
    return Normalized(tables={"inventory_levels": in_model_order("inventory_levels", levels)}, issues=issues)


def normalize_payouts(records: pd.DataFrame, context: MapContext) -> Normalized:
    issues: list[dict] = []
    payloads = records["payload"]
    flat = flatten(payloads)
    positions = pd.Series(records.index, index=records.index)
    read = FieldReader(flat, positions, "payouts", issues)

    payouts = pd.DataFrame(index=flat.index)
    currency = read.currency("currency")
    payouts["version"] = record_hashes(payloads)
    payouts["extra"] = extra_fields(payloads, {"id", "status", "amount", "currency", "date"})
    payouts["status"] = read.text("status")
    payouts["amount"] = read.money("amount", currency, "amount")
    payouts["currency"] = currency
    payouts["payout_date"] = read.timestamp("date", "payout_date")
    payouts["period_start"] = pd.Series(pd.NaT, index=flat.index, dtype="datetime64[ns, UTC]")
    payouts["period_end"] = pd.Series(pd.NaT, index=flat.index, dtype="datetime64[ns, UTC]")
    payouts["created_at"] = pd.Series(pd.NaT, index=flat.index, dtype="datetime64[ns, UTC]")
    payouts = with_identity(payouts, context, read.text("id"), positions)
    return Normalized(tables={"payouts": in_model_order("payouts", payouts)}, issues=issues)


def normalize_balance_transactions(records: pd.DataFrame, context: MapContext) -> Normalized:
    issues: list[dict] = []
    payloads = records["payload"]
    flat = flatten(payloads)
    positions = pd.Series(records.index, index=records.index)
    read = FieldReader(flat, positions, "payout_lines", issues)

    lines = pd.DataFrame(index=flat.index)
    currency = read.currency("currency")
    lines["version"] = record_hashes(payloads)
    lines["extra"] = extra_fields(payloads, {"id", "payout_id", "type", "amount", "fee", "net", "currency",
                                             "source_id", "source_order_id", "processed_at", "adjustment_reason"})
    lines["payout_source_id"] = read.text("payout_id")
    lines["type"] = read.text("type")
    lines["amount"] = read.money("amount", currency, "amount")
    lines["fee_amount"] = read.money("fee", currency, "fee_amount")
    lines["net_amount"] = read.money("net", currency, "net_amount")
    lines["currency"] = currency
    lines["source_object_id"] = read.text("source_id")
    lines["order_source_id"] = read.text("source_order_id")
    lines["sku"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    lines["description"] = read.text("adjustment_reason")
    lines["processed_at"] = read.timestamp("processed_at", "processed_at")
    lines = with_identity(lines, context, read.text("id"), positions)
    return Normalized(tables={"payout_lines": in_model_order("payout_lines", lines)}, issues=issues)


def normalize_products(records: pd.DataFrame, context: MapContext) -> Normalized:
    """Map each product's variants, the catalog that order lines and inventory levels refer to."""
    issues: list[dict] = []
    payloads = records["payload"]
    nested = explode(payloads, "variants")
    variants, parents, flat = nested.items, nested.records, nested.flat
    read = FieldReader(flat, parents, "product_variants", issues)

    rows = pd.DataFrame(index=flat.index)
    rows["version"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    rows["extra"] = extra_fields(variants, {"id", "product_id", "sku", "title", "inventory_item_id", "created_at",
                                            "updated_at"})
    rows["product_id"] = read.text("product_id").fillna(nested.parent_field(payloads, "id"))
    rows["sku"] = read.text("sku")
    rows["product_title"] = nested.parent_field(payloads, "title")
    rows["variant_title"] = read.text("title")
    rows["inventory_item_id"] = read.text("inventory_item_id")
    rows["created_at"] = read.timestamp("created_at", "created_at")
    rows["updated_at"] = read.timestamp("updated_at", "updated_at")
    rows["version"] = timestamp_versions(rows["updated_at"])
    rows = with_identity(rows, context, read.text("id"), parents)
    return Normalized(tables={"product_variants": in_model_order("product_variants", rows)}, issues=issues)


def unknown_variants(order_lines: pd.DataFrame, known_variant_ids: set[str]) -> pd.DataFrame:
    """Order lines whose variant is in no stored product; custom lines without a variant are skipped."""
    with_variant = order_lines[order_lines["variant_id"].notna()]
    return with_variant[~with_variant["variant_id"].isin(known_variant_ids)]
