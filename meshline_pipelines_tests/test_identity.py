"""The identity map: orders, customers and SKUs linked across systems, ambiguity as an exception."""

import copy
import json

from datetime import datetime, timezone

from meshline_pipelines.delivery.base import record_key
from meshline_pipelines.delivery.outbox import DRY, Planned, plan
from meshline_pipelines.identity import build_links, normalize_email, normalize_phone, read_links
from meshline_pipelines.ledger.tables import CANONICAL_TABLES
from meshline_pipelines_tests.conftest import drop_file, sample_json
from meshline_pipelines_tests.helpers import run
from meshline_pipelines_tests.test_source_of_truth import _netsuite_level


def test_normalizers():
    assert normalize_email("  Bob.Norman@Mail.Example.com ") == "bob.norman@mail.example.com"
    assert normalize_email("not an email") is None
    assert normalize_phone("+1 (613) 555-0107") == "+16135550107"
    assert normalize_phone("555") is None


def test_payments_and_variants_are_linked(ledger, routing, import_dir):
    for name in ("orders.json", "transactions.json", "products.json"):
        drop_file(import_dir, "shopify", name)
    for stream in ("products", "orders", "transactions"):
        run("shopify", stream, import_dir, ledger, routing)

    build_links(ledger, routing)
    build_links(ledger, routing)

    orders = read_links(ledger, entity="order")
    anchor = "order:shopify:jsmith.myshopify.com:450789469"
    linked = orders[orders["canonical_id"] == anchor]
    assert sorted(linked["system_id"]) == ["450789469", "payment:179259969", "payment:389404469", "payment:801038806"]
    skus = read_links(ledger, entity="sku")
    assert set(skus.loc[skus["canonical_id"] == "sku:IPOD2008GREEN", "system_id"]) == {"39072856"}
    assert len(read_links(ledger)) == len(orders) + len(skus)  # a second build adds nothing


def test_shared_email_makes_match_ambiguous(ledger, routing, import_dir):
    customers = sample_json("shopify", "customers.json")
    twin = copy.deepcopy(customers["customers"][1])
    twin["id"] = 207119552
    customers["customers"].append(twin)
    drop_file(import_dir, "shopify", "customers.json", content=json.dumps(customers).encode())
    run("shopify", "customers", import_dir, ledger, routing)
    with ledger.engine.begin() as connection:
        row = connection.execute(CANONICAL_TABLES["customers"].select().where(
            CANONICAL_TABLES["customers"].c.source_id == "207119551")).mappings().first()
        connection.execute(CANONICAL_TABLES["customers"].insert().values(
            {**dict(row), "system": "hubspot", "account": "portal-1", "source_id": "501",
             "email": row["email"].upper(), "phone": None}))
        connection.execute(CANONICAL_TABLES["customers"].insert().values(
            {**dict(row), "system": "hubspot", "account": "portal-1", "source_id": "502",
             "email": "steve.lastnameson@example.com", "phone": None}))

    counts = build_links(ledger, routing)

    assert counts["unmapped"] == 1
    problem = ledger.read_exceptions().iloc[0]
    assert (problem["kind"], problem["record_id"]) == ("unmapped_reference", "501")
    assert "matches 2 storefront customers by email (207119551, 207119552)" in problem["reason"]
    links = read_links(ledger, entity="customer")
    hubspot = links[links["system"] == "hubspot"]
    assert hubspot[["system_id", "canonical_id", "link_source"]].values.tolist() == [
        ["502", "customer:shopify:jsmith.myshopify.com:1073339462", "same email"]]


def test_sku_without_erp_item_is_unmapped(ledger, routing, import_dir):
    drop_file(import_dir, "shopify", "orders.json")
    run("shopify", "orders", import_dir, ledger, routing)
    for sku in ("IPOD2008GREEN", "IPOD2008RED"):
        _netsuite_level(ledger, sku, 5, datetime(2026, 11, 24, tzinfo=timezone.utc))

    build_links(ledger, routing)

    found = ledger.read_exceptions()
    assert found[["record_id", "rule", "value"]].values.tolist() == [
        ["450789469", "order_lines.sku:no_erp_item", "IPOD2008BLACK"]]
    assert "matches no Netsuite item" in found.iloc[0]["reason"]


def test_shipment_links_to_sent_order(ledger, routing):
    key = record_key("shopify", "jsmith.myshopify.com", "450789469")
    plan(ledger, "shipstation", "acme", "order", [Planned("shopify", "jsmith.myshopify.com", "450789469", "v1", key,
                                                          {"orderKey": key})], mode=DRY)
    with ledger.engine.begin() as connection:
        connection.execute(CANONICAL_TABLES["shipments"].insert().values(
            system="shipstation", account="acme", source_id="880001", version="sha256:x", extra=None,
            order_source_id="123456789", order_key=key, order_number="#1001", tracking_number="1Z999",
            carrier="ups", service="ups_ground", ship_date=None, voided=False,
            created_at=datetime(2026, 11, 25, tzinfo=timezone.utc), content_hash="sha256:x",
            partition_key="2026-11-25", run_id="test", loaded_at=datetime(2026, 11, 25, tzinfo=timezone.utc)))

    build_links(ledger, routing)

    links = read_links(ledger, entity="order")
    assert links.loc[links["system"] == "shipstation", ["canonical_id", "system_id"]].values.tolist() == [
        ["order:shopify:jsmith.myshopify.com:450789469", "123456789"]]
