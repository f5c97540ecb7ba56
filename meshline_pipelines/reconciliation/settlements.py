"""Each Amazon settlement against the orders it pays, from the settlement report's raw rows.

The settlement flat file (GET_V2_SETTLEMENT_REPORT_DATA_FLAT_FILE) names a row's kind in
`transaction-type` (`Order`, `Refund`) and its charge in `price-type`. `Principal` under
`price-amount` is the item price, compared with the sum of the order's stored line totals.
Refunded principal is compared with the order's stored refunds. A difference is a
`reconciliation_mismatch` on the order, and an order the ledger does not hold is an
`unmapped_reference`. Item fees are summed per settlement for the summary only.
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
PRINCIPAL = "Principal"
# NOTE: item fees (commissions, FBA fees) are summed per settlement for the summary but never
# compared, because the ledger stores no fee records for Amazon orders. Shipment, order and other
# fee columns are not part of that sum.
ITEM_FEE_COLUMN = "item-related-fee-amount"
PRINCIPAL_DIFFERS = "orders.amount:settlement_principal_differs"
REFUND_DIFFERS = "orders.refunds:settlement_refund_differs"
ORDER_NOT_STORED = "payout_lines.order_source_id:order_not_stored"
UNMAPPED = "unmapped_reference"
NOT_STORED = "not_stored"
ORDER_RULES = (PRINCIPAL_DIFFERS, REFUND_DIFFERS, ORDER_NOT_STORED)


@dataclass(frozen=True)
class SettlementOrderResult:
    """One order's principal (or refunded principal) in one Amazon settlement, compared with the ledger.

    `expected` is the ledger's amount: the order's stored line totals, or its stored refunds for a
    refund. `found` is the settlement's amount, with a refund counted as a positive sum. Both are minor
    units of `currency`.
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
    """Principal rows of Amazon settlements, the item fees of each settlement, and a count of unread lines.

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
    """Read the price and fee columns of every stored Amazon settlement row from its raw report row.

    The canonical payout line sums all amount columns of a row into `amount`. So the principal is
    read from the raw row whose content hash equals the line's version, which is the row that was stored.
    """
    amazon = lines[(lines["system"] == "amazon") & lines["payout_source_id"].notna()]
    empty = pd.DataFrame(columns=["account", "settlement_id", "order_id", "transaction", "price_type", "currency",
                                  "principal", "partition_key"])
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
    price = decimal_to_minor(_payload_field(payloads, "price-amount"), currency).minor
    fees = decimal_to_minor(_payload_field(payloads, ITEM_FEE_COLUMN), currency).minor
    frame = pd.DataFrame({
        "account": joined["account"], "settlement_id": joined["payout_source_id"].astype("string"),
        "order_id": joined["order_source_id"].astype("string"),
        "transaction": _payload_field(payloads, "transaction-type"),
        "price_type": _payload_field(payloads, "price-type"), "currency": currency, "price": price, "fees": fees,
    })

    settlement_partitions = payouts[payouts["system"] == "amazon"].set_index(["account", "source_id"])["partition_key"]
    item_fees = {}
    for (account, settlement_id), group in frame.groupby(["account", "settlement_id"]):
        item_fees[(account, settlement_id)] = (int(group["fees"].fillna(0).sum()), str(group["currency"].iloc[0]))

    principal = frame[frame["price_type"].eq(PRINCIPAL).fillna(False) & frame["order_id"].notna()].copy()
    principal["principal"] = principal["price"]
    principal["partition_key"] = [settlement_partitions.get((account, settlement_id))
                                  for account, settlement_id in zip(principal["account"], principal["settlement_id"])]
    return SettlementRows(rows=principal[empty.columns].reset_index(drop=True), item_fees=item_fees, unread=unread)


def _stored_totals(frame: pd.DataFrame, key: str, amount: str) -> dict[tuple[str, str, str], int]:
    """Sum `amount` per (account, `key`, currency) over stored Amazon rows."""
    amazon = frame[(frame["system"] == "amazon") & frame[key].notna()]
    sums = amazon.groupby(["account", key, "currency"])[amount].sum(min_count=1)
    return {index: int(value) for index, value in sums.items() if pd.notna(value)}


def compare_settlement_orders(rows: pd.DataFrame, orders: pd.DataFrame, order_lines: pd.DataFrame,
                              refunds: pd.DataFrame) -> list[SettlementOrderResult]:
    """Compare each settlement's principal per order, and its refunded principal, with the stored order."""
    amazon_orders = orders[orders["system"] == "amazon"]
    stored_orders = set(zip(amazon_orders["account"], amazon_orders["source_id"]))
    orders_with_lines = set(zip(order_lines.loc[order_lines["system"] == "amazon", "account"],
                                order_lines.loc[order_lines["system"] == "amazon", "order_source_id"]))
    line_totals = _stored_totals(order_lines, "order_source_id", "line_total_amount")
    refund_totals = _stored_totals(refunds, "order_source_id", "amount")
    accounts_with_refunds = set(refunds.loc[refunds["system"] == "amazon", "account"])

    compared = rows[rows["transaction"].isin([ORDER_TRANSACTION, REFUND_TRANSACTION])]
    results = []
    for (account, settlement_id, order_id, transaction, currency), group in compared.groupby(
            ["account", "settlement_id", "order_id", "transaction", "currency"], sort=True):
        found = int(group["principal"].fillna(0).sum())
        if transaction == REFUND_TRANSACTION:
            found = -found
        common = {"account": account, "settlement_id": settlement_id, "order_id": order_id,
                  "transaction": transaction, "currency": currency, "found": found, "row_count": len(group),
                  "partition_key": group["partition_key"].iloc[0]}
        if (account, order_id) not in stored_orders:
            results.append(SettlementOrderResult(**common, expected=None, status=NOT_STORED,
                                                 note="order not stored in the ledger"))
        elif transaction == ORDER_TRANSACTION and (account, order_id) not in orders_with_lines:
            results.append(SettlementOrderResult(**common, expected=None, status=UNVERIFIED,
                                                 note="no order items stored for this order"))
        elif transaction == REFUND_TRANSACTION and account not in accounts_with_refunds:
            # NOTE: no Amazon stream loads refunds yet, so refund rows stay unverified until one
            # does. Stored refunds are compared only for accounts that have any.
            results.append(SettlementOrderResult(**common, expected=None, status=UNVERIFIED,
                                                 note="no Amazon refunds stored for this account"))
        else:
            # NOTE: only stored amounts in the settlement's currency are summed, so an order stored in
            # another currency shows as a difference of its whole principal.
            totals = line_totals if transaction == ORDER_TRANSACTION else refund_totals
            expected = totals.get((account, order_id, currency), 0)
            status = MATCHED if expected == found else MISMATCHED
            results.append(SettlementOrderResult(**common, expected=expected, status=status))
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
        settlement_part = "refunded principal"
        fix = "load the order's missing or corrected refunds"
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
