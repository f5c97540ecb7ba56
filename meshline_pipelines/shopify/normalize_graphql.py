"""Shopify GraphQL Admin API payloads to the same canonical rows as the REST payloads of the same records.

A GraphQL payload is one node as `ShopifyGraphqlClient` lands it: camelCase fields, global IDs
such as `gid://shopify/Order/450789469`, enums in capitals, money in `MoneyBag` objects with
`shopMoney` and `presentmentMoney`, and each nested connection as `{"nodes": [...]}` with all
of its nodes. Source IDs are the numeric REST IDs, from `legacyResourceId` or from the number in
the global ID, so a record keeps its identity whichever API read it. Enums are lowercased to the
REST spelling (`PARTIALLY_REFUNDED` to `partially_refunded`).

`by_payload_shape` lets one stream mapper serve both APIs: it sends each payload to the REST or
the GraphQL mapper by its shape, so a partition read by either client, or by both, maps the same.
"""

import re
from collections.abc import Callable
from functools import wraps
from typing import Any

import pandas as pd

from meshline_pipelines.ledger.store import row_hashes
from meshline_pipelines.normalize import (
    RECORD, FieldReader, MapContext, Normalized, explode, extra_fields, flatten, in_model_order, record_hashes,
    sum_child_money, timestamp_versions, with_identity,
)
from meshline_pipelines.streams import id_at

Mapper = Callable[[pd.DataFrame, MapContext], Normalized]
RecordIds = Callable[[pd.Series], pd.Series]

# A Shopify global ID: type, numeric ID, and for some types a query string, as in
# gid://shopify/InventoryLevel/655441491?inventory_item_id=49148385.
GLOBAL_ID = re.compile(r"gid://shopify/(?P<type>[A-Za-z0-9]+)/(?P<id>\d+)(?:\?.*)?")
GLOBAL_ID_PREFIX = "gid://shopify/"

ORDER_MONEY_SETS = {
    "total": "totalPriceSet",
    "subtotal": "subtotalPriceSet",
    "tax": "totalTaxSet",
    "discounts": "totalDiscountsSet",
    "shipping": "totalShippingPriceSet",
}
ORDER_FIELDS = {
    "id", "legacyResourceId", "name", "displayFinancialStatus", "displayFulfillmentStatus", "email", "customer",
    "createdAt", "updatedAt", "cancelledAt", "lineItems", *ORDER_MONEY_SETS.values(),
}
# REST gives `fulfillment_status` null for an unfulfilled order, and `partial` for GraphQL's
# PARTIALLY_FULFILLED. Other values are lowercased.
# NOTE: REST's fulfillment_status is taken to have only the values fulfilled, partial, restocked and
# null. IN_PROGRESS, ON_HOLD, OPEN, PENDING_FULFILLMENT, SCHEDULED and REQUEST_DECLINED keep their
# lowercased GraphQL value, where REST would give null or partial.
FULFILLMENT_STATUSES = {"UNFULFILLED": None, "PARTIALLY_FULFILLED": "partial"}
# The source field that issues name for an inventory level's available quantity.
AVAILABLE = "quantities[name=available]"


def is_graphql_payload(payload: Any) -> bool:
    """Return whether the payload is a GraphQL node, recognized by the global ID in its `id`."""
    if not isinstance(payload, dict):
        return False
    value = payload.get("id")
    return isinstance(value, str) and value.startswith(GLOBAL_ID_PREFIX)


def global_id_type(value: Any) -> str | None:
    """Return the type in a global ID, such as `Order` in gid://shopify/Order/1; None for anything else."""
    match = GLOBAL_ID.fullmatch(value) if isinstance(value, str) else None
    return match["type"] if match else None


