"""Payout reconciliation: each payout's amount against the net of the balance lines it paid out.

Stripe and Shopify Payments payouts are compared with the sum of their balance transactions'
net amounts (charges, refunds, fees, adjustments, disputes, reserves), leaving out the payout's
own `payout` transaction. Amazon settlements are compared with the sum of their report rows.
A difference is a `reconciliation_mismatch` exception on the payout. A captured payment whose
balance transaction is in no payout after `MESHLINE_PAYOUT_LAG_DAYS` is one on the payment.

Each Amazon settlement is also compared with the orders it pays: the principal of each order's rows
against the order's stored line totals, what its refund rows give back against the order's stored
refunds, and its item fees against the fees of the order's stored shipment events. A difference is
a `reconciliation_mismatch` on the order, and an order the ledger does not hold is an
`unmapped_reference`.

Stripe balance transactions name their payout only when they were listed per payout (`?payout=`):
by the live client, or in a file named `balance_transactions-po_<id>.json`. Other files of
`/v1/balance_transactions` do not. Stripe's payout reconciliation guide
(https://docs.stripe.com/payouts/reconciliation) gives no rule for rebuilding an automatic payout
from `available_on`, and states that Stripe cannot identify the transactions of a manual payout.
So a Stripe payout is compared only with lines that carry its ID, and payouts or charges without
such lines are reported as "lines not attributable", never guessed.

When a later delivery changes a line (a fee filled in later), the next run compares again and
closes the exceptions whose difference is gone or has changed.
"""

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import dagster as dg
import pandas as pd

from meshline_pipelines import settings
from meshline_pipelines.ledger import Ledger
from meshline_pipelines.ledger.store import utc_now
from meshline_pipelines.money import format_minor
from meshline_pipelines.queue import ACTIVE, close_resolved_exception
from meshline_pipelines.record_issues import exception_row
from meshline_pipelines.reconciliation.settlements import (
    MATCHED, MISMATCHED, NOT_STORED, ORDER_RULES, UNMAPPED, UNVERIFIED, SettlementOrderResult, amazon_settlement_rows,
    compare_settlement_orders, settlement_order_exception,
)
from meshline_pipelines.routing import Routing

log = logging.getLogger(__name__)

KIND = "reconciliation_mismatch"
LAG_ENV = "MESHLINE_PAYOUT_LAG_DAYS"
MISMATCH_MAX_ENV = "MESHLINE_PAYOUT_MISMATCH_MAX"
# An estimate: a week is longer than the daily payout schedules of Stripe and Shopify Payments
# usually take. Accounts with weekly or monthly payouts need a longer lag.
DEFAULT_LAG_DAYS = 7

PAYOUT_SYSTEMS = ("stripe", "shopify", "amazon")
LINES_DIFFER = "payouts.amount:lines_differ"
SETTLEMENT_ROWS_DIFFER = "payouts.amount:settlement_rows_differ"
NOT_PAID_OUT = "payments.amount:paid_not_paid_out"
PAYOUT_RULES = (LINES_DIFFER, SETTLEMENT_ROWS_DIFFER, NOT_PAID_OUT)

# Balance transaction types of a captured charge, in Stripe (`charge`, `payment`) and Shopify (`charge`).
CHARGE_LINE_TYPES = ("charge", "payment")
SHOPIFY_PAYMENTS_GATEWAY = "shopify_payments"
SYSTEM_NAMES = {"stripe": "Stripe", "shopify": "Shopify Payments", "amazon": "Amazon"}


RULES = PAYOUT_RULES + ORDER_RULES


def payout_lag() -> timedelta:
    raw = os.environ.get(LAG_ENV)
    if raw is None:
        return timedelta(days=DEFAULT_LAG_DAYS)
    try:
        days = float(raw)
    except ValueError:
        raise ValueError(f"{LAG_ENV}={raw!r} is not a number of days: set it to, for example, 7") from None
    if days < 0:
        raise ValueError(f"{LAG_ENV}={raw!r} is negative: set a number of days such as 7")
    return timedelta(days=days)


