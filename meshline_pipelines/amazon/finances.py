"""Amazon financial events (Finances API v0, listFinancialEvents) to payout lines and refunds.

Amazon posts a shipment event when it charges the buyer for shipped items and a refund event
when it pays money back, each with its items' charges, fees and promotions. These are the
movements a later settlement pays out, so they are the independent record that a settlement's
per-order fees and refunds are compared with.

Both lists hold `ShipmentEvent` objects; a refund's items are in `ShipmentItemAdjustmentList`.
Chargebacks and guarantee claims have the same shape, so the list an event came from is the only
reliable sign of its kind. MeshLine therefore adds that list's name to each event as `EventList`
before storing it; every other field is Amazon's.

Each item becomes a payout line without a payout (listFinancialEvents does not name the
settlement): charges and promotions are its gross amount, and fees and withheld taxes, which
Amazon lists as negative, its positive fee. Each refund event also becomes a refund of its charges and
promotions, counted as a positive amount.
"""

import pandas as pd

from meshline_pipelines.ledger.store import row_hashes
from meshline_pipelines.normalize import (
    RECORD, FieldReader, MapContext, Normalized, empty_table, explode, extra_fields, flatten, in_model_order,
    record_hashes, with_identity,
)
from meshline_pipelines.sources.files import UnreadableFile, load_json

SHIPMENT_EVENTS, REFUND_EVENTS = "ShipmentEventList", "RefundEventList"
EVENT_LISTS = (SHIPMENT_EVENTS, REFUND_EVENTS)
EVENT_LIST_FIELD = "EventList"
# The item list of each kind of event, the lists of an item's charges, fees and promotions, and its ID field.
ITEM_LISTS = {
    SHIPMENT_EVENTS: ("ShipmentItemList", "ItemChargeList", "ItemFeeList", "PromotionList", "OrderItemId"),
    REFUND_EVENTS: ("ShipmentItemAdjustmentList", "ItemChargeAdjustmentList", "ItemFeeAdjustmentList",
                    "PromotionAdjustmentList", "OrderAdjustmentItemId"),
}
# Line types as the settlement report names its transactions, so both read alike side by side.
LINE_TYPES = {SHIPMENT_EVENTS: "Order/financial event", REFUND_EVENTS: "Refund/financial event"}

# Top-level fields of the Finances API v0 `ShipmentEvent` model, and the list name MeshLine adds.
DOCUMENTED_FIELDS = frozenset({
    EVENT_LIST_FIELD, "AmazonOrderId", "SellerOrderId", "MarketplaceName", "StoreName", "OrderChargeList",
    "OrderChargeAdjustmentList", "ShipmentFeeList", "ShipmentFeeAdjustmentList", "OrderFeeList",
    "OrderFeeAdjustmentList", "DirectPaymentList", "PostedDate", "ShipmentItemList", "ShipmentItemAdjustmentList",
})


def tagged_events(financial_events: dict) -> list[dict]:
    """Take the shipment and refund events out of a `FinancialEvents` object, each tagged with its list."""
    events = []
    for list_name in EVENT_LISTS:
        listed = financial_events.get(list_name)
        if listed is None:
            continue
        if not isinstance(listed, list):
            raise ValueError(f"FinancialEvents.{list_name} is a {type(listed).__name__}, expected a list")
        events += [{EVENT_LIST_FIELD: list_name, **event} if isinstance(event, dict) else event for event in listed]
    return events


def read_financial_events(content: bytes, name: str) -> list[dict]:
    """Reader for a saved listFinancialEvents response body: `{"payload": {"FinancialEvents": {...}}}`."""
    body = load_json(content, name)
    payload = body.get("payload") if isinstance(body, dict) else None
    events = payload.get("FinancialEvents") if isinstance(payload, dict) else None
    if not isinstance(events, dict):
        raise UnreadableFile(f'{name} has no "payload.FinancialEvents" object: expected a listFinancialEvents '
                             "response body")
    try:
        return tagged_events(events)
    except ValueError as exc:
        raise UnreadableFile(f"{name}: {exc}") from None


def _item_ids(payload: dict) -> list[str]:
    items_key, *_, id_key = ITEM_LISTS.get(payload.get(EVENT_LIST_FIELD), ITEM_LISTS[SHIPMENT_EVENTS])
    items = payload.get(items_key)
    if not isinstance(items, list):
        return []
    return [str(item.get(id_key)) for item in items if isinstance(item, dict) and item.get(id_key)]


