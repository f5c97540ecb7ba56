"""Payout reconciliation: payouts against the net of their lines, late lines, payments never paid out."""

import json
from datetime import datetime, timedelta, timezone

import dagster as dg
import pandas as pd

from meshline_pipelines.extract import extract_stream
from meshline_pipelines.reconciliation.payouts import (
    CHECK_NAME, MATCHED, MISMATCHED, NOT_PAID_OUT, UNVERIFIED, payout_reconciliation_asset, reconcile_payouts,
)
from meshline_pipelines.reconciliation.settlements import (
    FEES_DIFFER, NOT_STORED, ORDER_NOT_STORED, PRINCIPAL_DIFFERS, REFUND_DIFFERS,
)
from meshline_pipelines.resources import LedgerResource, RoutingResource
from meshline_pipelines.stripe.api import StripeApiClient
from meshline_pipelines_tests.amazon_finances import (
    charges, fees, financial_events_file, refund_event, refund_item, shipment_event, shipment_item,
)
from meshline_pipelines_tests.conftest import SAMPLES, drop_file
from meshline_pipelines_tests.helpers import run, stream
from meshline_pipelines_tests.stripe_mock import StripeDouble, balance_transaction, charge, payout
from meshline_pipelines_tests.stripe_mock import sample_object as stripe_sample

NOV_2 = int(datetime(2026, 11, 2, tzinfo=timezone.utc).timestamp())
NOV_3 = int(datetime(2026, 11, 3, tzinfo=timezone.utc).timestamp())


def _shopify_payout(payout_id: int, amount: str, currency: str = "USD", date: str = "2026-11-20") -> dict:
    return {"id": payout_id, "status": "paid", "date": date, "currency": currency, "amount": amount}


def _shopify_line(line_id: int, payout_id: int, type_: str, amount: str, fee: str, net: str,
                  currency: str = "USD", transaction_id: int | None = None) -> dict:
    return {"id": line_id, "type": type_, "test": False, "payout_id": payout_id, "payout_status": "paid",
            "currency": currency, "amount": amount, "fee": fee, "net": net, "source_id": line_id + 1,
            "source_type": "charge", "source_order_id": 9000 + line_id, "source_order_transaction_id": transaction_id,
            "processed_at": "2026-11-18T10:00:00-05:00", "adjustment_order_transactions": [],
            "adjustment_reason": None}


def _load_shopify(import_dir, ledger, routing, payouts: list[dict], lines: list[dict], *, partition="2026-11-24"):
    drop_file(import_dir, "shopify", "payouts.json", partition=partition,
              content=json.dumps({"payouts": payouts}).encode())
    drop_file(import_dir, "shopify", "balance_transactions.json", partition=partition,
              content=json.dumps({"transactions": lines}).encode())
    run("shopify", "payouts", import_dir, ledger, routing, partition=partition)
    run("shopify", "balance_transactions", import_dir, ledger, routing, partition=partition)


def _by_id(outcome) -> dict:
    return {result.payout_id: result for result in outcome.payouts}


def _payout_exceptions(ledger):
    stored = ledger.read_exceptions()
    return stored[stored["kind"] == "reconciliation_mismatch"].sort_values("id").reset_index(drop=True)


def test_shopify_sample_payout_differs(ledger, routing, import_dir):
    drop_file(import_dir, "shopify", "payouts.json")
    drop_file(import_dir, "shopify", "balance_transactions.json")
    run("shopify", "payouts", import_dir, ledger, routing)
    run("shopify", "balance_transactions", import_dir, ledger, routing)

    outcome = reconcile_payouts(ledger, routing)

    result = _by_id(outcome)["623721858"]
    assert result.status == MISMATCHED
    assert result.line_count == 50
    assert result.expected == 4190
    assert result.found == 92084
    assert result.difference == -87894
    # The sample lists the balance transactions of payout 623721858 only; the other seven are unverified.
    assert outcome.checked == 1
    assert outcome.unverified == 7
    assert outcome.total_difference() == {"USD": "878.94"}
    exceptions = _payout_exceptions(ledger)
    assert len(exceptions) == 1
    assert exceptions.loc[0, "record_id"] == "623721858"
    assert exceptions.loc[0, "rule"] == "payouts.amount:lines_differ"
    reason = exceptions.loc[0, "reason"]
    assert "Shopify Payments payout 623721858 of 2012-11-12" in reason
    assert "expected 41.90 USD" in reason
    assert "found 920.84 USD in its 50 balance transactions" in reason
    assert "a difference of -878.94 USD" in reason