def mismatch_max() -> float:
    return settings.share(MISMATCH_MAX_ENV, 0.0)


@dataclass(frozen=True)
class PayoutResult:
    """One payout compared with its lines. Amounts are minor units of `currency`."""

    system: str
    account: str
    payout_id: str
    currency: str
    expected: int
    found: int
    line_count: int
    status: str
    payout_date: pd.Timestamp | None
    partition_key: str | None
    note: str | None = None
    other_currency_lines: int = 0

    @property
    def difference(self) -> int:
        """The payout amount minus its lines' sum: positive when the payout paid more than its lines explain."""
        return self.expected - self.found


@dataclass
class PayoutReconciliation:
    """The outcome of one reconciliation run."""

    payouts: list[PayoutResult]
    not_paid_out: list[dict] = field(default_factory=list)
    unattributable_payments: int = 0
    exceptions: dict[str, int] = field(default_factory=dict)
    closed: list[int] = field(default_factory=list)
    settlement_orders: list["SettlementOrderResult"] = field(default_factory=list)
    # Item-related fees (commissions, FBA fees) of each Amazon settlement, keyed by (account, settlement ID),
    # as (minor units, currency). Fees are negative, as the report lists them.
    settlement_item_fees: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    unread_settlement_rows: int = 0

    def _count(self, status: str) -> int:
        return sum(result.status == status for result in self.payouts)

    @property
    def checked(self) -> int:
        """Payouts compared with their lines; unverified payouts are not counted."""
        return self._count(MATCHED) + self._count(MISMATCHED)

    @property
    def matched(self) -> int:
        return self._count(MATCHED)

    @property
    def mismatched(self) -> int:
        return self._count(MISMATCHED)

    @property
    def unverified(self) -> int:
        return self._count(UNVERIFIED)

    def total_difference(self) -> dict[str, str]:
        """Sum of the absolute differences of mismatched payouts per currency, as exact decimals."""
        totals: dict[str, int] = {}
        for result in self.payouts:
            if result.status == MISMATCHED:
                totals[result.currency] = totals.get(result.currency, 0) + abs(result.difference)
        return {currency: format_minor(total, currency) for currency, total in sorted(totals.items())}

    def settlement_order_counts(self) -> dict[str, int]:
        """Count the Amazon settlement orders and refunds per status: matched, mismatched, unverified, not_stored."""
        counts = {MATCHED: 0, MISMATCHED: 0, UNVERIFIED: 0, NOT_STORED: 0}
        for result in self.settlement_orders:
            counts[result.status] += 1
        return counts

    def item_fees(self) -> dict[str, str]:
        """Return the item-related fees of each Amazon settlement as an exact decimal and currency ("-3.22 USD")."""
        return {settlement_id: f"{format_minor(amount, currency)} {currency}"
                for (_, settlement_id), (amount, currency) in sorted(self.settlement_item_fees.items())}

    def oldest_unreconciled(self) -> PayoutResult | None:
        """Return the mismatched or unverified payout with the earliest payout date."""
        waiting = [result for result in self.payouts if result.status != MATCHED and result.payout_date is not None]
        return min(waiting, key=lambda result: result.payout_date, default=None)


def _line_net(lines: pd.DataFrame) -> pd.Series:
    """Net of each line: `net_amount`, else amount minus fee (Amazon rows carry only an amount)."""
    fallback = lines["amount"].fillna(0) - lines["fee_amount"].fillna(0)
    return lines["net_amount"].fillna(fallback).astype("Int64")


def _is_own_payout_line(lines: pd.DataFrame) -> pd.Series:
    # NOTE: every `payout` line under a payout is taken to be the payout's own transfer and left out.
    # Stripe lists that transaction with the others; Shopify's listing was not checked for it.
    return lines["type"].astype("string").str.lower().eq("payout").fillna(False)


