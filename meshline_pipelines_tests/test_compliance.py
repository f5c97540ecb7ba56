"""Shopify compliance topics: redaction reaches raw and canonical rows, a data request is exported."""

import json

import pytest
import sqlalchemy as sa

from meshline_pipelines.compliance import ComplianceRequestError, handle, redact_payload
from meshline_pipelines.ledger.tables import CANONICAL_TABLES, audit_events, raw_payloads
from meshline_pipelines_tests.conftest import drop_file
from meshline_pipelines_tests.helpers import SHOP, run

BOB = ("bob.norman@mail.example.com", "Chestnut Street 92", "+557734881234", "+16136120707", "Norman")
STEVE_EMAIL = "steve.lastnameson@example.com"


def _import(import_dir, ledger, routing):
    drop_file(import_dir, "shopify", "orders.json")
    drop_file(import_dir, "shopify", "customers.json")
    run("shopify", "orders", import_dir, ledger, routing)
    run("shopify", "customers", import_dir, ledger, routing)


def _ledger_text(ledger) -> str:
    """Every stored canonical row and raw payload as one text, to search for personal values."""
    parts = []
    with ledger.engine.connect() as connection:
        for table in [*CANONICAL_TABLES.values(), raw_payloads]:
            parts += [json.dumps(list(row), default=str) for row in connection.execute(sa.select(table))]
    return "\n".join(parts)


def test_customer_redact_removes_the_customer_everywhere(ledger, routing, import_dir):
    _import(import_dir, ledger, routing)
    body = {"shop_id": 954889, "shop_domain": SHOP, "customer": {"id": 207119551, "email": BOB[0]},
            "orders_to_redact": [450789469]}

    outcome = handle(ledger, "customers/redact", body, request_id="1234")

    text = _ledger_text(ledger)
    for value in BOB:
        assert value not in text
    assert STEVE_EMAIL in text
    assert outcome.records == {"customers": ["207119551"], "orders": ["450789469"]}
    customers = ledger.read_table("customers").set_index("source_id")
    assert customers.loc["207119551", ["email", "first_name", "last_name", "phone"]].isna().all()
    assert customers.loc["1073339462", "email"] == STEVE_EMAIL
    orders = ledger.read_table("orders").set_index("source_id")
    assert orders.loc["450789469", "order_number"] == "#1001"
    assert json.loads(orders.loc["450789469", "extra"])["billing_address"]["address1"] == "[redacted]"
    with ledger.engine.connect() as connection:
        steps = connection.execute(sa.select(audit_events.c.entity, audit_events.c.record_id).where(
            audit_events.c.step == "redacted")).all()
    assert sorted(steps) == [("customers", "207119551"), ("orders", "450789469")]


def test_redaction_survives_a_replay_of_the_same_files(ledger, routing, import_dir):
    _import(import_dir, ledger, routing)
    handle(ledger, "customers/redact", {"shop_domain": SHOP, "customer": {"id": 207119551}, "orders_to_redact": []})

    run("shopify", "orders", import_dir, ledger, routing)
    run("shopify", "customers", import_dir, ledger, routing)

    assert BOB[0] not in _ledger_text(ledger)


def test_shop_redact_clears_every_customer_of_the_shop(ledger, routing, import_dir):
    _import(import_dir, ledger, routing)

    outcome = handle(ledger, "shop/redact", {"shop_id": 954889, "shop_domain": SHOP})

    text = _ledger_text(ledger)
    assert BOB[0] not in text
    assert STEVE_EMAIL not in text
    assert sorted(outcome.records["customers"]) == ["1073339462", "207119551"]
    assert outcome.raw_payloads == 3


def test_data_request_exports_the_customers_records(ledger, routing, import_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MESHLINE_HOME", str(tmp_path / "home"))
    _import(import_dir, ledger, routing)
    body = {"shop_domain": SHOP, "customer": {"id": 207119551, "email": BOB[0]}, "orders_requested": [450789469],
            "data_request": {"id": 9999}}

    outcome = handle(ledger, "customers/data_request", body)

    exported = json.loads(outcome.export_path.read_text())
    assert outcome.export_path == tmp_path / "home" / "compliance" / "data_requests" / f"{SHOP}-9999.json"
    assert [row["source_id"] for row in exported["records"]["customers"]] == ["207119551"]
    assert [row["source_id"] for row in exported["records"]["orders"]] == ["450789469"]
    assert exported["raw_payloads"][0]["payload"]["email"] == BOB[0]
    assert BOB[0] in _ledger_text(ledger)


@pytest.mark.parametrize("topic, body, field", [
    ("customers/redact", {"shop_domain": SHOP}, "customer.id"),
    ("shop/redact", {"shop_id": 1}, "shop_domain"),
    ("customers/redact", {"shop_domain": SHOP, "customer": {"id": 1}, "orders_to_redact": "450789469"},
     "orders_to_redact"),
])
def test_malformed_compliance_bodies_name_the_field(ledger, topic, body, field):
    with pytest.raises(ComplianceRequestError, match=field):
        handle(ledger, topic, body)


def test_redact_payload_keeps_order_number():
    order = {"name": "#1001", "email": "a@example.com", "customer": {"id": 1, "first_name": "Ann"},
             "shipping_address": {"name": "Ann Lee", "country_code": "US", "latitude": 45.4}}

    redacted = redact_payload(order)

    assert redacted["name"] == "#1001"
    assert redacted["email"] == "[redacted]"
    assert redacted["customer"] == {"id": 1, "first_name": "[redacted]"}
    assert redacted["shipping_address"] == {"name": "[redacted]", "country_code": "US", "latitude": None}
