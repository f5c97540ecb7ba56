"""Exact values from the bundled real-format samples, on SQLite and PostgreSQL."""

import copy
import json

import pandas as pd

from meshline_pipelines.cli import records_for_display
from meshline_pipelines_tests.conftest import drop_file, sample_json
from meshline_pipelines_tests.helpers import SHOP, run


def _row(frame: pd.DataFrame, source_id: str) -> pd.Series:
    matches = frame[frame["source_id"] == source_id]
    assert len(matches) == 1, f"expected one row for {source_id}, found {len(matches)}"
    return matches.iloc[0]


def test_shopify_order_totals_lines_and_utc(ledger, routing, import_dir):
    drop_file(import_dir, "shopify", "orders.json")

    result = run("shopify", "orders", import_dir, ledger, routing)

    assert result.failed_records == 0
    order = _row(ledger.read_table("orders"), "450789469")
    assert order["account"] == SHOP
    assert order["total_amount"] == 59894
    assert order["total_currency"] == "USD"
    assert order["total_presentment_amount"] == 59894
    assert order["subtotal_amount"] == 59700
    assert order["tax_amount"] == 1194
    assert order["discounts_amount"] == 1000
    assert order["shipping_amount"] == 0
    assert order["created_at"] == pd.Timestamp("2008-01-10T16:00:00Z")
    assert order["version"] == "2008-01-10T16:00:00.000000Z"
    assert "line_items" not in json.loads(order["extra"])
    assert json.loads(order["extra"])["po_number"] == "ABC123"

    lines = ledger.read_table("order_lines")
    assert sorted(lines["source_id"]) == ["466157049", "518995019", "703073504"]
    assert set(lines["order_source_id"]) == {"450789469"}
    green = _row(lines, "466157049")
    assert green["sku"] == "IPOD2008GREEN"
    assert green["unit_price_amount"] == 19900
    assert green["tax_amount"] == 398
    assert green["discount_amount"] == 334


def test_shopify_refund_is_209_usd(ledger, routing, import_dir):
    drop_file(import_dir, "shopify", "refunds.json")

    run("shopify", "refunds", import_dir, ledger, routing)

    refund = _row(ledger.read_table("refunds"), "509562969")
    assert refund["order_source_id"] == "450789469"
    assert refund["amount"] == 20900
    assert refund["currency"] == "USD"
    assert refund["created_at"] == pd.Timestamp("2025-07-02T16:38:15Z")
    shown = records_for_display(ledger.read_table("refunds"), "refunds")[0]
    assert shown["amount"] == "209.00"


def test_shopify_refund_embedded_and_listed_keeps_newest(ledger, routing, import_dir):
    drop_file(import_dir, "shopify", "orders.json")
    drop_file(import_dir, "shopify", "refunds.json")

    result = run("shopify", "refunds", import_dir, ledger, routing)

    assert result.records == 2
    assert result.failed_records == 0
    refund = _row(ledger.read_table("refunds"), "509562969")
    assert refund["version"] == "2025-07-02T16:38:15.000000Z"


def test_amazon_order_totals_149_99_usd(ledger, routing, import_dir):
    drop_file(import_dir, "amazon", "orders-getOrder.json")

    run("amazon", "orders", import_dir, ledger, routing)

    order = _row(ledger.read_table("orders"), "123-4567890-1234567")
    assert order["account"] == "A2TESTSELLER/ATVPDKIKX0DER"
    assert order["total_amount"] == 14999
    assert order["total_currency"] == "USD"
    assert order["marketplace_id"] == "ATVPDKIKX0DER"
    assert order["updated_at"] == pd.Timestamp("2025-10-16T12:10:00Z")


def test_amazon_order_items_in_brl(ledger, routing, import_dir):
    drop_file(import_dir, "amazon", "orders-getOrderItems.json")

    run("amazon", "order_items", import_dir, ledger, routing)

    line = _row(ledger.read_table("order_lines"), "147645420374961")
    assert line["order_source_id"] == "701-3922379-8329033"
    assert line["sku"] == "gb-mg5-x116440"
    assert line["currency"] == "BRL"
    assert line["line_total_amount"] == 100
    assert line["unit_price_amount"] == 100


def test_amazon_settlement_payout_and_lines(ledger, routing, import_dir):
    drop_file(import_dir, "amazon", "GET_V2_SETTLEMENT_REPORT_DATA_FLAT_FILE.csv")

    result = run("amazon", "settlements", import_dir, ledger, routing)

    assert result.failed_records == 0
    payout = _row(ledger.read_table("payouts"), "12345678901")
    assert payout["amount"] == 123456
    assert payout["currency"] == "USD"
    assert payout["payout_date"] == pd.Timestamp("2023-01-17T00:00:00Z")
    line = _row(ledger.read_table("payout_lines"), "12345678901:2")
    assert line["type"] == "Order/Principal"
    # The row's principal is its gross amount and its FBA fee of -3.22 its fee.
    assert (line["amount"], line["fee_amount"], line["net_amount"]) == (1999, 322, 1999 - 322)
    assert line["currency"] == "USD"
    assert line["order_source_id"] == "111-1111111-1111111"