def test_stripe_sample_lines_not_attributable(ledger, routing, import_dir):
    for name in ("payouts.json", "balance_transactions.json", "charges.json"):
        drop_file(import_dir, "stripe", name)
    for name in ("payouts", "balance_transactions", "charges"):
        run("stripe", name, import_dir, ledger, routing)

    outcome = reconcile_payouts(ledger, routing, now=datetime(2026, 11, 30, tzinfo=timezone.utc))

    result = _by_id(outcome)["po_1Pgc79B7WZ01zgkWu1KToYf4"]
    assert result.status == UNVERIFIED
    assert result.expected == 1100
    assert result.note.startswith("lines not attributable")
    assert outcome.checked == 0
    # The sample charge is not captured, so it is not a paid payment.
    assert outcome.not_paid_out == []
    assert outcome.unattributable_payments == 0
    assert _payout_exceptions(ledger).empty


STRIPE_SAMPLE_PAYOUT = "po_1Pgc79B7WZ01zgkWu1KToYf4"


def _assert_stripe_sample_difference(ledger, outcome) -> None:
    # The sample payout pays 11.00 USD; the one balance transaction listed under it nets 1.00 USD.
    result = _by_id(outcome)[STRIPE_SAMPLE_PAYOUT]
    assert result.status == MISMATCHED
    assert (result.expected, result.found, result.difference, result.line_count) == (1100, 100, 1000, 1)
    assert outcome.total_difference() == {"USD": "10.00"}
    exceptions = _payout_exceptions(ledger)
    assert exceptions["record_id"].tolist() == [STRIPE_SAMPLE_PAYOUT]
    assert "expected 11.00 USD (the payout amount), found 1.00 USD in its 1 balance transactions" \
        in exceptions.loc[0, "reason"]
    assert "a difference of 10.00 USD" in exceptions.loc[0, "reason"]


def test_stripe_sample_payout_file_differs(ledger, routing, import_dir):
    drop_file(import_dir, "stripe", "payouts.json")
    drop_file(import_dir, "stripe", f"balance_transactions-{STRIPE_SAMPLE_PAYOUT}.json",
              sample="balance_transactions.json")
    run("stripe", "payouts", import_dir, ledger, routing)
    run("stripe", "balance_transactions", import_dir, ledger, routing)

    outcome = reconcile_payouts(ledger, routing)

    _assert_stripe_sample_difference(ledger, outcome)


def test_stripe_sample_payout_listed_by_api_differs(ledger, routing):
    double = StripeDouble()
    sample_payout, sample_line = stripe_sample("payouts"), stripe_sample("balance_transactions")
    double.objects["payouts"] = [sample_payout]
    double.objects["balance_transactions"] = [sample_line]
    double.payout_of[sample_line["id"]] = STRIPE_SAMPLE_PAYOUT
    window = (datetime.fromtimestamp(sample_payout["created"] - 86400, timezone.utc),
              datetime.fromtimestamp(sample_payout["created"] + 86400, timezone.utc))
    for name in ("payouts", "balance_transactions"):
        extract_stream(stream("stripe", name), _stripe_client(double), ledger, routing,
                       since=window[0], until=window[1], lookback=timedelta(0))

    outcome = reconcile_payouts(ledger, routing)

    _assert_stripe_sample_difference(ledger, outcome)
    assert any(request.url.params.get("payout") == STRIPE_SAMPLE_PAYOUT for request in double.requests)


def test_amazon_settlement_total_differs(ledger, routing, import_dir):
    drop_file(import_dir, "amazon", "GET_V2_SETTLEMENT_REPORT_DATA_FLAT_FILE.csv")
    run("amazon", "settlements", import_dir, ledger, routing)

    outcome = reconcile_payouts(ledger, routing)

    result = _by_id(outcome)["12345678901"]
    assert result.status == MISMATCHED
    assert result.expected == 123456
    assert result.found == 1677  # one order row: principal 19.99, FBA fee -3.22
    assert result.difference == 121779
    reason = _payout_exceptions(ledger).loc[0, "reason"]
    assert reason.startswith("Amazon settlement 12345678901 of 2023-01-17: expected 1234.56 USD")
    assert "found 16.77 USD in its 1 report rows" in reason
    assert "a difference of 1217.79 USD" in reason
    assert _payout_exceptions(ledger).loc[0, "rule"] == "payouts.amount:settlement_rows_differ"


