"""Cross-record detection: money whose state contradicts its order's becomes ambiguous_approval."""

import copy
import json
from datetime import datetime, timezone

from meshline_pipelines.detectors import detect
from meshline_pipelines_tests.conftest import drop_file, sample_json
from meshline_pipelines_tests.helpers import run

NOW = datetime(2026, 11, 30, tzinfo=timezone.utc)


def _transactions(import_dir, transactions, partition="2026-11-24"):
    drop_file(import_dir, "shopify", "transactions.json", partition=partition,
              content=json.dumps({"transactions": transactions}).encode())


def _sample_transactions() -> dict:
    return {t["kind"]: t for t in sample_json("shopify", "transactions.json")["transactions"]}


def test_uncaptured_authorizations_open_once(ledger, routing, import_dir):
    by_kind = _sample_transactions()
    waiting = copy.deepcopy(by_kind["authorization"])
    waiting.update(id=5001, order_id=7001, created_at="2026-11-20T09:00:00-05:00")
    recent = copy.deepcopy(by_kind["authorization"])
    recent.update(id=5002, order_id=7002, created_at="2026-11-28T09:00:00-05:00")
    _transactions(import_dir, [*sample_json("shopify", "transactions.json")["transactions"], waiting, recent])
    drop_file(import_dir, "stripe", "charges.json")
    run("shopify", "transactions", import_dir, ledger, routing)
    run("stripe", "charges", import_dir, ledger, routing)

    first = detect(ledger, routing, now=NOW)
    second = detect(ledger, routing, now=NOW)

    found = ledger.read_exceptions()
    assert sorted(zip(found["system"], found["record_id"])) == [("shopify", "5001"), ("stripe", "ch_1PgafuB7WZ01zgkWXYmPNZs8")]
    assert set(found["kind"]) == {"ambiguous_approval"}
    assert (first["opened"], second["opened"], second["seen_again"]) == (2, 0, 2)
    shopify = found[found["system"] == "shopify"].iloc[0]
    assert "has no capture after 7 days" in shopify["reason"]
    assert shopify["owner"] == "team:data-ops"


def test_cancelled_order_with_unrefunded_capture(ledger, routing, import_dir):
    order = copy.deepcopy(sample_json("shopify", "orders.json")["orders"][0])
    order.update(cancelled_at="2026-11-24T10:00:00-05:00", refunds=[])
    drop_file(import_dir, "shopify", "orders.json", content=json.dumps({"orders": [order]}).encode())
    capture = _sample_transactions()["capture"]
    _transactions(import_dir, [capture])
    run("shopify", "orders", import_dir, ledger, routing)
    run("shopify", "transactions", import_dir, ledger, routing)

    detect(ledger, routing, now=NOW)

    found = ledger.read_exceptions()
    cancelled = found[found["rule"] == "orders.cancelled_at:charged_not_refunded"]
    assert cancelled["record_id"].tolist() == ["450789469"]
    assert "were not refunded" in cancelled.iloc[0]["reason"]


def test_order_number_twice_is_duplicate(ledger, routing, import_dir):
    first = copy.deepcopy(sample_json("shopify", "orders.json")["orders"][0])
    second = copy.deepcopy(first)
    second["id"] = 450789470
    for line in second["line_items"]:
        line["id"] += 1
    drop_file(import_dir, "shopify", "orders.json", content=json.dumps({"orders": [first, second]}).encode())
    run("shopify", "orders", import_dir, ledger, routing)

    detect(ledger, routing, now=NOW)

    found = ledger.read_exceptions()
    duplicates = found[found["kind"] == "duplicate_record"]
    assert duplicates["record_id"].tolist() == ["450789470"]
    assert "#1001 is stored under 2 IDs (450789469, 450789470)" in duplicates.iloc[0]["reason"]