def numeric_id(value: Any) -> str | None:
    """Return the numeric REST ID of a global ID, a whole number or a string of digits; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        return None
    if value.isdigit():
        return value
    match = GLOBAL_ID.fullmatch(value)
    return match["id"] if match else None


def _graphql_record_ids(payloads: pd.Series) -> pd.Series:
    def read(payload: Any) -> str | None:
        if not isinstance(payload, dict):
            return None
        return numeric_id(payload.get("legacyResourceId")) or numeric_id(payload.get("id"))

    return payloads.map(read).astype("string")


def by_payload_shape_ids(rest: RecordIds, graphql: RecordIds) -> RecordIds:
    """Return a record-ID reader that reads GraphQL-shaped payloads with `graphql` and the other objects with `rest`.

    A payload that is not an object has no ID and reaches neither reader.
    """

    def read(payloads: pd.Series) -> pd.Series:
        objects = payloads.map(lambda payload: isinstance(payload, dict)).astype(bool)
        shapes = payloads.map(is_graphql_payload).astype(bool)
        ids = pd.Series(pd.NA, index=payloads.index, dtype="string")
        if (objects & ~shapes).any():
            ids[objects & ~shapes] = rest(payloads[objects & ~shapes]).astype("string")
        if shapes.any():
            ids[shapes] = graphql(payloads[shapes]).astype("string")
        return ids

    return read


# The numeric REST ID of each record, for either shape.
record_ids = by_payload_shape_ids(id_at("id"), _graphql_record_ids)


def by_payload_shape(rest: Mapper, graphql: Mapper) -> Mapper:
    """Return a stream mapper that maps GraphQL-shaped payloads with `graphql` and the others with `rest`.

    Records of both shapes in one frame are mapped apart and their rows put back in raw-record
    order, so a partition holding both still maps every record.
    """

    @wraps(rest)
    def normalize(records: pd.DataFrame, context: MapContext) -> Normalized:
        shapes = records["payload"].map(is_graphql_payload).astype(bool)
        if not shapes.any():
            return rest(records, context)
        if shapes.all():
            return graphql(records, context)

        parts = [rest(records[~shapes], context), graphql(records[shapes], context)]
        tables = {}
        for table, first in parts[0].tables.items():
            frames = [frame for frame in (first, parts[1].tables[table]) if not frame.empty]
            if not frames:
                tables[table] = first
                continue
            merged = pd.concat(frames, ignore_index=True)
            tables[table] = merged.sort_values(RECORD, kind="stable").reset_index(drop=True)
        return Normalized(tables=tables, issues=parts[0].issues + parts[1].issues)

    return normalize


def _connection_nodes(payload: Any, key: str) -> list | None:
    """Return the nodes of the payload's connection `key`; None when the payload has no such connection."""
    connection = payload.get(key) if isinstance(payload, dict) else None
    nodes = connection.get("nodes") if isinstance(connection, dict) else None
    return nodes if isinstance(nodes, list) else None


def _explode_connection(payloads: pd.Series, key: str):
    """Take the nodes of each payload's connection `key` out as rows of their own, as `explode` does for a list."""
    return explode(payloads.map(lambda payload: {key: _connection_nodes(payload, key)}), key)


def _ids(read: FieldReader, path: str, column: str) -> pd.Series:
    """Read numeric REST IDs from `<path>.legacyResourceId`, or from the global ID at `<path>.id`.

    `path` is "" for the payload's own ID. A value that is neither is noted as an issue.
    """
    prefix = f"{path}." if path else ""
    legacy = read.raw(f"{prefix}legacyResourceId").map(numeric_id)
    global_ids = read.raw(f"{prefix}id")
    from_global = global_ids.map(numeric_id)
    invalid = global_ids.notna() & from_global.isna() & legacy.isna()
    read._note(invalid, column, f"{prefix}id", "failed_validation", "id", global_ids.astype("string"),
               "expected a Shopify global ID such as gid://shopify/Order/450789469")
    return legacy.where(legacy.notna(), from_global).astype("string")


def _enum_text(values: pd.Series) -> pd.Series:
    return values.str.lower()