def test_amazon_fba_inventory(ledger, routing, import_dir):
    drop_file(import_dir, "amazon", "GET_AFN_INVENTORY_DATA.csv")

    run("amazon", "inventory", import_dir, ledger, routing)

    levels = ledger.read_table("inventory_levels").set_index("inventory_item_id")
    assert levels.loc["fulfillment-channel-sku-1", "available"] == 11
    assert levels.loc["fulfillment-channel-sku-2", "available"] == 22


def test_stripe_charge_keeps_currency_exponent(ledger, routing, import_dir):
    listing = sample_json("stripe", "charges.json")
    yen = copy.deepcopy(listing["data"][0])
    yen.update(id="ch_yen", currency="jpy", amount=1500, amount_refunded=500)
    krona = copy.deepcopy(listing["data"][0])
    krona.update(id="ch_isk", currency="isk", amount=250000, amount_refunded=0)
    listing["data"] += [yen, krona]
    drop_file(import_dir, "stripe", "charges.json", content=json.dumps(listing).encode())

    run("stripe", "charges", import_dir, ledger, routing)

    payments = ledger.read_table("payments")
    usd = _row(payments, "ch_1PgafuB7WZ01zgkWXYmPNZs8")
    assert (usd["amount"], usd["currency"]) == (100, "USD")
    assert usd["created_at"] == pd.Timestamp(1234567890, unit="s", tz="UTC")
    assert (_row(payments, "ch_yen")["amount"], _row(payments, "ch_yen")["refunded_amount"]) == (1500, 500)
    assert _row(payments, "ch_isk")["amount"] == 2500
    shown = {row["source_id"]: row for row in records_for_display(payments, "payments")}
    assert shown["ch_yen"]["amount"] == "1500"
    assert shown["ch_isk"]["amount"] == "2500"
    assert shown["ch_1PgafuB7WZ01zgkWXYmPNZs8"]["amount"] == "1.00"


def test_shopify_balance_transactions_sum(ledger, routing, import_dir):
    drop_file(import_dir, "shopify", "balance_transactions.json")

    run("shopify", "balance_transactions", import_dir, ledger, routing)

    lines = ledger.read_table("payout_lines")
    expected = sum(round(float(t["amount"]) * 100) for t in sample_json("shopify", "balance_transactions.json")["transactions"])
    assert len(lines) == 50
    assert lines["amount"].sum() == expected
    assert set(lines["payout_source_id"]) == {"623721858"}


def test_shopify_products_become_variants(ledger, routing, import_dir):
    drop_file(import_dir, "shopify", "products.json")

    run("shopify", "products", import_dir, ledger, routing)

    variants = ledger.read_table("product_variants").set_index("source_id")
    assert sorted(variants.index) == ["39072856", "447654529", "457924702", "49148385", "808950810"]
    assert variants.loc["39072856", "sku"] == "IPOD2008GREEN"
    assert variants.loc["39072856", "product_id"] == "632910392"
    assert variants.loc["39072856", "inventory_item_id"] == "39072856"
    assert variants.loc["447654529", "product_id"] == "921728736"
    assert variants.loc["39072856", "updated_at"] == pd.Timestamp("2025-10-02T16:29:59Z")


def test_order_line_of_unknown_variant_is_unmapped(ledger, routing, import_dir):
    products = sample_json("shopify", "products.json")
    products["products"][0]["variants"] = [
        variant for variant in products["products"][0]["variants"] if variant["id"] != 457924702
    ]
    drop_file(import_dir, "shopify", "products.json", content=json.dumps(products).encode())
    drop_file(import_dir, "shopify", "orders.json")

    run("shopify", "products", import_dir, ledger, routing)
    result = run("shopify", "orders", import_dir, ledger, routing)

    assert result.failed_records == 0
    assert list(ledger.read_table("orders")["source_id"]) == ["450789469"]
    exceptions = ledger.read_exceptions()
    assert list(exceptions["kind"]) == ["unmapped_reference"]
    exception = exceptions.iloc[0]
    assert exception["record_id"] == "450789469"
    assert exception["field"] == "line_items[].variant_id"
    assert exception["value"] == "457924702"
    assert exception["decision_owner"] == "team:catalog"
    assert "457924702 is in no stored product_variants" in exception["reason"]


def test_order_lines_of_known_variants_open_nothing(ledger, routing, import_dir):
    drop_file(import_dir, "shopify", "products.json")
    drop_file(import_dir, "shopify", "orders.json")

    run("shopify", "products", import_dir, ledger, routing)
    run("shopify", "orders", import_dir, ledger, routing)

    assert ledger.read_exceptions().empty
