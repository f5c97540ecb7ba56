"""Problems only visible across stored records, found by scanning the ledger.

`duplicate_record`: one order stored under two source IDs (the same order number in one
account), as when a store migration or a reimport gives orders new IDs.

`ambiguous_approval`: money whose state contradicts the order's, so someone must decide what
happens to it.
- A payment authorized but not captured after `capture_limit` (Stripe charges with
  `captured: false`; Shopify authorizations without a capture on the same order). Card
  authorizations lapse after about a week, and the order then ships unpaid or not at all.
- A cancelled Shopify order whose captured money was not refunded in full.
"""

import os
from datetime import timedelta

import pandas as pd

from meshline_pipelines.ledger import Ledger
from meshline_pipelines.ledger.store import utc_now
from meshline_pipelines.record_issues import exception_row
from meshline_pipelines.routing import Routing

CAPTURE_LIMIT_ENV = "MESHLINE_CAPTURE_LIMIT_DAYS"
# Stripe's uncaptured charges expire after seven days, and most card authorizations lapse about then.
DEFAULT_CAPTURE_LIMIT_DAYS = 7


def capture_limit() -> timedelta:
    raw = os.environ.get(CAPTURE_LIMIT_ENV)
    if raw is None:
        return timedelta(days=DEFAULT_CAPTURE_LIMIT_DAYS)
    try:
        days = float(raw)
    except ValueError:
        raise ValueError(f"{CAPTURE_LIMIT_ENV}={raw!r} is not a number of days: set it to, for example, 7") from None
    return timedelta(days=days)


def uncaptured_authorizations(payments: pd.DataFrame, routing: Routing, now, limit: timedelta) -> list[dict]:
    """Authorized payments without a capture after `limit`."""
    cutoff = pd.Timestamp(now) - limit
    found = []

    stripe = payments[(payments["system"] == "stripe") & (payments["kind"] == "charge")
                      & (payments["status"] == "succeeded") & (payments["captured"] == False)  # noqa: E712
                      & (payments["created_at"] < cutoff)]
    for row in stripe.itertuples():
        found.append(exception_row(
            routing, "ambiguous_approval", system="stripe", account=row.account, entity="payments",
            record_id=row.source_id,
            partition_key=row.partition_key, rule="payments.captured:capture_overdue", field="captured", value="false",
            reason=f"Stripe charge {row.source_id} (order {row.order_source_id or 'unknown'}) was authorized on "
                   f"{row.created_at:%Y-%m-%d} and is still not captured after {limit.days} days. Fix: capture it in "
                   "Stripe if the order ships, or cancel the payment intent and the order",
            details={"order_source_id": row.order_source_id, "created_at": row.created_at.isoformat()}))

    shopify = payments[payments["system"] == "shopify"]
    captured_orders = set(shopify.loc[shopify["kind"].isin(["capture", "sale"]) & (shopify["status"] == "success"),
                                      "order_source_id"].dropna())
    waiting = shopify[(shopify["kind"] == "authorization") & (shopify["status"] == "success")
                      & ~shopify["order_source_id"].isin(captured_orders) & (shopify["created_at"] < cutoff)]
    for row in waiting.itertuples():
        found.append(exception_row(
            routing, "ambiguous_approval", system="shopify", account=row.account, entity="payments",
            record_id=row.source_id,
            partition_key=row.partition_key, rule="payments.kind:authorization_not_captured", field="kind",
            value="authorization",
            reason=f"Shopify authorization {row.source_id} on order {row.order_source_id} from "
                   f"{row.created_at:%Y-%m-%d} has no capture after {limit.days} days. Fix: capture the payment in "
                   "Shopify if the order ships, or void it and cancel the order",
            details={"order_source_id": row.order_source_id, "created_at": row.created_at.isoformat()}))
    return found


def cancelled_but_charged(orders: pd.DataFrame, payments: pd.DataFrame, refunds: pd.DataFrame,
                          routing: Routing) -> list[dict]:
    """Cancelled Shopify orders whose captured money is more than what was refunded."""
    shopify_payments = payments[(payments["system"] == "shopify") & payments["kind"].isin(["capture", "sale"])
                                & (payments["status"] == "success")]
    captured = shopify_payments.groupby(["account", "order_source_id"])["amount"].sum()
    shopify_refunds = refunds[refunds["system"] == "shopify"]
    refunded = shopify_refunds.groupby(["account", "order_source_id"])["amount"].sum()

    found = []
    cancelled = orders[(orders["system"] == "shopify") & orders["cancelled_at"].notna()]
    for row in cancelled.itertuples():
        key = (row.account, row.source_id)
        unrefunded = int(captured.get(key, 0)) - int(refunded.get(key, 0))
        if unrefunded <= 0:
            continue
        found.append(exception_row(
            routing, "ambiguous_approval", system="shopify", account=row.account, entity="orders",
            record_id=row.source_id,
            partition_key=row.partition_key, rule="orders.cancelled_at:charged_not_refunded", field="cancelled_at",
            value=row.cancelled_at.isoformat(),
            reason=f"Shopify order {row.order_number or row.source_id} was cancelled on {row.cancelled_at:%Y-%m-%d} "
                   f"but {unrefunded} minor units of {row.total_currency} captured on it were not refunded. Fix: refund "
                   "the payment in Shopify, or restore the order if it should ship",
            details={"captured_minor": int(captured.get(key, 0)), "refunded_minor": int(refunded.get(key, 0))}))
    return found


def orders_under_two_ids(orders: pd.DataFrame, routing: Routing) -> list[dict]:
    """Orders of one account that share an order number but not a source ID: one sale stored twice."""
    numbered = orders[orders["order_number"].notna()]
    groups = numbered.groupby(["system", "account", "order_number"])["source_id"].nunique()
    found = []
    for (system, account, order_number), count in groups[groups > 1].items():
        twins = numbered[(numbered["system"] == system) & (numbered["account"] == account)
                         & (numbered["order_number"] == order_number)].sort_values("source_id")
        ids = twins["source_id"].tolist()
        for row in twins.iloc[1:].itertuples():
            found.append(exception_row(
                routing, "duplicate_record", system=system, account=account, entity="orders",
                record_id=row.source_id, partition_key=row.partition_key,
                rule="orders.order_number:same_number_other_id", field="order_number", value=order_number,
                reason=f"{system.capitalize()} order number {order_number} is stored under {count} IDs "
                       f"({', '.join(ids)}). Fix: decide in {system.capitalize()} which order is the sale, "
                       "cancel the other there, then close this exception",
                details={"source_ids": ids}))
    return found


def detect(ledger: Ledger, routing: Routing, *, now=None, run_id: str | None = None) -> dict[str, int]:
    """Run every cross-record detector and open its exceptions; return how many were opened, seen again, reopened."""
    now = now or utc_now()
    payments = ledger.read_table("payments")
    found = uncaptured_authorizations(payments, routing, now, capture_limit())
    orders = ledger.read_table("orders")
    found += cancelled_but_charged(orders, payments, ledger.read_table("refunds"), routing)
    found += orders_under_two_ids(orders, routing)
    return ledger.open_exceptions(pd.DataFrame(found), run_id=run_id) if found else {"opened": 0, "seen_again": 0,
                                                                                        "reopened": 0}