def _attributed_lines(lines: pd.DataFrame) -> pd.DataFrame:
    attributed = lines[lines["payout_source_id"].notna() & ~_is_own_payout_line(lines)].copy()
    attributed["net"] = _line_net(attributed)
    return attributed


def compare_payouts(payouts: pd.DataFrame, lines: pd.DataFrame) -> list[PayoutResult]:
    """Compare each payout's amount with the net of its lines in the payout's currency."""
    attributed = _attributed_lines(lines)
    by_payout = {key: group for key, group in attributed.groupby(["system", "account", "payout_source_id"])}
    results = []
    for payout in payouts[payouts["system"].isin(PAYOUT_SYSTEMS)].itertuples():
        key = (payout.system, payout.account, payout.source_id)
        own = by_payout.get(key)
        payout_date = payout.payout_date if pd.notna(payout.payout_date) else (
            payout.created_at if pd.notna(payout.created_at) else None)
        common = {"system": payout.system, "account": payout.account, "payout_id": payout.source_id,
                  "currency": payout.currency, "expected": int(payout.amount), "payout_date": payout_date,
                  "partition_key": payout.partition_key}
        if own is None or own.empty:
            note = "no lines stored for this payout"
            if payout.system == "stripe":
                note = ("lines not attributable: no stored Stripe balance transaction carries this payout's ID "
                        "(save GET /v1/balance_transactions?payout=<id> as balance_transactions-<id>.json)")
            results.append(PayoutResult(**common, found=0, line_count=0, status=UNVERIFIED, note=note))
            continue
        same_currency = own[own["currency"] == payout.currency]
        others = len(own) - len(same_currency)
        found = int(same_currency["net"].sum())
        status = MATCHED if found == int(payout.amount) and others == 0 else MISMATCHED
        results.append(PayoutResult(**common, found=found, line_count=len(own), status=status,
                                    other_currency_lines=others))
    return results


def _payout_exception(result: PayoutResult, routing: Routing) -> dict:
    rule = SETTLEMENT_ROWS_DIFFER if result.system == "amazon" else LINES_DIFFER

    expected = format_minor(result.expected, result.currency)
    found = format_minor(result.found, result.currency)
    difference = format_minor(result.difference, result.currency)
    name = SYSTEM_NAMES[result.system]
    what = "settlement" if result.system == "amazon" else "payout"
    lines = "report rows" if result.system == "amazon" else "balance transactions"
    date = f" of {result.payout_date:%Y-%m-%d}" if result.payout_date is not None else ""

    reason = (f"{name} {what} {result.payout_id}{date}: expected {expected} {result.currency} (the {what} amount), "
              f"found {found} {result.currency} in its {result.line_count} {lines}, a difference of "
              f"{difference} {result.currency}.")
    if result.other_currency_lines:
        reason += f" {result.other_currency_lines} of its lines are in another currency and were not summed."
    reason += (f" Fix: load the {what}'s missing or corrected {lines} and run the reconciliation again; if they "
               f"are complete, raise the difference with {name}")

    # The sums are part of the fingerprint, so a changed difference opens a new exception whose
    # reason states it, and the run closes the one it replaces.
    return exception_row(
        routing, KIND, system=result.system, account=result.account, entity="payouts", record_id=result.payout_id,
        partition_key=result.partition_key, rule=rule, field="amount", value=expected, reason=reason,
        fingerprint_extra=(str(result.expected), str(result.found), str(result.other_currency_lines)),
        details={"currency": result.currency, "expected": expected, "found": found, "difference": difference,
                 "lines": result.line_count, "other_currency_lines": result.other_currency_lines})



def _extra_field(extra: pd.Series, name: str) -> pd.Series:
    def read(text):
        if not isinstance(text, str):
            return None
        value = json.loads(text).get(name)
        return None if value is None else str(value)
    return extra.map(read).astype("string")