def test_generated_payout_drift_named(ledger, routing, import_dir):
    payouts = [_shopify_payout(7001, "100.00"), _shopify_payout(7002, "48.50")]
    lines = [
        _shopify_line(1, 7001, "charge", "60.00", "2.10", "57.90"),
        _shopify_line(2, 7001, "charge", "45.00", "1.40", "43.60"),
        _shopify_line(3, 7001, "refund", "-3.00", "0.00", "-3.00"),  # 57.90 + 43.60 - 3.00 = 98.50
        _shopify_line(4, 7001, "payout", "-100.00", "0.00", "-100.00"),  # the payout itself, not summed
        _shopify_line(5, 7002, "charge", "50.00", "1.50", "48.50"),
    ]
    _load_shopify(import_dir, ledger, routing, payouts, lines)

    outcome = reconcile_payouts(ledger, routing)

    results = _by_id(outcome)
    assert results["7001"].status == MISMATCHED
    assert results["7001"].found == 9850
    assert results["7001"].difference == 150
    assert results["7001"].line_count == 3
    assert results["7002"].status == MATCHED
    assert (outcome.checked, outcome.matched, outcome.mismatched) == (2, 1, 1)
    exceptions = _payout_exceptions(ledger)
    assert exceptions["record_id"].tolist() == ["7001"]
    assert "expected 100.00 USD" in exceptions.loc[0, "reason"]
    assert "found 98.50 USD" in exceptions.loc[0, "reason"]
    assert "a difference of 1.50 USD" in exceptions.loc[0, "reason"]
    assert json.loads(exceptions.loc[0, "details"])["difference"] == "1.50"


def test_rerun_same_difference_opens_nothing(ledger, routing, import_dir):
    _load_shopify(import_dir, ledger, routing, [_shopify_payout(7001, "100.00")],
                  [_shopify_line(1, 7001, "charge", "100.00", "1.50", "98.50")])

    first = reconcile_payouts(ledger, routing)
    second = reconcile_payouts(ledger, routing)

    assert first.exceptions["opened"] == 1
    assert second.exceptions == {"opened": 0, "seen_again": 1, "reopened": 0}
    assert second.closed == []
    assert len(_payout_exceptions(ledger)) == 1


def test_zero_decimal_currency_payout(ledger, routing, import_dir):
    payouts = [_shopify_payout(8001, "5000", currency="JPY")]
    lines = [_shopify_line(1, 8001, "charge", "5200", "230", "4970", currency="JPY")]
    _load_shopify(import_dir, ledger, routing, payouts, lines)

    outcome = reconcile_payouts(ledger, routing)

    result = _by_id(outcome)["8001"]
    assert result.expected == 5000
    assert result.found == 4970
    assert result.difference == 30
    assert outcome.total_difference() == {"JPY": "30"}
    reason = _payout_exceptions(ledger).loc[0, "reason"]
    assert "expected 5000 JPY" in reason
    assert "found 4970 JPY" in reason
    assert "a difference of 30 JPY" in reason


def test_late_fee_closes_mismatch(ledger, routing, import_dir):
    payouts = [_shopify_payout(7101, "97.10")]
    without_fee = [_shopify_line(1, 7101, "charge", "100.00", "0.00", "100.00")]
    with_fee = [_shopify_line(1, 7101, "charge", "100.00", "2.90", "97.10")]
    _load_shopify(import_dir, ledger, routing, payouts, without_fee, partition="2026-11-24")

    before = reconcile_payouts(ledger, routing)
    opened = _payout_exceptions(ledger)
    _load_shopify(import_dir, ledger, routing, payouts, with_fee, partition="2026-11-25")
    after = reconcile_payouts(ledger, routing)

    assert _by_id(before)["7101"].difference == -290
    assert "a difference of -2.90 USD" in opened.loc[0, "reason"]
    assert ledger.read_table("payout_lines").loc[0, "fee_amount"] == 290
    assert _by_id(after)["7101"].status == MATCHED
    assert after.exceptions == {"opened": 0, "seen_again": 0, "reopened": 0}
    assert after.closed == [int(opened.loc[0, "id"])]
    closed = _payout_exceptions(ledger)
    assert len(closed) == 1
    assert closed.loc[0, "status"] == "closed"
    assert closed.loc[0, "outcome"] == "close"


def test_changed_difference_replaces_exception(ledger, routing, import_dir):
    payouts = [_shopify_payout(7201, "100.00")]
    _load_shopify(import_dir, ledger, routing, payouts,
                  [_shopify_line(1, 7201, "charge", "100.00", "0.00", "100.00"),
                   _shopify_line(2, 7201, "refund", "-5.00", "0.00", "-5.00")], partition="2026-11-24")
    reconcile_payouts(ledger, routing)
    _load_shopify(import_dir, ledger, routing, payouts,
                  [_shopify_line(1, 7201, "charge", "100.00", "2.00", "98.00")], partition="2026-11-25")

    outcome = reconcile_payouts(ledger, routing)

    exceptions = _payout_exceptions(ledger)
    assert exceptions["status"].tolist() == ["closed", "open"]
    assert "a difference of 5.00 USD" in exceptions.loc[0, "reason"]
    assert "a difference of 7.00 USD" in exceptions.loc[1, "reason"]
    assert outcome.closed == [int(exceptions.loc[0, "id"])]