def financial_event_ids(payloads: pd.Series) -> pd.Series:
    """Identify an event by its list, order, posting time and item IDs: Amazon gives events no ID of their own."""
    ids = []
    for payload in payloads:
        parts = [payload.get(field) for field in (EVENT_LIST_FIELD, "AmazonOrderId", "PostedDate")] \
            if isinstance(payload, dict) else [None]
        if not all(isinstance(part, str) and part for part in parts):
            ids.append(None)
            continue
        ids.append(":".join(parts + ["+".join(sorted(_item_ids(payload)))]))
    return pd.Series(ids, index=payloads.index, dtype="string")


def _component_totals(items: pd.Series, list_path: tuple[str, ...], amount_key: str, positions: pd.Series,
                      table: str, column: str, issues: list[dict]) -> tuple[pd.Series, pd.Series]:
    """Sum the components under each item's `list_path` (charges, fees, promotions) in minor units, with currency.

    A path of two lists reaches components nested one level deeper, as in `ItemTaxWithheldList[].TaxesWithheld[]`.
    An item without components sums to NA. Components in two currencies are a failed_validation issue.
    """
    nodes, owner = items, pd.Series(items.index, index=items.index)
    for key in list_path:
        nested = explode(nodes, key)
        owner = pd.Series(owner.loc[nested.records].to_numpy(), index=nested.items.index)
        nodes, flat = nested.items, nested.flat
    source_field = "[].".join(list_path) + f"[].{amount_key}"
    read = FieldReader(flat, pd.Series(positions.loc[owner].to_numpy(), index=flat.index), table, issues)
    currency = read.currency(f"{amount_key}.CurrencyCode")
    minor = read.money(f"{amount_key}.CurrencyAmount", currency, column)

    by_item = pd.DataFrame({"item": owner.to_numpy(), "minor": minor, "currency": currency})
    grouped = by_item.groupby("item")
    totals = grouped["minor"].sum(min_count=1).reindex(items.index).astype("Int64")
    currencies = grouped["currency"].first().reindex(items.index).astype("string")
    for item, found in grouped["currency"].unique().items():
        codes = sorted(code for code in found if pd.notna(code))
        if len(codes) > 1:
            issues.append({"record": int(positions.loc[item]), "table": table, "column": column,
                           "source_field": f"{source_field}.CurrencyCode", "kind": "failed_validation",
                           "rule": f"{table}.{column}:one_currency", "value": ", ".join(codes),
                           "message": f"{source_field} of one item mixes the currencies {', '.join(codes)}; "
                                      "Amazon posts an item's amounts in the marketplace currency"})
            totals.loc[item] = pd.NA
    return totals, currencies


def _note_mixed_currencies(currencies: pd.DataFrame, item_events: pd.Series, issues: list[dict]) -> None:
    """Name an item whose charges, promotions and fees are in different currencies: its amounts cannot be summed."""
    for item, codes in currencies.iterrows():
        found = sorted({code for code in codes if pd.notna(code)})
        if len(found) > 1:
            issues.append({"record": int(item_events.loc[item]), "table": "payout_lines", "column": "currency",
                           "source_field": "CurrencyCode", "kind": "failed_validation",
                           "rule": "payout_lines.currency:one_currency", "value": ", ".join(found),
                           "message": f"the item's charges, promotions and fees are in {', '.join(found)}; "
                                      "Amazon posts an item's amounts in the marketplace currency"})


