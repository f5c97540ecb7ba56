"""Amazon SP-API payloads and flat-file report rows to canonical frames."""

import pandas as pd

from meshline_pipelines.ledger.store import row_hashes
from meshline_pipelines.normalize import (
    RECORD, FieldReader, MapContext, Normalized, explode, extra_fields, flatten, in_model_order, record_hashes,
    timestamp_versions, with_identity,
)

# Settlement report columns that carry an amount; a row fills one or a few of them. Charges to
# the buyer (price, promotions, direct payments) make a line's gross amount; Amazon's fees make its
# fee, which the report lists as negative and the canonical line keeps as a positive cost.
SETTLEMENT_GROSS_COLUMNS = ["price-amount", "promotion-amount", "direct-payment-amount", "other-amount"]
SETTLEMENT_FEE_COLUMNS = [
    "item-related-fee-amount", "shipment-fee-amount", "order-fee-amount", "misc-fee-amount", "other-fee-amount",
]
SETTLEMENT_AMOUNT_COLUMNS = SETTLEMENT_GROSS_COLUMNS + SETTLEMENT_FEE_COLUMNS
SETTLEMENT_TYPE_COLUMNS = [
    "price-type", "item-related-fee-type", "shipment-fee-type", "order-fee-type", "promotion-type",
    "direct-payment-type", "other-fee-reason-description",
]
REPORT_TIME_SUFFIX = " UTC"


def _empty_text(index) -> pd.Series:
    return pd.Series(pd.NA, index=index, dtype="string")


def _empty_time(index) -> pd.Series:
    return pd.Series(pd.NaT, index=index, dtype="datetime64[ns, UTC]")


def _blank_to_na(values: pd.Series) -> pd.Series:
    return values.where(values.str.strip() != "")


def normalize_orders(records: pd.DataFrame, context: MapContext) -> Normalized:
    issues: list[dict] = []
    payloads = records["payload"]
    flat = flatten(payloads)
    positions = pd.Series(records.index, index=records.index)
    read = FieldReader(flat, positions, "orders", issues)

    orders = pd.DataFrame(index=flat.index)
    currency = read.currency("OrderTotal.CurrencyCode")
    total = read.money("OrderTotal.Amount", currency, "total_amount")
    orders["version"] = _empty_text(flat.index)
    orders["extra"] = extra_fields(payloads, {"AmazonOrderId", "SellerOrderId", "OrderStatus", "BuyerInfo",
                                              "PurchaseDate", "LastUpdateDate", "MarketplaceId", "OrderTotal"})
    orders["order_number"] = read.text("SellerOrderId")
    orders["status"] = read.text("OrderStatus")
    orders["fulfillment_status"] = _empty_text(flat.index)
    orders["email"] = read.text("BuyerInfo.BuyerEmail")
    orders["customer_source_id"] = _empty_text(flat.index)
    orders["marketplace_id"] = read.text("MarketplaceId")
    orders["created_at"] = read.timestamp("PurchaseDate", "created_at")
    orders["updated_at"] = read.timestamp("LastUpdateDate", "updated_at")
    orders["cancelled_at"] = _empty_time(flat.index)
    # SP-API reports one order total in the marketplace currency: shop and presentment money agree.
    # NOTE: Amazon leaves OrderTotal out of Pending orders, so those fail as missing total_amount.
    orders["total_amount"] = total
    orders["total_currency"] = currency
    orders["total_presentment_amount"] = total
    orders["total_presentment_currency"] = currency
    for name in ("subtotal", "tax", "discounts", "shipping"):
        for suffix in ("", "_presentment"):
            orders[f"{name}{suffix}_amount"] = pd.Series(pd.NA, index=flat.index, dtype="Int64")
            orders[f"{name}{suffix}_currency"] = _empty_text(flat.index)
    orders["version"] = timestamp_versions(orders["updated_at"])
    orders = with_identity(orders, context, read.text("AmazonOrderId"), positions)
    return Normalized(tables={"orders": in_model_order("orders", orders)}, issues=issues)