def _stripe_client(double: StripeDouble) -> StripeApiClient:
    return StripeApiClient(account_id="acct_1TEST", api_key="sk_test_double", base_url="https://api.stripe.test",
                           page_size=100).with_transport(double.transport(), sleep=[].append)


def _extract_stripe(double, ledger, routing, name: str):
    extract_stream(stream("stripe", name), _stripe_client(double), ledger, routing,
                   since=datetime.fromtimestamp(NOV_2 - 3 * 86400, timezone.utc),
                   until=datetime.fromtimestamp(NOV_3, timezone.utc), lookback=timedelta(0))


def test_stripe_paid_but_never_paid_out(ledger, routing, monkeypatch):
    monkeypatch.setenv("MESHLINE_PAYOUT_LAG_DAYS", "7")
    double = StripeDouble()
    double.objects["charges"] = [charge("ch_paid_out", NOV_2 - 2 * 86400, amount=2000),
                                 charge("ch_stuck", NOV_2 - 2 * 86400, amount=1500)]
    paid_out = balance_transaction("txn_1", NOV_2 - 2 * 86400, amount=2000, fee=88)
    paid_out["source"] = "ch_paid_out"
    double.objects["balance_transactions"] = [paid_out]
    double.objects["payouts"] = [payout("po_a", NOV_2 + 3600, amount=1912)]
    double.payout_of["txn_1"] = "po_a"
    for name in ("charges", "payouts", "balance_transactions"):
        _extract_stripe(double, ledger, routing, name)
    charged_at = datetime.fromtimestamp(NOV_2 - 2 * 86400, timezone.utc)

    early = reconcile_payouts(ledger, routing, now=charged_at + timedelta(days=6))
    late = reconcile_payouts(ledger, routing, now=charged_at + timedelta(days=8))

    assert _by_id(early)["po_a"].status == MATCHED
    assert early.not_paid_out == []
    assert [payment["source_id"] for payment in late.not_paid_out] == ["ch_stuck"]
    exceptions = _payout_exceptions(ledger)
    assert exceptions["record_id"].tolist() == ["ch_stuck"]
    assert exceptions.loc[0, "rule"] == NOT_PAID_OUT
    assert exceptions.loc[0, "reason"].startswith(
        "Stripe charge ch_stuck (order order_ch_stuck) of 15.00 USD was paid on 2026-10-31 but never paid out")
    assert "after 7 days" in exceptions.loc[0, "reason"]


def test_charge_with_unread_later_payout_not_flagged(ledger, routing, import_dir, monkeypatch):
    monkeypatch.setenv("MESHLINE_PAYOUT_LAG_DAYS", "7")
    charged = NOV_2 - 2 * 86400
    listed = balance_transaction("txn_listed", charged, amount=2000, fee=88)
    listed["source"] = "ch_listed"
    payouts = [payout("po_listed", NOV_2, amount=1912), payout("po_unread", NOV_3, amount=1441)]
    for paid in payouts:
        paid["arrival_date"] = paid["created"] + 2 * 86400
    files = {
        "charges.json": [charge("ch_listed", charged, amount=2000), charge("ch_elsewhere", charged, amount=1500)],
        # po_listed's balance transactions were saved per payout; po_unread's were not.
        "payouts.json": payouts,
        "balance_transactions-po_listed.json": [listed],
    }
    for name, objects in files.items():
        drop_file(import_dir, "stripe", name, content=json.dumps({"object": "list", "data": objects}).encode())
    for name in ("charges", "payouts", "balance_transactions"):
        run("stripe", name, import_dir, ledger, routing)

    outcome = reconcile_payouts(ledger, routing, now=datetime.fromtimestamp(NOV_3, timezone.utc) + timedelta(days=30))

    # po_unread may hold ch_elsewhere, so the charge is not attributable rather than "never paid out".
    assert outcome.not_paid_out == []
    assert outcome.unattributable_payments == 1
    assert _by_id(outcome)["po_listed"].status == MATCHED
    assert _by_id(outcome)["po_unread"].status == UNVERIFIED


def _resources(ledger_url):
    return {"ledger": LedgerResource(database_url=ledger_url), "routing": RoutingResource()}