def normalize_financial_events(records: pd.DataFrame, context: MapContext) -> Normalized:
    """Map each event item to a payout line without a payout, and each refund event to a refund."""
    issues: list[dict] = []
    payloads = records["payload"]
    positions = pd.Series(records.index, index=records.index)
    event_ids = financial_event_ids(payloads)
    event_lists = payloads.map(lambda payload: payload.get(EVENT_LIST_FIELD) if isinstance(payload, dict) else None)
    posted = FieldReader(flatten(payloads), positions, "payout_lines", issues).timestamp("PostedDate", "processed_at")

    tables: dict[str, list[pd.DataFrame]] = {"payout_lines": [], "refunds": []}
    for list_name, (items_key, charges_key, fees_key, promotions_key, id_key) in ITEM_LISTS.items():
        events = payloads[event_lists == list_name]
        if events.empty:
            continue
        items = explode(events, items_key)
        item_events = pd.Series(items.records.to_numpy(), index=items.items.index)
        read = FieldReader(items.flat, item_events, "payout_lines", issues)
        def total(list_path: tuple[str, ...], amount_key: str, column: str) -> tuple[pd.Series, pd.Series]:
            return _component_totals(items.items, list_path, amount_key, item_events, "payout_lines", column, issues)

        charges, charge_currency = total((charges_key,), "ChargeAmount", "amount")
        promotions, promotion_currency = total((promotions_key,), "PromotionAmount", "amount")
        item_fees, fee_currency = total((fees_key,), "FeeAmount", "fee_amount")
        # Tax that Amazon collects and remits as marketplace facilitator is withheld from the seller. The
        # settlement report lists it among item-related fees, so it counts as a fee here too.
        withheld, withheld_currency = total(("ItemTaxWithheldList", "TaxesWithheld"), "ChargeAmount", "fee_amount")
        fees = item_fees.fillna(0) + withheld.fillna(0)
        fees = fees.where(item_fees.notna() | withheld.notna())
        fee_currency = fee_currency.fillna(withheld_currency)
        has_gross = charges.notna() | promotions.notna()
        _note_mixed_currencies(pd.concat([charge_currency, promotion_currency, fee_currency], axis=1),
                               item_events, issues)

        lines = pd.DataFrame(index=items.items.index)
        lines["version"] = pd.Series(pd.NA, index=lines.index, dtype="string")
        lines["extra"] = pd.Series(pd.NA, index=lines.index, dtype="string")
        lines["payout_source_id"] = pd.Series(pd.NA, index=lines.index, dtype="string")
        lines["type"] = LINE_TYPES[list_name]
        # An item with fees only has a gross of zero; one with no amount at all fails as a missing amount.
        lines["amount"] = (charges.fillna(0) + promotions.fillna(0)).where(has_gross | fees.notna()).astype("Int64")
        lines["fee_amount"] = (-fees).astype("Int64")
        lines["net_amount"] = (lines["amount"] - lines["fee_amount"].fillna(0)).astype("Int64")
        lines["currency"] = charge_currency.fillna(promotion_currency).fillna(fee_currency)
        lines["source_object_id"] = read.text(id_key)
        lines["order_source_id"] = items.parent_field(payloads, "AmazonOrderId")
        lines["sku"] = read.text("SellerSKU")
        lines["description"] = items.parent_field(payloads, "MarketplaceName")
        lines["processed_at"] = posted.loc[items.records].to_numpy()
        line_ids = pd.Series(event_ids.loc[items.records].to_numpy(), index=lines.index, dtype="string") \
            + ":" + lines["source_object_id"]
        lines = with_identity(lines, context, line_ids, item_events)
        lines["version"] = row_hashes(lines, [c for c in lines.columns if c not in (RECORD, "version")])
        tables["payout_lines"].append(in_model_order("payout_lines", lines))
        if list_name == REFUND_EVENTS:
            tables["refunds"].append(_refunds(events, item_events, lines, event_ids, posted, context))

    return Normalized(tables={table: pd.concat(frames, ignore_index=True) if frames else empty_table(table)
                              for table, frames in tables.items()}, issues=issues)


def _refunds(events: pd.Series, item_events: pd.Series, lines: pd.DataFrame, event_ids: pd.Series,
             posted: pd.Series, context: MapContext) -> pd.DataFrame:
    """Build one refund per refund event, of minus the sum of its items' charge and promotion adjustments."""
    gross = pd.DataFrame({"event": item_events.to_numpy(), "amount": lines["amount"].to_numpy(),
                          "currency": lines["currency"].to_numpy()})
    per_event = gross.groupby("event").agg(amount=("amount", lambda values: values.sum(min_count=1)),
                                           currency=("currency", "first"))
    refunds = pd.DataFrame(index=events.index)
    refunds["version"] = record_hashes(events)
    refunds["extra"] = extra_fields(events, {EVENT_LIST_FIELD, "AmazonOrderId", "PostedDate"})
    refunds["order_source_id"] = events.map(lambda payload: payload.get("AmazonOrderId")).astype("string")
    refunds["payment_source_id"] = pd.Series(pd.NA, index=events.index, dtype="string")
    refunds["amount"] = (-per_event["amount"].reindex(events.index)).astype("Int64")
    refunds["currency"] = per_event["currency"].reindex(events.index).astype("string")
    refunds["status"] = "posted"
    refunds["reason"] = pd.Series(pd.NA, index=events.index, dtype="string")
    refunds["created_at"] = posted.loc[events.index]
    refunds["processed_at"] = posted.loc[events.index]
    refunds = with_identity(refunds, context, event_ids.loc[events.index],
                            pd.Series(events.index, index=events.index))
    return in_model_order("refunds", refunds)
