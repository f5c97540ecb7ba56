"""Each Amazon settlement against the orders it pays, from the settlement report's raw rows.

The settlement flat file (GET_V2_SETTLEMENT_REPORT_DATA_FLAT_FILE) names a row's kind in
`transaction-type` (`Order`, `Refund`) and its charge in `price-type`. Per order and settlement:

- `Principal` under `price-amount` is the item price, compared with the sum of the order's stored
  line totals;
- everything a `Refund` row gives back (all price types and promotions) is compared with the
  order's stored refunds;
- the item-related fees of `Order` rows are compared with the item fees of the order's stored
  Amazon financial events (Finances API shipment events).

A difference is a `reconciliation_mismatch` on the order, and an order the ledger does not hold is
an `unmapped_reference`. A comparison whose ledger side was never loaded is reported as unverified.
"""

import json
from dataclasses import dataclass

import pandas as pd

from meshline_pipelines.ledger import Ledger
from meshline_pipelines.money import decimal_to_minor, format_minor
from meshline_pipelines.record_issues import exception_row
from meshline_pipelines.routing import Routing

KIND = "reconciliation_mismatch"
MATCHED, MISMATCHED, UNVERIFIED = "matched", "mismatched", "unverified"

# The settlement flat file (GET_V2_SETTLEMENT_REPORT_DATA_FLAT_FILE) names a row's kind in
# `transaction-type` (`Order`, `Refund`) and its charge in `price-type`. `Principal` under
# `price-amount` is the item price. SP-API getOrderItems reports the same amount as `ItemPrice`: the
# selling price times quantity, with tax, shipping, gift wrap and promotion discounts in other
# fields. So the settlement's principal for an order is compared with the sum of the order's stored
# line totals. `Tax`, `Shipping` and the other price types are not compared, and neither is the
# order total, because OrderTotal includes tax and shipping.
# NOTE: each settlement is compared on its own, so an order shipped in parts that Amazon pays in two
# settlements differs in both. The non-flat layout, with `amount-type` and `amount-description`
# columns, is read neither here nor by the Amazon settlement mapping.
ORDER_TRANSACTION = "Order"
REFUND_TRANSACTION = "Refund"
# Not a transaction type of the report: the label of an order's item fees, compared on their own.
FEES = "Fees"
PRINCIPAL = "Principal"
# NOTE: only item-related fees (commissions, FBA fees, withheld facilitator tax) are compared,
# because Finances API shipment events list them per item (`ItemFeeList`, `ItemTaxWithheldList`).
# Shipment, order and other fee columns are not, and neither are the fees that a refund gives back.
ITEM_FEE_COLUMN = "item-related-fee-amount"
# The payout line type of an Amazon shipment event, as the financial events mapping writes it.
SHIPMENT_EVENT_LINE = "Order/financial event"
PRINCIPAL_DIFFERS = "orders.amount:settlement_principal_differs"
REFUND_DIFFERS = "orders.refunds:settlement_refund_differs"
FEES_DIFFER = "orders.fees:settlement_fees_differ"
ORDER_NOT_STORED = "payout_lines.order_source_id:order_not_stored"
UNMAPPED = "unmapped_reference"
NOT_STORED = "not_stored"
ORDER_RULES = (PRINCIPAL_DIFFERS, REFUND_DIFFERS, FEES_DIFFER, ORDER_NOT_STORED)


@dataclass(frozen=True)
class SettlementOrderResult:
    """One order's principal, refund or item fees in one Amazon settlement, compared with the ledger.

    `transaction` is `Order` (principal), `Refund` or `Fees`. `expected` is the ledger's amount: the
    order's stored line totals, its stored refunds, or the item fees of its stored shipment events.
    `found` is the settlement's amount, with a refund counted as a positive sum and fees as the
    report lists them (negative). Both are minor units of `currency`.
    """

    account: str
    settlement_id: str
    order_id: str
    transaction: str
    currency: str
    found: int
    expected: int | None
    status: str
    row_count: int
    partition_key: str | None
    note: str | None = None

    @property
    def difference(self) -> int | None:
        """The ledger's amount minus the settlement's: positive when the settlement paid less."""
        return None if self.expected is None else self.expected - self.found