def test_asset_check_fails_on_mismatch(ledger_url, ledger, routing, import_dir):
    _load_shopify(import_dir, ledger, routing, [_shopify_payout(7001, "100.00"), _shopify_payout(7002, "48.50")],
                  [_shopify_line(1, 7001, "charge", "100.00", "1.50", "98.50"),
                   _shopify_line(2, 7002, "charge", "50.00", "1.50", "48.50")])

    result = dg.materialize([payout_reconciliation_asset()], resources=_resources(ledger_url), raise_on_error=False)

    check = result.get_asset_check_evaluations()[0]
    assert check.check_name == CHECK_NAME
    assert check.passed is False
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["share"].value == 0.5
    metadata = result.asset_materializations_for_node("reconciliation__payouts")[0].metadata
    assert metadata["payouts_checked"].value == 2
    assert metadata["matched"].value == 1
    assert metadata["mismatched"].value == 1
    assert metadata["total_difference"].value == {"USD": "1.50"}
    assert metadata["oldest_unreconciled"].value == "2026-11-20: Shopify Payments payout 7001 (mismatched)"


def test_asset_check_warns_within_maximum(ledger_url, ledger, routing, import_dir, monkeypatch):
    monkeypatch.setenv("MESHLINE_PAYOUT_MISMATCH_MAX", "0.5")
    _load_shopify(import_dir, ledger, routing, [_shopify_payout(7001, "100.00"), _shopify_payout(7002, "48.50")],
                  [_shopify_line(1, 7001, "charge", "100.00", "1.50", "98.50"),
                   _shopify_line(2, 7002, "charge", "50.00", "1.50", "48.50")])

    result = dg.materialize([payout_reconciliation_asset()], resources=_resources(ledger_url))

    check = result.get_asset_check_evaluations()[0]
    assert result.success
    assert check.passed is False
    assert check.severity == dg.AssetCheckSeverity.WARN


# Amazon settlements against the orders they pay. The bundled sample settlement pays order
# 111-1111111-1111111 (principal 19.99, FBA fee -3.22). A second settlement in the same flat-file
# layout pays two more orders and refunds part of the first.
SETTLEMENT_HEADER = (SAMPLES / "amazon" / "GET_V2_SETTLEMENT_REPORT_DATA_FLAT_FILE.csv").read_text(
    encoding="utf-8").splitlines()[0].split("\t")
SAMPLE_ORDER, DIFFERING_ORDER, MISSING_ORDER = "111-1111111-1111111", "112-2222222-2222222", "113-3333333-3333333"
SECOND_SETTLEMENT = "23456789012"
AMAZON_ACCOUNT = "A2TESTSELLER/ATVPDKIKX0DER"


def _settlement_row(**fields) -> str:
    return "\t".join(fields.get(column.replace("-", "_"), "") for column in SETTLEMENT_HEADER)


def _settlement_item_row(transaction: str, order_id: str, sku: str, quantity: str, principal: str,
                         commission: str) -> str:
    return _settlement_row(settlement_id=SECOND_SETTLEMENT, transaction_type=transaction, order_id=order_id,
                           marketplace_name="Amazon.com", fulfillment_id="AFN",
                           posted_date="2023-01-20 09:00:00 UTC", sku=sku, quantity_purchased=quantity,
                           price_type="Principal", price_amount=principal,
                           item_related_fee_type="Commission", item_related_fee_amount=commission)


def _second_settlement() -> bytes:
    # Row sums: 25.00 - 3.75, 10.00 - 1.50 and -5.00 + 0.75 (a refund returns part of the commission),
    # so the total of 25.50 matches the rows and only the orders are in question.
    rows = [
        _settlement_row(settlement_id=SECOND_SETTLEMENT, settlement_start_date="2023-01-15 00:00:00 UTC",
                        settlement_end_date="2023-01-29 00:00:00 UTC", deposit_date="2023-01-31 00:00:00 UTC",
                        total_amount="25.50", currency="USD"),
        _settlement_item_row("Order", DIFFERING_ORDER, "SKU-2", "2", "25.00", "-3.75"),
        _settlement_item_row("Order", MISSING_ORDER, "SKU-3", "1", "10.00", "-1.50"),
        _settlement_item_row("Refund", SAMPLE_ORDER, "SKU-1", "", "-5.00", "0.75"),
    ]
    return ("\t".join(SETTLEMENT_HEADER) + "\n" + "\n".join(rows) + "\n").encode()


def _amazon_order(order_id: str, total: str) -> dict:
    return {"AmazonOrderId": order_id, "SellerOrderId": f"SO-{order_id[-4:]}", "PurchaseDate": "2023-01-02T14:22:33Z",
            "LastUpdateDate": "2023-01-04T12:10:00Z", "OrderStatus": "Shipped", "FulfillmentChannel": "AFN",
            "SalesChannel": "Amazon.com", "OrderTotal": {"CurrencyCode": "USD", "Amount": total},
            "NumberOfItemsShipped": 1, "NumberOfItemsUnshipped": 0, "PaymentMethod": "Other",
            "MarketplaceId": "ATVPDKIKX0DER", "IsBusinessOrder": False, "IsPrime": True}


