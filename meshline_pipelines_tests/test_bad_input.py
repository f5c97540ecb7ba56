"""Malformed files and payloads become named exceptions; the rest of the partition still loads."""

import copy
import json

import pandas as pd

from meshline_pipelines_tests.conftest import drop_file, sample_json
from meshline_pipelines_tests.helpers import run


def _order(order_id: int, **changes) -> dict:
    order = copy.deepcopy(sample_json("shopify", "orders.json")["orders"][0])
    order["id"] = order_id
    for line_number, line in enumerate(order["line_items"]):
        line["id"] = order_id * 10 + line_number
    order.update(changes)
    return order


def _drop_orders(import_dir, orders, name="orders.json"):
    drop_file(import_dir, "shopify", name, content=json.dumps({"orders": orders}).encode())


def test_truncated_file_is_a_connector_failure(ledger, routing, import_dir):
    drop_file(import_dir, "shopify", "orders.json")
    text = (import_dir / "2026-11-24" / "shopify" / "orders.json").read_text()
    drop_file(import_dir, "shopify", "orders-2.json", content=text[: len(text) // 2].encode())

    result = run("shopify", "orders", import_dir, ledger, routing)

    assert result.unreadable_files == ["2026-11-24/shopify/orders-2.json"]
    assert list(ledger.read_table("orders")["source_id"]) == ["450789469"]
    exceptions = ledger.read_exceptions()
    assert len(exceptions) == 1
    exception = exceptions.iloc[0]
    assert exception["kind"] == "connector_failure"
    assert exception["owner"] == "team:storefront"
    assert exception["record_id"] == "file:2026-11-24/shopify/orders-2.json"
    assert "orders-2.json is not valid JSON" in exception["reason"]
    assert "export the file from Shopify again" in exception["reason"]
    raw = ledger.read_raw(system="shopify")
    assert "file:2026-11-24/shopify/orders-2.json" in set(raw["record_id"])


def test_missing_total_is_a_missing_field(ledger, routing, import_dir):
    broken = _order(1001)
    del broken["total_price_set"]
    good = [_order(order_id) for order_id in range(2001, 2006)]
    _drop_orders(import_dir, [broken, *good])

    result = run("shopify", "orders", import_dir, ledger, routing)

    assert not result.quarantined
    assert sorted(ledger.read_table("orders")["source_id"]) == [str(i) for i in range(2001, 2006)]
    assert "1001" not in set(ledger.read_table("order_lines")["order_source_id"])
    exceptions = ledger.read_exceptions()
    missing = exceptions[exceptions["kind"] == "missing_field"]
    assert set(missing["record_id"]) == {"1001"}
    assert "total_price_set.shop_money.amount" in set(missing["field"])
    reason = missing[missing["field"] == "total_price_set.shop_money.amount"].iloc[0]["reason"]
    assert reason.startswith("Shopify orders record 1001 in 2026-11-24/shopify/orders.json: required field "
                             "total_price_set.shop_money.amount is missing")
    assert missing.iloc[0]["owner"] == "team:data-ops"
    assert missing.iloc[0]["decision_owner"] == "team:order-ops"
    assert (missing["due_at"] - missing["opened_at"]).iloc[0] == pd.Timedelta(hours=8)
    check = result.checks["orders"]
    assert (check.records, check.failed_records) == (6, 1)


def test_wrong_types_and_unknown_currency_are_named(ledger, routing, import_dir):
    bad_amount = _order(1001)
    bad_amount["total_price_set"]["shop_money"]["amount"] = "12,50"
    bad_currency = _order(1002)
    bad_currency["total_price_set"]["shop_money"]["currency_code"] = "XYZ"
    bad_time = _order(1003, updated_at="yesterday")
    good = [_order(order_id) for order_id in range(2001, 2013)]
    _drop_orders(import_dir, [bad_amount, bad_currency, bad_time, *good])

    result = run("shopify", "orders", import_dir, ledger, routing)

    assert len(ledger.read_table("orders")) == 12
    exceptions = ledger.read_exceptions().set_index("record_id")
    assert "invalid amount '12,50'" in exceptions.loc["1001", "reason"]
    assert exceptions.loc["1001", "field"] == "total_price_set.shop_money.amount"
    currency_exceptions = ledger.read_exceptions().query("record_id == '1002'")
    assert len(currency_exceptions) == 1
    assert currency_exceptions.iloc[0]["field"] == "total_price_set.shop_money.currency_code"
    assert "value 'XYZ' is not an ISO 4217 currency code" in currency_exceptions.iloc[0]["reason"]
    assert "expected an ISO 8601 timestamp" in " ".join(ledger.read_exceptions().query("record_id == '1003'")["reason"])
    assert result.failed_records == 3


def test_record_that_is_not_an_object(ledger, routing, import_dir):
    good = [_order(order_id) for order_id in range(2001, 2006)]
    _drop_orders(import_dir, [*good, "not an order"])

    run("shopify", "orders", import_dir, ledger, routing)

    assert len(ledger.read_table("orders")) == 5
    exception = ledger.read_exceptions().iloc[0]
    assert exception["kind"] == "failed_validation"
    assert exception["record_id"] == "2026-11-24/shopify/orders.json#5"
    assert "expected a JSON object" in exception["reason"]
    raw_ids = set(ledger.read_raw(system="shopify")["record_id"])
    assert raw_ids == {str(order_id) for order_id in range(2001, 2006)} | {"2026-11-24/shopify/orders.json#5"}


def test_failure_rate_above_maximum_stores_nothing(ledger, routing, import_dir):
    broken = [_order(order_id, created_at=None) for order_id in (1001, 1002)]
    _drop_orders(import_dir, [*broken, _order(2001)])

    result = run("shopify", "orders", import_dir, ledger, routing)

    assert result.quarantined
    assert result.checks["orders"].blocks
    assert ledger.read_table("orders").empty
    assert set(ledger.read_exceptions()["record_id"]) == {"1001", "1002"}
    assert len(ledger.read_raw(system="shopify")) == 3


def test_invalid_email_masks_the_value(ledger, routing, import_dir):
    customers = sample_json("shopify", "customers.json")
    customers["customers"][0]["email"] = "bob.norman at example.com"
    drop_file(import_dir, "shopify", "customers.json", content=json.dumps(customers).encode())

    run("shopify", "customers", import_dir, ledger, routing, max_failure_rate=0.5)

    exception = ledger.read_exceptions().iloc[0]
    assert exception["kind"] == "failed_validation"
    assert exception["value"] == "b***"
    assert "bob.norman" not in exception["reason"]
    assert len(ledger.read_table("customers")) == 1


def test_settlement_row_with_missing_fields(ledger, routing, import_dir):
    report = (import_dir.parent / "report.tsv")
    original = (drop_file(import_dir, "amazon", "GET_V2_SETTLEMENT_REPORT_DATA_FLAT_FILE.csv")).read_text()
    rows = original.splitlines()
    rows.append("12345678901\t\t\t\t\t\tOrder\t222-2222222-2222222")
    report.write_text("\n".join(rows) + "\n")
    drop_file(import_dir, "amazon", "GET_V2_SETTLEMENT_REPORT_DATA_FLAT_FILE.csv", content=report.read_bytes())

    result = run("amazon", "settlements", import_dir, ledger, routing, max_failure_rate=0.5)

    assert result.records == 3
    assert len(ledger.read_table("payout_lines")) == 1
    reasons = " ".join(ledger.read_exceptions()["reason"])
    assert "row has 8 fields, the header has" in reasons


def test_only_unreadable_files_open_exceptions(ledger, routing, import_dir):
    drop_file(import_dir, "stripe", "charges.json", content=b'{"object": "list", "data": [')

    result = run("stripe", "charges", import_dir, ledger, routing)

    assert result.records == 0
    assert not result.quarantined
    assert ledger.read_table("payments").empty
    assert list(ledger.read_exceptions()["kind"]) == ["connector_failure"]


def test_empty_listing_loads_nothing(ledger, routing, import_dir):
    drop_file(import_dir, "shopify", "orders.json", content=b'{"orders": []}')

    result = run("shopify", "orders", import_dir, ledger, routing)

    assert result.records == 0
    assert ledger.read_table("orders").empty
    assert ledger.read_exceptions().empty


def test_wrong_envelope_names_the_expected_key(ledger, routing, import_dir):
    drop_file(import_dir, "shopify", "customers.json", content=b'{"customer": {"id": 1}}')

    run("shopify", "customers", import_dir, ledger, routing)

    reason = ledger.read_exceptions().iloc[0]["reason"]
    assert "customers.json has no 'customers' list" in reason


def test_report_in_latin_1_is_read(ledger, routing, import_dir):
    report = "seller-sku\tfulfillment-channel-sku\tasin\tcondition-type\tWarehouse-Condition-code\tQuantity Available\n" \
             "caf\u00e9-mug\tX001\tB0001\tNew\tSELLABLE\t7\n"
    drop_file(import_dir, "amazon", "GET_AFN_INVENTORY_DATA.txt", content=report.encode("iso-8859-1"))

    run("amazon", "inventory", import_dir, ledger, routing)

    level = ledger.read_table("inventory_levels").iloc[0]
    assert level["sku"] == "caf\u00e9-mug"
    assert level["available"] == 7


def test_new_fields_reported_once(ledger, routing, import_dir):
    added = [_order(order_id, loyalty_tier="gold", channel_info={"channel": "pos"}) for order_id in range(3001, 3004)]
    moved = _order(3004)
    moved["current_total_price_set_v2"] = moved.pop("total_price_set")
    _drop_orders(import_dir, [*added, moved, _order(3005)])

    result = run("shopify", "orders", import_dir, ledger, routing)

    assert result.new_fields == {"loyalty_tier": 3, "channel_info": 3, "current_total_price_set_v2": 1}
    orders = ledger.read_table("orders").set_index("source_id")
    assert sorted(orders.index) == ["3001", "3002", "3003", "3005"]
    assert json.loads(orders.loc["3001", "extra"])["loyalty_tier"] == "gold"
    missing = ledger.read_exceptions()
    assert set(missing["record_id"]) == {"3004"}
    assert set(missing["kind"]) == {"missing_field"}


def test_documented_amazon_fields_are_not_drift(ledger, routing, import_dir):
    order = sample_json("amazon", "orders-getOrder.json")["payload"]
    order.update(IsISPU=False, EarliestShipDate="2026-11-24T08:00:00Z", OrderType="StandardOrder")
    drop_file(import_dir, "amazon", "orders-getOrder.json", content=json.dumps({"payload": order}).encode())

    result = run("amazon", "orders", import_dir, ledger, routing)

    assert result.new_fields == {}
    assert result.records == 1


def test_non_object_keeps_other_record_ids(ledger, routing, import_dir):
    payout = sample_json("shopify", "payouts.json")["payouts"][0]
    payouts = [{**payout, "id": 7000 + n} for n in range(3)]
    drop_file(import_dir, "shopify", "payouts.json", content=json.dumps({"payouts": [*payouts, 42]}).encode())

    run("shopify", "payouts", import_dir, ledger, routing)

    raw_ids = set(ledger.read_raw(system="shopify")["record_id"])
    assert raw_ids == {"7000", "7001", "7002", "2026-11-24/shopify/payouts.json#3"}


def test_orders_with_only_ids_are_named_not_crashed(ledger, routing, import_dir):
    _drop_orders(import_dir, [{"id": 1}, {"id": 2}])

    result = run("shopify", "orders", import_dir, ledger, routing)

    assert result.failed_records == 2
    assert result.quarantined
    exceptions = ledger.read_exceptions()
    assert set(exceptions["record_id"]) == {"1", "2"}
    assert "missing_field" in set(exceptions["kind"])
    assert ledger.read_table("orders").empty