@dataclass(frozen=True)
class SettlementRows:
    """Amazon settlement rows that name an order, the item fees of each settlement, and a count of unread lines.

    `rows` holds each row's transaction, price type and its price, promotion and item fee amounts.
    `unread` counts stored settlement lines whose raw report row was not found.
    """

    rows: pd.DataFrame
    item_fees: dict[tuple[str, str], tuple[int, str]]
    unread: int


def _payload_field(payloads: pd.Series, name: str) -> pd.Series:
    values = payloads.map(lambda payload: payload.get(name) if isinstance(payload, dict) else None)
    return _blank_to_na(values.astype("string"))


def _blank_to_na(values: pd.Series) -> pd.Series:
    return values.where(values.str.strip() != "")


def amazon_settlement_rows(ledger: Ledger, lines: pd.DataFrame, payouts: pd.DataFrame) -> SettlementRows:
    """Read the price, promotion and item fee columns of every stored Amazon settlement row from its raw row.

    The canonical payout line keeps a row's gross amount and its fees, not which price type (principal,
    tax, shipping) or which fee it was. So these are read from the raw row whose content hash equals
    the line's version, which is the row that was stored.
    """
    amazon = lines[(lines["system"] == "amazon") & lines["payout_source_id"].notna()]
    empty = pd.DataFrame(columns=["account", "settlement_id", "order_id", "transaction", "price_type", "currency",
                                  "price", "promotion", "fees", "partition_key"])
    if amazon.empty:
        return SettlementRows(rows=empty, item_fees={}, unread=0)

    raw = ledger.read_raw(system="amazon", stream="settlements")[["account", "record_id", "content_hash", "payload"]]
    joined = amazon.merge(raw, how="left", left_on=["account", "source_id", "version"],
                          right_on=["account", "record_id", "content_hash"])
    # NOTE: a line whose raw row is gone cannot be split into principal and fees, so it is counted
    # as unread and its order is not compared.
    unread = int(joined["payload"].isna().sum())
    joined = joined[joined["payload"].notna()].reset_index(drop=True)
    payloads = joined["payload"].map(json.loads)

    # An invalid amount reads as NA here. The settlement mapping already reported it as a
    # failed_validation issue when the row was loaded.
    currency = joined["currency"].astype("string")
    def amount(column: str) -> pd.Series:
        return decimal_to_minor(_payload_field(payloads, column), currency).minor

    frame = pd.DataFrame({
        "account": joined["account"], "settlement_id": joined["payout_source_id"].astype("string"),
        "order_id": joined["order_source_id"].astype("string"),
        "transaction": _payload_field(payloads, "transaction-type"),
        "price_type": _payload_field(payloads, "price-type"), "currency": currency,
        "price": amount("price-amount"), "promotion": amount("promotion-amount"), "fees": amount(ITEM_FEE_COLUMN),
    })

    settlement_partitions = payouts[payouts["system"] == "amazon"].set_index(["account", "source_id"])["partition_key"]
    item_fees = {}
    for (account, settlement_id), group in frame.groupby(["account", "settlement_id"]):
        item_fees[(account, settlement_id)] = (int(group["fees"].fillna(0).sum()), str(group["currency"].iloc[0]))

    ordered = frame[frame["order_id"].notna()].copy()
    ordered["partition_key"] = [settlement_partitions.get((account, settlement_id))
                                for account, settlement_id in zip(ordered["account"], ordered["settlement_id"])]
    return SettlementRows(rows=ordered[empty.columns].reset_index(drop=True), item_fees=item_fees, unread=unread)


