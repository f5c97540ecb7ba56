"""Inventory and customer reconciliation: drift beyond tolerance and differing contact fields."""

from datetime import datetime, timezone

import dagster as dg

from meshline_pipelines.identity import build_links
from meshline_pipelines.ledger.store import utc_now
from meshline_pipelines.ledger.tables import CANONICAL_TABLES
from meshline_pipelines.reconciliation.records import customer_reconciliation, inventory_reconciliation
from meshline_pipelines.resources import LedgerResource, RoutingResource
from meshline_pipelines_tests.conftest import drop_file
from meshline_pipelines_tests.helpers import run
from meshline_pipelines_tests.test_source_of_truth import _netsuite_level, _shopify_stock


def _resources(ledger_url):
    return {"ledger": LedgerResource(database_url=ledger_url), "routing": RoutingResource()}


def test_stock_drift_beyond_tolerance_fails_the_check(ledger_url, ledger, routing, import_dir, monkeypatch):
    monkeypatch.setenv("MESHLINE_STOCK_TOLERANCE", "1")
    _shopify_stock(ledger, routing, import_dir)  # Shopify: RED 2, GREEN 3, BLACK 4, PINK 1
    fresh = datetime(2026, 11, 30, tzinfo=timezone.utc)
    _netsuite_level(ledger, "IPOD2008RED", 7, fresh)    # drift -5: beyond tolerance
    _netsuite_level(ledger, "IPOD2008GREEN", 4, fresh)  # drift -1: within tolerance
    _netsuite_level(ledger, "IPOD2008BLACK", 4, fresh)  # equal

    result = dg.materialize([inventory_reconciliation], resources=_resources(ledger_url), raise_on_error=False)

    check = result.get_asset_check_evaluations()[0]
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["checked"].value == 3
    assert check.metadata["mismatched"].value == 1
    mismatch = ledger.read_exceptions().iloc[0]
    assert mismatch["record_id"] == "sku:IPOD2008RED"
    assert "shows 2 available for SKU IPOD2008RED, while Netsuite, the source of truth for stock, shows 7" in (
        mismatch["reason"])
    assert "(drift -5, tolerance 1)" in mismatch["reason"]


def _hubspot_contact(ledger, source_id: str, **values) -> None:
    row = {"system": "hubspot", "account": "portal-1", "source_id": source_id, "version": "2026-11-20T00:00:00Z",
           "extra": None, "email": None, "phone": None, "first_name": None, "last_name": None, "state": None,
           "email_marketing_state": None, "orders_count": None, "total_spent_amount": None,
           "total_spent_currency": None, "created_at": datetime(2026, 11, 1, tzinfo=timezone.utc),
           "updated_at": datetime(2026, 11, 20, tzinfo=timezone.utc), "content_hash": "sha256:test",
           "partition_key": "2026-11-20", "run_id": "test", "loaded_at": utc_now(), **values}
    with ledger.engine.begin() as connection:
        connection.execute(CANONICAL_TABLES["customers"].insert().values(row))


def test_contact_fields_that_differ_from_the_storefront(ledger_url, ledger, routing, import_dir):
    drop_file(import_dir, "shopify", "customers.json")
    run("shopify", "customers", import_dir, ledger, routing)
    _hubspot_contact(ledger, "501", email="Bob.Norman@mail.example.com", first_name="Robert", last_name="Norman")
    _hubspot_contact(ledger, "502", email="steve.lastnameson@example.com", first_name="Steve")
    build_links(ledger, routing)

    result = dg.materialize([customer_reconciliation], resources=_resources(ledger_url), raise_on_error=False)

    check = result.get_asset_check_evaluations()[0]
    assert (check.metadata["checked"].value, check.metadata["mismatched"].value) == (2, 1)
    found = ledger.read_exceptions()
    assert found[["record_id", "field"]].values.tolist() == [["501", "first_name"]]
    assert "different first_name than storefront customer 207119551" in found.iloc[0]["reason"]