def _order_items(order_id: str, sku: str, quantity: int, price: str, tax: str) -> bytes:
    item = {"ASIN": f"B0{sku[-1]}TESTASIN", "SellerSKU": sku, "OrderItemId": f"{order_id[-7:]}01",
            "Title": f"Test item {sku}", "QuantityOrdered": quantity, "QuantityShipped": quantity,
            "ItemPrice": {"CurrencyCode": "USD", "Amount": price}, "ItemTax": {"CurrencyCode": "USD", "Amount": tax},
            "PromotionDiscount": {"CurrencyCode": "USD", "Amount": "0.00"}}
    return json.dumps({"payload": {"AmazonOrderId": order_id, "OrderItems": [item]}}).encode()


def _load_amazon(import_dir, ledger, routing, *, with_missing_order: bool = False, partition: str = "2026-11-24"):
    """Store both settlements, and orders 111 and 112 with their items (and 113 when asked).

    The order totals include tax (19.99 + 1.65, 24.00 + 2.00), which the principal leaves out.
    """
    drop_file(import_dir, "amazon", "GET_V2_SETTLEMENT_REPORT_DATA_FLAT_FILE.csv", partition=partition)
    drop_file(import_dir, "amazon", f"settlement-{SECOND_SETTLEMENT}_GET_V2_SETTLEMENT_REPORT_DATA_FLAT_FILE.txt",
              partition=partition, content=_second_settlement())
    orders = [_amazon_order(SAMPLE_ORDER, "21.64"), _amazon_order(DIFFERING_ORDER, "26.00")]
    items = {SAMPLE_ORDER: _order_items(SAMPLE_ORDER, "SKU-1", 1, "19.99", "1.65"),
             DIFFERING_ORDER: _order_items(DIFFERING_ORDER, "SKU-2", 2, "24.00", "2.00")}
    if with_missing_order:
        orders.append(_amazon_order(MISSING_ORDER, "10.83"))
        items[MISSING_ORDER] = _order_items(MISSING_ORDER, "SKU-3", 1, "10.00", "0.83")
    drop_file(import_dir, "amazon", "orders-getOrders.json", partition=partition,
              content=json.dumps({"payload": {"Orders": orders, "LastUpdatedBefore": "2023-01-05T00:00:00Z"}}).encode())
    for order_id, body in items.items():
        drop_file(import_dir, "amazon", f"orders-getOrderItems-{order_id}.json", partition=partition, content=body)
    for name in ("settlements", "orders", "order_items"):
        run("amazon", name, import_dir, ledger, routing, partition=partition)


def _settlement_orders(outcome) -> dict:
    return {(result.settlement_id, result.order_id, result.transaction): result
            for result in outcome.settlement_orders}


def _order_exceptions(ledger):
    stored = ledger.read_exceptions()
    return stored[stored["entity"] == "orders"].sort_values("id").reset_index(drop=True)


def test_amazon_settlement_orders_compared(ledger, routing, import_dir):
    _load_amazon(import_dir, ledger, routing)

    outcome = reconcile_payouts(ledger, routing)

    results = _settlement_orders(outcome)
    assert len(results) == 6
    matching = results[("12345678901", SAMPLE_ORDER, "Order")]
    assert matching.status == MATCHED
    assert (matching.expected, matching.found) == (1999, 1999)
    differing = results[(SECOND_SETTLEMENT, DIFFERING_ORDER, "Order")]
    assert differing.status == MISMATCHED
    assert (differing.expected, differing.found, differing.difference) == (2400, 2500, -100)
    missing = results[(SECOND_SETTLEMENT, MISSING_ORDER, "Order")]
    assert missing.status == NOT_STORED
    assert missing.found == 1000
    assert missing.expected is None
    refund = results[(SECOND_SETTLEMENT, SAMPLE_ORDER, "Refund")]
    assert refund.status == UNVERIFIED
    assert refund.found == 500
    assert refund.note == "no Amazon refunds stored for this account; load amazon/financial_events"
    fees = results[(SECOND_SETTLEMENT, DIFFERING_ORDER, "Fees")]
    assert (fees.status, fees.found) == (UNVERIFIED, -375)
    assert ("12345678901", SAMPLE_ORDER, "Fees") in results
    assert outcome.settlement_order_counts() == {MATCHED: 1, MISMATCHED: 1, UNVERIFIED: 3, NOT_STORED: 1}