def _stored_totals(frame: pd.DataFrame, key: str, amount: str) -> dict[tuple[str, str, str], int]:
    """Sum `amount` per (account, `key`, currency) over stored Amazon rows."""
    amazon = frame[(frame["system"] == "amazon") & frame[key].notna()]
    sums = amazon.groupby(["account", key, "currency"])[amount].sum(min_count=1)
    return {index: int(value) for index, value in sums.items() if pd.notna(value)}


def _settlement_amounts(rows: pd.DataFrame) -> pd.DataFrame:
    """Return each order's principal, refund and item fee rows per settlement, labelled by `transaction`."""
    is_principal = rows["price_type"].eq(PRINCIPAL).fillna(False)
    orders = rows[rows["transaction"].eq(ORDER_TRANSACTION).fillna(False)]
    refunds = rows[rows["transaction"].eq(REFUND_TRANSACTION).fillna(False)]
    parts = [
        orders[is_principal.loc[orders.index]].assign(found=lambda frame: frame["price"],
                                                      transaction=ORDER_TRANSACTION),
        # What a refund gives back: every price type and promotion of its rows, counted as a positive sum.
        refunds.assign(found=lambda frame: -(frame["price"].fillna(0) + frame["promotion"].fillna(0)),
                       transaction=REFUND_TRANSACTION),
        orders[orders["fees"].notna()].assign(found=lambda frame: frame["fees"], transaction=FEES),
    ]
    return pd.concat(parts, ignore_index=True)


def _shipment_event_fees(financial_lines: pd.DataFrame) -> tuple[dict[tuple[str, str, str], int], set]:
    """Sum the item fees of stored shipment events per (account, order, currency), negative as Amazon lists them.

    Also return the (account, order) pairs that have shipment events at all.
    """
    events = financial_lines[(financial_lines["system"] == "amazon") & financial_lines["payout_source_id"].isna()
                             & (financial_lines["type"] == SHIPMENT_EVENT_LINE)]
    events = events.assign(item_fees=-events["fee_amount"])
    return _stored_totals(events, "order_source_id", "item_fees"), set(zip(events["account"],
                                                                             events["order_source_id"]))


def compare_settlement_orders(rows: pd.DataFrame, orders: pd.DataFrame, order_lines: pd.DataFrame,
                              refunds: pd.DataFrame, financial_lines: pd.DataFrame) -> list[SettlementOrderResult]:
    """Compare each settlement's principal, refunds and item fees per order with the ledger.

    `financial_lines` are the stored payout lines; those of Amazon shipment events hold each order's item fees.
    """
    amazon_orders = orders[orders["system"] == "amazon"]
    stored_orders = set(zip(amazon_orders["account"], amazon_orders["source_id"]))
    orders_with_lines = set(zip(order_lines.loc[order_lines["system"] == "amazon", "account"],
                                order_lines.loc[order_lines["system"] == "amazon", "order_source_id"]))
    line_totals = _stored_totals(order_lines, "order_source_id", "line_total_amount")
    refund_totals = _stored_totals(refunds, "order_source_id", "amount")
    accounts_with_refunds = set(refunds.loc[refunds["system"] == "amazon", "account"])
    fee_totals, orders_with_events = _shipment_event_fees(financial_lines)

    results = []
    for (account, settlement_id, order_id, transaction, currency), group in _settlement_amounts(rows).groupby(
            ["account", "settlement_id", "order_id", "transaction", "currency"], sort=True):
        found = int(group["found"].fillna(0).sum())
        common = {"account": account, "settlement_id": settlement_id, "order_id": order_id,
                  "transaction": transaction, "currency": currency, "found": found, "row_count": len(group),
                  "partition_key": group["partition_key"].iloc[0]}
        unverified = None
        if (account, order_id) not in stored_orders:
            if transaction == FEES:
                # The missing order is reported once, by its principal.
                continue
            results.append(SettlementOrderResult(**common, expected=None, status=NOT_STORED,
                                                 note="order not stored in the ledger"))
            continue
        if transaction == ORDER_TRANSACTION and (account, order_id) not in orders_with_lines:
            unverified = "no order items stored for this order"
        elif transaction == REFUND_TRANSACTION and account not in accounts_with_refunds:
            # Stored refunds are compared only for accounts that have any: the financial events stream loads them.
            unverified = "no Amazon refunds stored for this account; load amazon/financial_events"
        elif transaction == FEES and (account, order_id) not in orders_with_events:
            unverified = "no Amazon shipment events stored for this order; load amazon/financial_events"
        if unverified:
            results.append(SettlementOrderResult(**common, expected=None, status=UNVERIFIED, note=unverified))
            continue
        # NOTE: only stored amounts in the settlement's currency are summed, so an order stored in
        # another currency shows as a difference of its whole amount.
        totals = {ORDER_TRANSACTION: line_totals, REFUND_TRANSACTION: refund_totals, FEES: fee_totals}[transaction]
        expected = totals.get((account, order_id, currency), 0)
        results.append(SettlementOrderResult(**common, expected=expected,
                                             status=MATCHED if expected == found else MISMATCHED))
    return results