def normalize_order_items(records: pd.DataFrame, context: MapContext) -> Normalized:
    """Map getOrderItems responses (one per record, the items of one Amazon order) to order lines."""
    issues: list[dict] = []
    payloads = records["payload"]
    order_items = explode(payloads, "OrderItems")
    parents, flat = order_items.records, order_items.flat
    read = FieldReader(flat, parents, "order_lines", issues)

    lines = pd.DataFrame(index=flat.index)
    currency = read.currency("ItemPrice.CurrencyCode")
    quantity = read.integer("QuantityOrdered", "quantity")
    # ItemPrice is the price of the whole line (unit price times quantity), per the SP-API model.
    line_total = read.money("ItemPrice.Amount", currency, "line_total_amount")
    exact_unit = quantity.gt(0).fillna(False) & (line_total % quantity.where(quantity > 0) == 0).fillna(False)
    lines["version"] = _empty_text(flat.index)
    lines["extra"] = _empty_text(flat.index)
    lines["order_source_id"] = order_items.parent_field(payloads, "AmazonOrderId")
    lines["sku"] = read.text("SellerSKU")
    lines["product_id"] = read.text("ASIN")
    lines["variant_id"] = _empty_text(flat.index)
    lines["title"] = read.text("Title")
    lines["quantity"] = quantity
    lines["currency"] = currency
    lines["unit_price_amount"] = (line_total // quantity.where(quantity > 0)).where(exact_unit).astype("Int64")
    lines["line_total_amount"] = line_total
    lines["discount_amount"] = read.money("PromotionDiscount.Amount", read.currency("PromotionDiscount.CurrencyCode"),
                                          "discount_amount")
    lines["tax_amount"] = read.money("ItemTax.Amount", read.currency("ItemTax.CurrencyCode"), "tax_amount")
    lines = with_identity(lines, context, read.text("OrderItemId"), parents)
    lines["version"] = row_hashes(lines, [c for c in lines.columns if c not in (RECORD, "version")])
    return Normalized(tables={"order_lines": in_model_order("order_lines", lines)}, issues=issues)


def settlement_row_ids(payloads: pd.Series) -> pd.Series:
    """Identify a settlement report row by its settlement and its row number in the report."""
    flat = flatten(payloads)
    settlement = flat.get("settlement-id").astype("string")
    row = flat.get("_row_number").astype("string")
    return (settlement + ":" + row).astype("string")


def normalize_settlements(records: pd.DataFrame, context: MapContext) -> Normalized:
    """Map a settlement's summary row to a payout and every transaction row to a payout line."""
    issues: list[dict] = []
    payloads = records["payload"]
    flat = flatten(payloads)
    positions = pd.Series(records.index, index=records.index)

    field_count_errors = flat.get("_field_count_error")
    for position in flat.index[field_count_errors.notna()]:
        issues.append({"record": int(position), "table": "payout_lines", "column": None, "source_field": None,
                       "kind": "failed_validation", "rule": "payout_lines.record:field_count", "value": None,
                       "message": str(field_count_errors[position])})

    settlement_ids = flat.get("settlement-id").astype("string")
    transaction_type = _blank_to_na(flat.get("transaction-type").astype("string"))
    is_summary = transaction_type.isna()
    # Only the summary row names the currency; every row of a settlement is in it.
    currencies = _blank_to_na(flat.get("currency").astype("string")).str.upper()
    settlement_currency = currencies.groupby(settlement_ids).transform("first")

    summary = flat[is_summary]
    read = FieldReader(summary, positions[is_summary], "payouts", issues)
    payouts = pd.DataFrame(index=summary.index)
    payouts["version"] = record_hashes(payloads[is_summary])
    payouts["extra"] = extra_fields(payloads[is_summary], {"settlement-id", "total-amount", "currency",
                                                           "deposit-date", "settlement-start-date",
                                                           "settlement-end-date"})
    payouts["status"] = _empty_text(summary.index)
    payouts["amount"] = read.money("total-amount", settlement_currency[is_summary], "amount")
    payouts["currency"] = settlement_currency[is_summary]
    payouts["payout_date"] = read.timestamp("deposit-date", "payout_date", suffix=REPORT_TIME_SUFFIX)
    payouts["period_start"] = read.timestamp("settlement-start-date", "period_start", suffix=REPORT_TIME_SUFFIX)
    payouts["period_end"] = read.timestamp("settlement-end-date", "period_end", suffix=REPORT_TIME_SUFFIX)
    payouts["created_at"] = _empty_time(summary.index)
    payouts = with_identity(payouts, context, settlement_ids[is_summary], positions[is_summary])

    detail = flat[~is_summary]
    read = FieldReader(detail, positions[~is_summary], "payout_lines", issues)
    currency = settlement_currency[~is_summary]
    amounts = pd.DataFrame({
        column: read.money(column, currency, "amount") for column in SETTLEMENT_AMOUNT_COLUMNS
    }, index=detail.index)
    type_parts = pd.DataFrame({
        column: _blank_to_na(detail.get(column).astype("string")) for column in SETTLEMENT_TYPE_COLUMNS
    }, index=detail.index)
    lines = pd.DataFrame(index=detail.index)
    lines["version"] = record_hashes(payloads[~is_summary])
    lines["extra"] = extra_fields(payloads[~is_summary], {"settlement-id", "transaction-type", "order-id", "sku",
                                                          "posted-date", *SETTLEMENT_AMOUNT_COLUMNS,
                                                          *SETTLEMENT_TYPE_COLUMNS})
    lines["payout_source_id"] = settlement_ids[~is_summary]
    lines["type"] = (transaction_type[~is_summary] + "/" + type_parts.bfill(axis=1).iloc[:, 0].fillna("other")) \
        if not detail.empty else _empty_text(detail.index)
    gross = amounts[SETTLEMENT_GROSS_COLUMNS].sum(axis=1, min_count=1).astype("Int64")
    fee = -amounts[SETTLEMENT_FEE_COLUMNS].sum(axis=1, min_count=1).astype("Int64")
    # A row with fees only has a gross of zero; a row with no amount at all fails as a missing amount.
    has_amount = amounts.notna().any(axis=1)
    lines["amount"] = gross.mask(gross.isna() & has_amount, 0)
    lines["fee_amount"] = fee
    lines["net_amount"] = (lines["amount"] - fee.fillna(0)).astype("Int64")
    lines["currency"] = currency
    lines["source_object_id"] = _blank_to_na(read.text("adjustment-id"))
    lines["order_source_id"] = _blank_to_na(read.text("order-id"))
    lines["sku"] = _blank_to_na(read.text("sku"))
    lines["description"] = _blank_to_na(read.text("marketplace-name"))
    lines["processed_at"] = read.timestamp("posted-date", "processed_at", suffix=REPORT_TIME_SUFFIX)
    lines = with_identity(lines, context, settlement_row_ids(payloads[~is_summary]), positions[~is_summary])

    return Normalized(
        tables={"payouts": in_model_order("payouts", payouts), "payout_lines": in_model_order("payout_lines", lines)},
        issues=issues,
    )


def inventory_ids(payloads: pd.Series) -> pd.Series:
    """Identify an FBA inventory row by seller SKU, fulfillment-network SKU and warehouse condition."""
    flat = flatten(payloads)
    parts = [flat.get(column).astype("string")
             for column in ("seller-sku", "fulfillment-channel-sku", "Warehouse-Condition-code")]
    return (parts[0] + ":" + parts[1] + ":" + parts[2]).astype("string")


def normalize_inventory(records: pd.DataFrame, context: MapContext) -> Normalized:
    issues: list[dict] = []
    payloads = records["payload"]
    flat = flatten(payloads)
    positions = pd.Series(records.index, index=records.index)
    read = FieldReader(flat, positions, "inventory_levels", issues)

    levels = pd.DataFrame(index=flat.index)
    levels["version"] = record_hashes(payloads)
    levels["extra"] = extra_fields(payloads, {"seller-sku", "fulfillment-channel-sku", "Warehouse-Condition-code",
                                              "Quantity Available", "_row_number"})
    levels["sku"] = _blank_to_na(read.text("seller-sku"))
    levels["inventory_item_id"] = _blank_to_na(read.text("fulfillment-channel-sku"))
    # The FBA report covers Amazon's fulfillment network as one location.
    levels["location_id"] = pd.Series("AFN", index=flat.index, dtype="string")
    levels["condition"] = _blank_to_na(read.text("Warehouse-Condition-code"))
    levels["available"] = read.integer("Quantity Available", "available")
    levels["updated_at"] = _empty_time(flat.index)
    levels = with_identity(levels, context, inventory_ids(payloads), positions)
    return Normalized(tables={"inventory_levels": in_model_order("inventory_levels", levels)}, issues=issues)