def normalize_orders(records: pd.DataFrame, context: MapContext) -> Normalized:
    issues: list[dict] = []
    payloads = records["payload"]
    flat = flatten(payloads)
    positions = pd.Series(records.index, index=records.index)
    read = FieldReader(flat, positions, "orders", issues)

    orders = pd.DataFrame(index=flat.index)
    orders["version"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    orders["extra"] = extra_fields(payloads, ORDER_FIELDS)
    orders["order_number"] = read.text("name")
    orders["status"] = _enum_text(read.text("displayFinancialStatus"))
    fulfillment = read.text("displayFulfillmentStatus")
    orders["fulfillment_status"] = fulfillment.map(
        lambda value: FULFILLMENT_STATUSES.get(value, value.lower()) if isinstance(value, str) else None
    ).astype("string")
    orders["email"] = read.text("email")
    orders["customer_source_id"] = _ids(read, "customer", "customer_source_id")
    orders["marketplace_id"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    orders["created_at"] = read.timestamp("createdAt", "created_at")
    orders["updated_at"] = read.timestamp("updatedAt", "updated_at")
    orders["cancelled_at"] = read.timestamp("cancelledAt", "cancelled_at")
    for name, money_set in ORDER_MONEY_SETS.items():
        for side, suffix in (("shopMoney", ""), ("presentmentMoney", "_presentment")):
            currency = read.currency(f"{money_set}.{side}.currencyCode")
            orders[f"{name}{suffix}_amount"] = read.money(f"{money_set}.{side}.amount", currency, f"{name}{suffix}_amount")
            orders[f"{name}{suffix}_currency"] = currency
    orders["version"] = timestamp_versions(orders["updated_at"])
    order_ids = _ids(read, "", "source_id")
    orders = with_identity(orders, context, order_ids, positions)

    lines = _order_lines(payloads, order_ids, context, issues)
    return Normalized(tables={"orders": in_model_order("orders", orders), "order_lines": lines}, issues=issues)


def _order_lines(payloads: pd.Series, order_ids: pd.Series, context: MapContext, issues: list) -> pd.DataFrame:
    line_items = _explode_connection(payloads, "lineItems")
    items, parents, flat = line_items.items, line_items.records, line_items.flat
    read = FieldReader(flat, parents, "order_lines", issues)

    # The REST line's `price_set` is the unit price before discounts, which GraphQL calls originalUnitPriceSet.
    lines = pd.DataFrame(index=flat.index)
    currency = read.currency("originalUnitPriceSet.shopMoney.currencyCode")
    unit_price = read.money("originalUnitPriceSet.shopMoney.amount", currency, "unit_price_amount")
    quantity = read.integer("quantity", "quantity")
    lines["version"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    lines["extra"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    lines["order_source_id"] = pd.Series(order_ids.loc[parents].to_numpy(), index=flat.index, dtype="string")
    lines["sku"] = read.text("sku")
    lines["product_id"] = _ids(read, "product", "product_id")
    lines["variant_id"] = _ids(read, "variant", "variant_id")
    lines["title"] = read.text("name")
    lines["quantity"] = quantity
    lines["currency"] = currency
    lines["unit_price_amount"] = unit_price
    lines["line_total_amount"] = unit_price * quantity
    lines["discount_amount"] = sum_child_money(
        items, "discountAllocations", "allocatedAmountSet.shopMoney.amount",
        "allocatedAmountSet.shopMoney.currencyCode", "discount_amount", parents, issues)
    lines["tax_amount"] = sum_child_money(
        items, "taxLines", "priceSet.shopMoney.amount", "priceSet.shopMoney.currencyCode", "tax_amount",
        parents, issues)
    lines = with_identity(lines, context, _ids(read, "", "source_id"), parents)

    # Line items have no update time of their own, so a line's version is its content hash, as for REST lines.
    lines["version"] = row_hashes(lines, [c for c in lines.columns if c not in (RECORD, "version")])
    return in_model_order("order_lines", lines)


def normalize_refunds(records: pd.DataFrame, context: MapContext) -> Normalized:
    issues: list[dict] = []
    payloads = records["payload"]
    flat = flatten(payloads)
    positions = pd.Series(records.index, index=records.index)
    read = FieldReader(flat, positions, "refunds", issues)

    # NOTE: REST sums a refund's successful refund transactions, and GraphQL's totalRefundedSet is
    # the total across the refund's transactions. REST amounts are taken to be in the presentment
    # currency, the one the buyer paid in. Only single-currency refunds with successful transactions
    # were compared.
    currency = read.currency("totalRefundedSet.presentmentMoney.currencyCode")

    refunds = pd.DataFrame(index=flat.index)
    refunds["version"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    refunds["extra"] = extra_fields(payloads, {"id", "legacyResourceId", "order", "totalRefundedSet", "note",
                                               "createdAt"})
    refunds["order_source_id"] = _ids(read, "order", "order_source_id")
    refunds["payment_source_id"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    refunds["amount"] = read.money("totalRefundedSet.presentmentMoney.amount", currency, "amount")
    refunds["currency"] = currency
    refunds["status"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    refunds["reason"] = read.text("note")
    refunds["created_at"] = read.timestamp("createdAt", "created_at")
    # NOTE: GraphQL's Refund has no processedAt, so its creation time is used. The bundled REST
    # samples give both times alike, and a REST refund whose times differ maps differently.
    refunds["processed_at"] = refunds["created_at"]
    refunds["version"] = timestamp_versions(refunds["created_at"])
    refunds = with_identity(refunds, context, _ids(read, "", "source_id"), positions)
    return Normalized(tables={"refunds": in_model_order("refunds", refunds)}, issues=issues)


def normalize_transactions(records: pd.DataFrame, context: MapContext) -> Normalized:
    issues: list[dict] = []
    payloads = records["payload"]
    flat = flatten(payloads)
    positions = pd.Series(records.index, index=records.index)
    read = FieldReader(flat, positions, "payments", issues)

    payments = pd.DataFrame(index=flat.index)
    # The presentment side, as in `normalize_refunds`.
    currency = read.currency("amountSet.presentmentMoney.currencyCode")
    payments["version"] = record_hashes(payloads)
    payments["extra"] = extra_fields(payloads, {"id", "order", "kind", "status", "gateway", "amountSet", "createdAt",
                                                "processedAt"})
    payments["order_source_id"] = _ids(read, "order", "order_source_id")
    payments["kind"] = _enum_text(read.text("kind"))
    payments["status"] = _enum_text(read.text("status"))
    payments["gateway"] = read.text("gateway")
    payments["amount"] = read.money("amountSet.presentmentMoney.amount", currency, "amount")
    payments["currency"] = currency
    payments["refunded_amount"] = pd.Series(pd.NA, index=flat.index, dtype="Int64")
    payments["captured"] = pd.Series(pd.NA, index=flat.index, dtype="boolean")
    payments["created_at"] = read.timestamp("createdAt", "created_at")
    payments["processed_at"] = read.timestamp("processedAt", "processed_at")
    payments = with_identity(payments, context, _ids(read, "", "source_id"), positions)
    return Normalized(tables={"payments": in_model_order("payments", payments)}, issues=issues)


def normalize_customers(records: pd.DataFrame, context: MapContext) -> Normalized:
    issues: list[dict] = []
    payloads = records["payload"]
    flat = flatten(payloads)
    positions = pd.Series(records.index, index=records.index)
    read = FieldReader(flat, positions, "customers", issues)

    customers = pd.DataFrame(index=flat.index)
    currency = read.currency("amountSpent.currencyCode")
    customers["version"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    customers["extra"] = extra_fields(payloads, {"id", "legacyResourceId", "defaultEmailAddress", "defaultPhoneNumber",
                                                 "email", "phone", "firstName", "lastName", "state",
                                                 "emailMarketingConsent", "numberOfOrders", "amountSpent",
                                                 "createdAt", "updatedAt"})
    # `defaultEmailAddress` and `defaultPhoneNumber` replace the deprecated `email` and `phone`;
    # either is read, so a payload from an older API version maps too.
    customers["email"] = read.text("defaultEmailAddress.emailAddress").fillna(read.text("email")).str.strip()
    customers["phone"] = read.text("defaultPhoneNumber.phoneNumber").fillna(read.text("phone"))
    customers["first_name"] = read.text("firstName")
    customers["last_name"] = read.text("lastName")
    customers["state"] = _enum_text(read.text("state"))
    marketing = read.text("defaultEmailAddress.marketingState").fillna(read.text("emailMarketingConsent.marketingState"))
    customers["email_marketing_state"] = _enum_text(marketing)
    customers["orders_count"] = read.integer("numberOfOrders", "orders_count")
    customers["total_spent_amount"] = read.money("amountSpent.amount", currency, "total_spent_amount")
    customers["total_spent_currency"] = currency.where(customers["total_spent_amount"].notna())
    customers["created_at"] = read.timestamp("createdAt", "created_at")
    customers["updated_at"] = read.timestamp("updatedAt", "updated_at")
    customers["version"] = timestamp_versions(customers["updated_at"])
    customers = with_identity(customers, context, _ids(read, "", "source_id"), positions)
    return Normalized(tables={"customers": in_model_order("customers", customers)}, issues=issues)


def normalize_products(records: pd.DataFrame, context: MapContext) -> Normalized:
    """Map each product's variants, the catalog that order lines and inventory levels refer to."""
    issues: list[dict] = []
    payloads = records["payload"]
    product_read = FieldReader(flatten(payloads), pd.Series(records.index, index=records.index), "product_variants",
                               issues)
    product_ids = _ids(product_read, "", "product_id")
    product_titles = product_read.text("title")

    nested = _explode_connection(payloads, "variants")
    variants, parents, flat = nested.items, nested.records, nested.flat
    read = FieldReader(flat, parents, "product_variants", issues)

    rows = pd.DataFrame(index=flat.index)
    rows["version"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    rows["extra"] = extra_fields(variants, {"id", "legacyResourceId", "sku", "title", "inventoryItem", "createdAt",
                                            "updatedAt"})
    rows["product_id"] = pd.Series(product_ids.loc[parents].to_numpy(), index=flat.index, dtype="string")
    rows["sku"] = read.text("sku")
    rows["product_title"] = pd.Series(product_titles.loc[parents].to_numpy(), index=flat.index, dtype="string")
    rows["variant_title"] = read.text("title")
    rows["inventory_item_id"] = _ids(read, "inventoryItem", "inventory_item_id")
    rows["created_at"] = read.timestamp("createdAt", "created_at")
    rows["updated_at"] = read.timestamp("updatedAt", "updated_at")
    rows["version"] = timestamp_versions(rows["updated_at"])
    rows = with_identity(rows, context, _ids(read, "", "source_id"), parents)
    return Normalized(tables={"product_variants": in_model_order("product_variants", rows)}, issues=issues)


def _available_quantity(payload: Any) -> Any:
    quantities = payload.get("quantities") if isinstance(payload, dict) else None
    for quantity in quantities if isinstance(quantities, list) else []:
        if isinstance(quantity, dict) and quantity.get("name") == "available":
            return quantity.get("quantity")
    return None


def inventory_level_ids(payloads: pd.Series) -> pd.Series:
    """Identify an inventory level by its inventory item and location, as REST levels are identified."""
    flat = flatten(payloads)
    item = flat.get("item.legacyResourceId").map(numeric_id).fillna(flat.get("item.id").map(numeric_id))
    location = flat.get("location.legacyResourceId").map(numeric_id).fillna(flat.get("location.id").map(numeric_id))
    return (item.astype("string") + "@" + location.astype("string")).astype("string")


def normalize_inventory_levels(records: pd.DataFrame, context: MapContext) -> Normalized:
    issues: list[dict] = []
    payloads = records["payload"]
    flat = flatten(payloads)
    positions = pd.Series(records.index, index=records.index)
    read = FieldReader(flat, positions, "inventory_levels", issues)
    quantities = FieldReader(flatten(payloads.map(lambda payload: {AVAILABLE: _available_quantity(payload)})),
                             positions, "inventory_levels", issues)

    levels = pd.DataFrame(index=flat.index)
    levels["version"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    # `item` stays in `extra` with its SKU: REST levels carry no SKU, and the column stays empty for both.
    levels["extra"] = extra_fields(payloads, {"id", "location", "quantities", "updatedAt"})
    levels["sku"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    levels["inventory_item_id"] = _ids(read, "item", "inventory_item_id")
    levels["location_id"] = _ids(read, "location", "location_id")
    levels["condition"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    levels["available"] = quantities.integer(AVAILABLE, "available")
    levels["updated_at"] = read.timestamp("updatedAt", "updated_at")
    levels["version"] = timestamp_versions(levels["updated_at"])
    levels = with_identity(levels, context, inventory_level_ids(payloads), positions)
    return Normalized(tables={"inventory_levels": in_model_order("inventory_levels", levels)}, issues=issues)