def settlement_order_exception(result: SettlementOrderResult, routing: Routing) -> dict:
    found = format_minor(result.found, result.currency)
    currency = result.currency
    details = {"settlement": result.settlement_id, "order": result.order_id, "currency": currency,
               "found": found, "rows": result.row_count, "transaction": result.transaction}

    if result.status == NOT_STORED:
        reason = (f"Amazon settlement {result.settlement_id} pays order {result.order_id} ({found} {currency} "
                  f"principal in {result.row_count} {result.transaction} rows), but the order is not stored in the "
                  "ledger. Fix: load the order with getOrder and its items with getOrderItems, then run the "
                  "reconciliation again")
        return exception_row(
            routing, UNMAPPED, system="amazon", account=result.account, entity="orders", record_id=result.order_id,
            partition_key=result.partition_key, rule=ORDER_NOT_STORED, field="order-id", value=result.order_id,
            reason=reason, fingerprint_extra=(result.settlement_id, result.transaction), details=details)

    expected = format_minor(result.expected, currency)
    difference = format_minor(result.difference, currency)
    if result.transaction == REFUND_TRANSACTION:
        rule, field = REFUND_DIFFERS, "refunds"
        comparison = (f"expected {expected} {currency} refunded (the order's stored refunds), "
                      f"found {found} {currency}")
        settlement_part = "refunded"
        fix = "load the order's missing or corrected refunds (amazon/financial_events)"
    elif result.transaction == FEES:
        rule, field = FEES_DIFFER, "fees"
        comparison = (f"expected {expected} {currency} (the item fees of the order's shipment events), "
                      f"found {found} {currency}")
        settlement_part = "item fees"
        fix = "load the order's financial events again (amazon/financial_events)"
    else:
        rule, field = PRINCIPAL_DIFFERS, "amount"
        comparison = (f"expected {expected} {currency} (the sum of the order's stored line totals), "
                      f"found {found} {currency}")
        settlement_part = "principal"
        fix = "load the order's corrected items with getOrderItems"
    reason = (f"Amazon settlement {result.settlement_id}, order {result.order_id}: {comparison} {settlement_part} "
              f"in its {result.row_count} settlement rows, a difference of {difference} {currency}. Fix: {fix} and run "
              "the reconciliation again. If the ledger is right, raise the difference with Amazon")
    # As for payouts, the sums are part of the fingerprint so that a changed difference replaces the exception.
    return exception_row(
        routing, KIND, system="amazon", account=result.account, entity="orders", record_id=result.order_id,
        partition_key=result.partition_key, rule=rule, field=field, value=expected, reason=reason,
        fingerprint_extra=(result.settlement_id, str(result.expected), str(result.found)),
        details={**details, "expected": expected, "difference": difference})