def test_amazon_settlement_order_exceptions(ledger, routing, import_dir):
    _load_amazon(import_dir, ledger, routing)

    reconcile_payouts(ledger, routing)

    exceptions = _order_exceptions(ledger)
    assert exceptions["record_id"].tolist() == [DIFFERING_ORDER, MISSING_ORDER]
    mismatch = exceptions.loc[0]
    assert mismatch["kind"] == "reconciliation_mismatch"
    assert mismatch["rule"] == PRINCIPAL_DIFFERS
    assert mismatch["system"] == "amazon"
    assert mismatch["account"] == AMAZON_ACCOUNT
    assert mismatch["reason"].startswith(
        f"Amazon settlement {SECOND_SETTLEMENT}, order {DIFFERING_ORDER}: expected 24.00 USD (the sum of the "
        "order's stored line totals), found 25.00 USD principal in its 1 settlement rows, a difference of -1.00 USD.")
    assert json.loads(mismatch["details"]) == {
        "settlement": SECOND_SETTLEMENT, "order": DIFFERING_ORDER, "transaction": "Order", "currency": "USD",
        "expected": "24.00", "found": "25.00", "difference": "-1.00", "rows": 1}
    unmapped = exceptions.loc[1]
    assert unmapped["kind"] == "unmapped_reference"
    assert unmapped["rule"] == ORDER_NOT_STORED
    assert unmapped["value"] == MISSING_ORDER
    assert unmapped["reason"].startswith(
        f"Amazon settlement {SECOND_SETTLEMENT} pays order {MISSING_ORDER} (10.00 USD principal in 1 Order rows), "
        "but the order is not stored in the ledger.")


def test_amazon_settlement_fees_summed(ledger, routing, import_dir):
    _load_amazon(import_dir, ledger, routing)

    outcome = reconcile_payouts(ledger, routing)

    # The second settlement's fees are -3.75 - 1.50 + 0.75.
    assert outcome.item_fees() == {"12345678901": "-3.22 USD", SECOND_SETTLEMENT: "-4.50 USD"}
    assert outcome.unread_settlement_rows == 0
    assert _by_id(outcome)[SECOND_SETTLEMENT].status == MATCHED
    assert _by_id(outcome)["12345678901"].status == MISMATCHED


def test_amazon_refund_against_stored_refunds(ledger, routing, import_dir):
    _load_amazon(import_dir, ledger, routing)
    # Stored directly: the refund's origin does not matter to the comparison.
    refund = pd.DataFrame([{
        "system": "amazon", "account": AMAZON_ACCOUNT, "source_id": "R-111-1", "version": "2023-01-19T00:00:00Z",
        "extra": None, "order_source_id": SAMPLE_ORDER, "payment_source_id": None, "amount": 400, "currency": "USD",
        "status": "Completed", "reason": None, "created_at": pd.Timestamp("2023-01-19", tz="UTC"),
        "processed_at": pd.Timestamp("2023-01-19", tz="UTC")}]).astype({"amount": "Int64"})
    ledger.store("refunds", refund, partition_key="2026-11-24", run_id=None)

    outcome = reconcile_payouts(ledger, routing)

    result = _settlement_orders(outcome)[(SECOND_SETTLEMENT, SAMPLE_ORDER, "Refund")]
    assert result.status == MISMATCHED
    assert (result.expected, result.found, result.difference) == (400, 500, -100)
    exceptions = _order_exceptions(ledger)
    refund_exception = exceptions[exceptions["rule"] == REFUND_DIFFERS].iloc[0]
    assert refund_exception["record_id"] == SAMPLE_ORDER
    assert refund_exception["reason"].startswith(
        f"Amazon settlement {SECOND_SETTLEMENT}, order {SAMPLE_ORDER}: expected 4.00 USD refunded (the order's "
        "stored refunds), found 5.00 USD refunded in its 1 settlement rows, a difference of -1.00 USD.")


def test_amazon_loaded_order_closes_unmapped(ledger, routing, import_dir):
    _load_amazon(import_dir, ledger, routing, partition="2026-11-24")
    reconcile_payouts(ledger, routing)
    _load_amazon(import_dir, ledger, routing, with_missing_order=True, partition="2026-11-25")

    outcome = reconcile_payouts(ledger, routing)

    assert _settlement_orders(outcome)[(SECOND_SETTLEMENT, MISSING_ORDER, "Order")].status == MATCHED
    exceptions = _order_exceptions(ledger)
    unmapped = exceptions[exceptions["kind"] == "unmapped_reference"].iloc[0]
    assert unmapped["status"] == "closed"
    assert outcome.closed == [int(unmapped["id"])]
    mismatch = exceptions[exceptions["rule"] == PRINCIPAL_DIFFERS].iloc[0]
    assert mismatch["status"] == "open"


