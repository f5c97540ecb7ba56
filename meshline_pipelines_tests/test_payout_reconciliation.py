"""Payout reconciliation: payouts against the net of their lines, late lines, payments never paid out."""

import json
from datetime import datetime, timedelta, timezone

import dagster as dg

from meshline_pipelines.extract import extract_stream
from meshline_pipelines.reconciliation.payouts import (
    CHECK_NAME, MATCHED, MISMATCHED, NOT_PAID_OUT, UNVERIFIED, payout_reconciliation_asset, reconcile_payouts,
)
from meshline_pipelines.resources import LedgerResource, RoutingResource
from meshline_pipelines.stripe.api import StripeApiClient
from meshline_pipelines_tests.conftest import drop_file
from meshline_pipelines_tests.helpers import run, stream
from meshline_pipelines_tests.stripe_mock import StripeDouble, balance_transaction, charge, payout

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