def _paid_payments(payments: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Captured Stripe charges and Shopify Payments sales and captures created before `cutoff`."""
    stripe = ((payments["system"] == "stripe") & (payments["kind"] == "charge")
              & (payments["status"] == "succeeded") & payments["captured"].eq(True).fillna(False))
    shopify = ((payments["system"] == "shopify") & payments["kind"].isin(["sale", "capture"])
               & (payments["status"] == "success") & (payments["gateway"] == SHOPIFY_PAYMENTS_GATEWAY))
    return payments[(stripe | shopify) & (payments["created_at"] < cutoff)]


def _charge_line_keys(lines: pd.DataFrame) -> pd.DataFrame:
    """Return the payment of each charge line, with the line's payout.

    Stripe names the charge in `source`, Shopify the order transaction in `source_order_transaction_id`.
    """
    charges = lines[lines["type"].isin(CHARGE_LINE_TYPES)]
    shopify = charges["system"] == "shopify"
    payment_id = charges["source_object_id"].astype("string").copy()
    payment_id[shopify] = _extra_field(charges.loc[shopify, "extra"], "source_order_transaction_id")
    return pd.DataFrame({"system": charges["system"], "account": charges["account"], "payment_id": payment_id,
                         "payout_source_id": charges["payout_source_id"]})


def payments_not_paid_out(payments: pd.DataFrame, lines: pd.DataFrame, *, now, lag: timedelta,
                          unverified: list[PayoutResult] = ()) -> tuple[list[dict], list[tuple[str, str, str]], int]:
    """Return the paid payments in no payout, the payments checked, and how many could not be checked.

    A Stripe account's charges are checked only when the account has lines read per payout. Without
    them no stored line can name a payout, so the charge counts as not attributable. A payment with
    an `unverified` payout (one whose lines were not read) of its account dated after it is not
    attributable either, because that payout may hold it.
    """
    paid = _paid_payments(payments, pd.Timestamp(now) - lag)
    keys = _charge_line_keys(lines)
    in_payout = set(keys[keys["payout_source_id"].notna()][["system", "account", "payment_id"]]
                    .itertuples(index=False, name=None))
    stripe_lines = lines[lines["system"] == "stripe"]
    stripe_attributed_accounts = set(stripe_lines.loc[stripe_lines["payout_source_id"].notna(), "account"])
    last_unread_payout: dict[tuple[str, str], pd.Timestamp] = {}
    for result in unverified:
        account = (result.system, result.account)
        if result.payout_date is not None and (account not in last_unread_payout
                                               or result.payout_date > last_unread_payout[account]):
            last_unread_payout[account] = result.payout_date

    found, checked, unattributable = [], [], 0
    for payment in paid.itertuples():
        key = (payment.system, payment.account, payment.source_id)
        unread_after = last_unread_payout.get((payment.system, payment.account))
        if key in in_payout:
            checked.append(key)
            continue
        if (payment.system == "stripe" and payment.account not in stripe_attributed_accounts) or (
                unread_after is not None and unread_after >= payment.created_at):
            unattributable += 1
            continue
        checked.append(key)
        found.append(payment._asdict())
    return found, checked, unattributable


def _not_paid_out_exception(payment: dict, routing: Routing, lag: timedelta) -> dict:
    amount = format_minor(payment["amount"], payment["currency"])
    name = "Stripe charge" if payment["system"] == "stripe" else "Shopify Payments transaction"
    order = payment["order_source_id"] if pd.notna(payment["order_source_id"]) else "unknown"
    return exception_row(
        routing, KIND, system=payment["system"], account=payment["account"], entity="payments",
        record_id=payment["source_id"], partition_key=payment["partition_key"], rule=NOT_PAID_OUT, field="amount",
        value=amount,
        reason=f"{name} {payment['source_id']} (order {order}) of {amount} {payment['currency']} was paid on "
               f"{payment['created_at']:%Y-%m-%d} but never paid out: its balance transaction is in no payout "
               f"after {lag.days} days. Fix: load the payouts of that period; if the charge is in none, "
               "ask the payment provider why it was held",
        details={"currency": payment["currency"], "amount": amount, "created_at": payment["created_at"].isoformat(),
                 "lag_days": lag / timedelta(days=1)})


def close_resolved(ledger: Ledger, found: list[dict], checked: set[tuple[str, str, str, str]]) -> list[int]:
    """Close active payout exceptions of records checked this run whose finding is gone or has changed.

    Approved and rejected exceptions stay as decided: those are an owner's decisions.
    """
    stored = ledger.read_exceptions()
    if stored.empty:
        return []
    current = {row["fingerprint"] for row in found}
    current_by_record = {(row["system"], row["account"], row["entity"], row["record_id"]): row for row in found}
    stale = stored[stored["kind"].isin([KIND, UNMAPPED]) & stored["rule"].isin(RULES)
                   & stored["status"].isin(ACTIVE)
                   & ~stored["fingerprint"].isin(current)]
    closed = []
    for row in stale.itertuples():
        record = (row.system, row.account, row.entity, row.record_id)
        if record not in checked:
            continue
        replacement = current_by_record.get(record)
        if replacement is not None:
            reason = "replaced by an exception with the current difference"
        elif row.entity == "payouts":
            reason = "the payout now matches its lines"
        elif row.entity == "orders":
            reason = "the order is now stored and matches its settlement rows"
        else:
            reason = "the payment is now in a payout"
        if close_resolved_exception(ledger, int(row.id), reason):
            closed.append(int(row.id))
    return closed


def reconcile_payouts(ledger: Ledger, routing: Routing, *, now: datetime | None = None) -> PayoutReconciliation:
    """Compare every payout with its lines and find paid payments in no payout; open and close exceptions."""
    now = now or utc_now()
    lag = payout_lag()
    lines = ledger.read_table("payout_lines")
    payouts = ledger.read_table("payouts")
    results = compare_payouts(payouts, lines)
    not_paid_out, payments_checked, unattributable = payments_not_paid_out(
        ledger.read_table("payments"), lines, now=now, lag=lag,
        unverified=[result for result in results if result.status == UNVERIFIED])
    settlement = amazon_settlement_rows(ledger, lines, payouts)
    settlement_orders = compare_settlement_orders(
        settlement.rows, ledger.read_table("orders", system="amazon"),
        ledger.read_table("order_lines", system="amazon"), ledger.read_table("refunds", system="amazon"), lines)

    found = [_payout_exception(result, routing) for result in results if result.status == MISMATCHED]
    found += [_not_paid_out_exception(payment, routing, lag) for payment in not_paid_out]
    found += [settlement_order_exception(result, routing) for result in settlement_orders
              if result.status in (MISMATCHED, NOT_STORED)]
    counts = ledger.open_exceptions(pd.DataFrame(found), run_id=None) if found else {
        "opened": 0, "seen_again": 0, "reopened": 0}

    checked = {(result.system, result.account, "payouts", result.payout_id)
               for result in results if result.status != UNVERIFIED}
    checked |= {(system, account, "payments", source_id) for system, account, source_id in payments_checked}
    checked |= {("amazon", result.account, "orders", result.order_id)
                for result in settlement_orders if result.status != UNVERIFIED}
    closed = close_resolved(ledger, found, checked)
    outcome = PayoutReconciliation(
        payouts=results, not_paid_out=not_paid_out, unattributable_payments=unattributable, exceptions=counts,
        closed=closed, settlement_orders=settlement_orders, settlement_item_fees=settlement.item_fees,
        unread_settlement_rows=settlement.unread)
    log.info("payout reconciliation: %d payouts matched, %d mismatched, %d unverified; %d payments not paid out; "
             "Amazon settlement orders %s, %d settlement rows without their raw row; exceptions %s, %d closed",
             outcome.matched, outcome.mismatched, outcome.unverified, len(not_paid_out),
             outcome.settlement_order_counts(), settlement.unread, counts, len(closed))
    return outcome


PAYOUTS = dg.AssetKey(["reconciliation", "payouts"])
CHECK_NAME = "payouts_reconciled"


def reconciliation_check(outcome: PayoutReconciliation) -> dg.AssetCheckResult:
    """Pass when nothing differs; fail with ERROR when the share of mismatched payouts passes the maximum."""
    share = outcome.mismatched / outcome.checked if outcome.checked else 0.0
    limit = mismatch_max()
    orders = outcome.settlement_order_counts()
    passed = (outcome.mismatched == 0 and not outcome.not_paid_out and orders[MISMATCHED] == 0
              and orders[NOT_STORED] == 0)
    description = None
    if not passed:
        description = (f"{outcome.mismatched} of {outcome.checked} payouts differ from their lines ({share:.1%}, "
                       f"maximum {limit:.0%}) and {len(outcome.not_paid_out)} paid payments are in no payout. "
                       f"In Amazon settlements, {orders[MISMATCHED]} orders or refunds differ from the ledger and "
                       f"{orders[NOT_STORED]} orders are not stored. "
                       "`meshline exceptions list --kind reconciliation_mismatch` and `--kind unmapped_reference` "
                       "list them")
    return dg.AssetCheckResult(
        asset_key=PAYOUTS, check_name=CHECK_NAME, passed=passed,
        severity=dg.AssetCheckSeverity.ERROR if share > limit else dg.AssetCheckSeverity.WARN,
        metadata={"checked": outcome.checked, "mismatched": outcome.mismatched, "share": round(share, 4),
                  "max_share": limit, "not_paid_out": len(outcome.not_paid_out),
                  "settlement_orders_mismatched": orders[MISMATCHED],
                  "settlement_orders_not_stored": orders[NOT_STORED]},
        description=description,
    )


def _oldest_text(outcome: PayoutReconciliation) -> str:
    oldest = outcome.oldest_unreconciled()
    if oldest is None:
        return "none"
    return f"{oldest.payout_date:%Y-%m-%d}: {SYSTEM_NAMES[oldest.system]} payout {oldest.payout_id} ({oldest.status})"


def payout_reconciliation_asset() -> dg.AssetsDefinition:
    """Build the `reconciliation/payouts` asset with its blocking `payouts_reconciled` check."""

    @dg.asset(key=PAYOUTS, group_name="reconciliation", kinds={"meshline"},
              required_resource_keys={"ledger", "routing"},
              check_specs=[dg.AssetCheckSpec(CHECK_NAME, asset=PAYOUTS, blocking=True)],
              description="Stripe, Shopify Payments and Amazon payouts against the net of their lines, paid "
                          "payments in no payout after the lag, and the orders each Amazon settlement pays. "
                          "total_difference sums absolute differences.")
    def payout_reconciliation(context: dg.AssetExecutionContext):
        outcome = reconcile_payouts(context.resources.ledger.open(), context.resources.routing.load(), now=utc_now())
        yield reconciliation_check(outcome)
        yield dg.MaterializeResult(metadata={
            "payouts_checked": outcome.checked, "matched": outcome.matched, "mismatched": outcome.mismatched,
            "unverified": outcome.unverified, "not_paid_out": len(outcome.not_paid_out),
            "unattributable_payments": outcome.unattributable_payments,
            "total_difference": dg.MetadataValue.json(outcome.total_difference()),
            "oldest_unreconciled": _oldest_text(outcome), "exceptions_closed": len(outcome.closed),
            "amazon_settlement_orders": dg.MetadataValue.json(outcome.settlement_order_counts()),
            "amazon_item_fees": dg.MetadataValue.json(outcome.item_fees()),
        })

    return payout_reconciliation