def _load_financial_events(import_dir, ledger, routing, shipments: list[dict], refunds: list[dict], *,
                           partition: str = "2026-11-24"):
    drop_file(import_dir, "amazon", "finances-listFinancialEvents.json", partition=partition,
              content=financial_events_file(shipments, refunds))
    run("amazon", "financial_events", import_dir, ledger, routing, partition=partition)


def _sample_order_events() -> tuple[list[dict], list[dict]]:
    """Events of orders 111 and 112: 112's commission is 3.50 where the second settlement takes 3.75."""
    shipments = [
        shipment_event(SAMPLE_ORDER, "2023-01-03T10:00:00Z", [shipment_item(
            "111111101", "SKU-1", 1, charges(Principal="19.99", Tax="1.65"), fees(FBAPerUnitFulfillmentFee="-3.22"))]),
        shipment_event(DIFFERING_ORDER, "2023-01-20T09:00:00Z", [shipment_item(
            "222222201", "SKU-2", 2, charges(Principal="24.00", Tax="2.00"), fees(Commission="-3.50"))]),
    ]
    refunds = [refund_event(SAMPLE_ORDER, "2023-01-20T09:00:00Z", [refund_item(
        "111111101-R1", "SKU-1", 1, charges(Principal="-5.00"), fees(Commission="0.75"))])]
    return shipments, refunds


def test_amazon_settlement_fees_and_refunds_against_events(ledger, routing, import_dir):
    _load_amazon(import_dir, ledger, routing)
    _load_financial_events(import_dir, ledger, routing, *_sample_order_events())

    outcome = reconcile_payouts(ledger, routing)

    results = _settlement_orders(outcome)
    sample_fees = results[("12345678901", SAMPLE_ORDER, "Fees")]
    assert (sample_fees.status, sample_fees.expected, sample_fees.found) == (MATCHED, -322, -322)
    differing_fees = results[(SECOND_SETTLEMENT, DIFFERING_ORDER, "Fees")]
    assert differing_fees.status == MISMATCHED
    assert (differing_fees.expected, differing_fees.found, differing_fees.difference) == (-350, -375, 25)
    refund = results[(SECOND_SETTLEMENT, SAMPLE_ORDER, "Refund")]
    assert (refund.status, refund.expected, refund.found) == (MATCHED, 500, 500)
    exception = _order_exceptions(ledger).set_index("rule").loc[FEES_DIFFER]
    assert exception["record_id"] == DIFFERING_ORDER
    assert exception["reason"].startswith(
        f"Amazon settlement {SECOND_SETTLEMENT}, order {DIFFERING_ORDER}: expected -3.50 USD (the item fees of the "
        "order's shipment events), found -3.75 USD item fees in its 1 settlement rows, a difference of 0.25 USD.")


def test_later_fee_event_closes_fee_difference(ledger, routing, import_dir):
    _load_amazon(import_dir, ledger, routing)
    shipments, refunds = _sample_order_events()
    _load_financial_events(import_dir, ledger, routing, shipments, refunds)
    reconcile_payouts(ledger, routing)
    # Amazon posts a further 0.25 fee for the same order item later.
    later = shipment_event(DIFFERING_ORDER, "2023-01-21T09:00:00Z", [shipment_item(
        "222222201", "SKU-2", 0, [], fees(Commission="-0.25"))])
    _load_financial_events(import_dir, ledger, routing, [later], [], partition="2026-11-25")

    outcome = reconcile_payouts(ledger, routing)

    assert _settlement_orders(outcome)[(SECOND_SETTLEMENT, DIFFERING_ORDER, "Fees")].status == MATCHED
    fee_exception = _order_exceptions(ledger).set_index("rule").loc[FEES_DIFFER]
    assert fee_exception["status"] == "closed"
    assert int(fee_exception["id"]) in outcome.closed


def test_asset_reports_settlement_orders(ledger_url, ledger, routing, import_dir):
    _load_amazon(import_dir, ledger, routing)

    result = dg.materialize([payout_reconciliation_asset()], resources=_resources(ledger_url), raise_on_error=False)

    check = result.get_asset_check_evaluations()[0]
    assert check.passed is False
    assert check.metadata["settlement_orders_mismatched"].value == 1
    assert check.metadata["settlement_orders_not_stored"].value == 1
    metadata = result.asset_materializations_for_node("reconciliation__payouts")[0].metadata
    assert metadata["amazon_settlement_orders"].value == {MATCHED: 1, MISMATCHED: 1, UNVERIFIED: 3, NOT_STORED: 1}
    assert metadata["amazon_item_fees"].value == {"12345678901": "-3.22 USD", SECOND_SETTLEMENT: "-4.50 USD"}
