"""Inventory and customer reconciliation: drift beyond tolerance and differing contact fields."""

import json
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest

from meshline_pipelines.hubspot.assets import STREAMS as HUBSPOT_STREAMS
from meshline_pipelines.identity import build_links
from meshline_pipelines.ingest import run_stream
from meshline_pipelines.ledger.store import utc_now
from meshline_pipelines.ledger.tables import CANONICAL_TABLES
from meshline_pipelines.queue import read_transitions
from meshline_pipelines.reconciliation.records import (
    customer_reconciliation, inventory_reconciliation, reconcile_customers, reconcile_inventory,
)
from meshline_pipelines.resources import LedgerResource, RoutingResource
from meshline_pipelines_tests.conftest import drop_file
from meshline_pipelines_tests.helpers import run
from meshline_pipelines_tests.test_hubspot_api import NOV_2, HubSpotDouble, client, contact
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


def test_corrected_stock_closes_its_mismatch(ledger, routing, import_dir):
    _shopify_stock(ledger, routing, import_dir)  # Shopify: RED 2
    _netsuite_level(ledger, "IPOD2008RED", 7, datetime(2026, 11, 30, tzinfo=timezone.utc))
    first = reconcile_inventory(ledger, routing)
    # NetSuite's count is corrected to what Shopify shows, later than before.
    with ledger.engine.begin() as connection:
        table = CANONICAL_TABLES["inventory_levels"]
        connection.execute(table.update().where(table.c.source_id == "IPOD2008RED@1")
                           .values(available=2, updated_at=datetime(2026, 12, 1, tzinfo=timezone.utc)))

    second = reconcile_inventory(ledger, routing)

    assert (first["mismatched"], second["mismatched"]) == (1, 0)
    mismatch = ledger.read_exceptions().iloc[0]
    assert mismatch["status"] == "closed"
    assert second["closed"] == [int(mismatch["id"])]
    transitions = read_transitions(ledger, int(mismatch["id"]))
    assert transitions.iloc[-1]["reason"] == "the stock now matches the source of truth within the tolerance"


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


# --- Consent and lifetime value: storefront customers from a file, HubSpot contacts from its search API ---------

ANA = "ana.lima@example.com"


def _storefront_customer(email: str = ANA, *, consent: str | None = "subscribed", total_spent: str = "120.50",
                         currency: str = "USD", customer_id: int = 7001) -> dict:
    """A customer as Shopify's REST Admin API returns it."""
    return {"id": customer_id, "email": email, "first_name": "Ana", "last_name": "Lima", "phone": None,
            "state": "enabled", "orders_count": 3, "total_spent": total_spent, "currency": currency,
            "email_marketing_consent": None if consent is None else {
                "state": consent, "opt_in_level": "single_opt_in", "consent_updated_at": "2026-10-01T10:00:00-05:00"},
            "created_at": "2026-10-01T10:00:00-05:00", "updated_at": "2026-11-20T10:00:00-05:00"}


def _load_storefront(ledger, routing, import_dir, *customers: dict) -> None:
    drop_file(import_dir, "shopify", "customers.json", content=json.dumps({"customers": list(customers)}).encode())
    run("shopify", "customers", import_dir, ledger, routing)


def _load_hubspot(ledger, routing, *contacts: dict) -> None:
    """Read the contacts through the search double, as `HUBSPOT_MODE=api` does for 2026-11-02."""
    double = HubSpotDouble()
    double.contacts = list(contacts)
    outcome = run_stream(HUBSPOT_STREAMS[0], client(double), ledger, routing, partition_key="2026-11-02",
                         run_id="test")
    assert outcome.failed_records == 0


def _hubspot_ana(minutes: int = 60, contact_id: int = 501, **properties) -> dict:
    return contact(contact_id, NOV_2 + timedelta(minutes=minutes), email=ANA.upper(), firstname="Ana",
                   lastname="Lima", **properties)


def _reconcile(ledger, routing) -> dict:
    build_links(ledger, routing)
    return reconcile_customers(ledger, routing)


def test_lifetime_value_difference_names_both_values(ledger, routing, import_dir, monkeypatch):
    monkeypatch.setenv("HUBSPOT_CURRENCY", "USD")
    _load_storefront(ledger, routing, import_dir, _storefront_customer(total_spent="120.50"))
    _load_hubspot(ledger, routing, _hubspot_ana(total_revenue="98.00"))

    summary = _reconcile(ledger, routing)

    assert (summary["checked"], summary["mismatched"]) == (1, 1)
    assert summary["by_field"]["total_spent_amount"] == 1
    found = ledger.read_exceptions()
    assert found[["record_id", "field", "rule"]].values.tolist() == [
        ["501", "total_spent_amount", "customers.total_spent_amount:differs_from_storefront"]]
    mismatch = found.iloc[0]
    assert json.loads(mismatch["details"]) == {
        "field": "total_spent_amount", "crm": "98.00", "storefront": "120.50", "currency": "USD",
        "difference": "-22.50", "anchor": "customer:shopify:jsmith.myshopify.com:7001"}
    assert mismatch["reason"].startswith(
        "HubSpot contact 501 has a lifetime value of 98.00 USD, but storefront customer 7001, the source of "
        "truth, has spent 120.50 USD. Fix: ")


def test_equal_lifetime_value_not_flagged(ledger, routing, import_dir, monkeypatch):
    monkeypatch.setenv("HUBSPOT_CURRENCY", "USD")
    _load_storefront(ledger, routing, import_dir, _storefront_customer(total_spent="120.50"))
    _load_hubspot(ledger, routing, _hubspot_ana(total_revenue="120.5", hs_email_optout="false"))

    summary = _reconcile(ledger, routing)

    assert (summary["checked"], summary["mismatched"]) == (1, 0)
    assert summary["lifetime_value_other_currency"] == 0
    assert ledger.read_exceptions().empty


def test_lifetime_value_in_other_currency_not_compared(ledger_url, ledger, routing, import_dir, monkeypatch):
    monkeypatch.setenv("HUBSPOT_CURRENCY", "USD")
    _load_storefront(ledger, routing, import_dir, _storefront_customer(total_spent="120.50", currency="CAD"))
    _load_hubspot(ledger, routing, _hubspot_ana(total_revenue="98.00"))
    build_links(ledger, routing)

    result = dg.materialize([customer_reconciliation], resources=_resources(ledger_url), raise_on_error=False)

    check = result.get_asset_check_evaluations()[0]
    assert check.passed
    assert (check.metadata["checked"].value, check.metadata["mismatched"].value) == (1, 0)
    metadata = result.asset_materializations_for_node("reconciliation__customers")[0].metadata
    assert metadata["lifetime_value_other_currency"].value == 1
    assert metadata["by_field"].value["total_spent_amount"] == 0
    assert ledger.read_exceptions().empty


def test_lifetime_value_without_hubspot_currency_not_compared(ledger, routing, import_dir, monkeypatch):
    monkeypatch.delenv("HUBSPOT_CURRENCY", raising=False)
    _load_storefront(ledger, routing, import_dir, _storefront_customer(total_spent="120.50"))
    _load_hubspot(ledger, routing, _hubspot_ana(total_revenue="98.00"))

    summary = _reconcile(ledger, routing)

    assert (summary["checked"], summary["mismatched"]) == (1, 0)
    assert summary["lifetime_value_other_currency"] == 0
    assert ledger.read_exceptions().empty


@pytest.mark.parametrize("storefront_state, hs_email_optout, flagged", [
    ("unsubscribed", "false", True),   # HubSpot would still email a customer who withdrew consent
    ("subscribed", "true", True),      # HubSpot has an opt-out that the storefront lacks
    ("subscribed", "false", False),
    ("unsubscribed", "true", False),
    ("not_subscribed", "false", False),
    ("pending", "false", False),
    (None, "false", False),
    ("not_subscribed", "true", False),
    ("unsubscribed", None, False),
])
def test_consent_difference(ledger, routing, import_dir, storefront_state, hs_email_optout, flagged):
    _load_storefront(ledger, routing, import_dir, _storefront_customer(consent=storefront_state))
    _load_hubspot(ledger, routing, _hubspot_ana(hs_email_optout=hs_email_optout))

    summary = _reconcile(ledger, routing)

    assert summary["checked"] == 1
    assert summary["by_field"]["email_marketing_state"] == int(flagged)
    found = ledger.read_exceptions()
    assert found["field"].tolist() == (["email_marketing_state"] if flagged else [])
    if flagged:
        details = json.loads(found.iloc[0]["details"])
        assert details["crm"] == ("unsubscribed" if hs_email_optout == "true" else "not_opted_out")
        assert details["storefront"] == storefront_state


def test_consent_reason_names_harmful_case(ledger, routing, import_dir):
    _load_storefront(ledger, routing, import_dir, _storefront_customer(consent="unsubscribed"))
    _load_hubspot(ledger, routing, _hubspot_ana(hs_email_optout="false"))

    _reconcile(ledger, routing)

    assert ledger.read_exceptions().iloc[0]["reason"] == (
        "HubSpot contact 501 is not opted out of email, but storefront customer 7001, the source of truth, "
        "unsubscribed from email marketing. Fix: unsubscribe the contact from all email in HubSpot. "
        "The contact delivery does not send consent")


def test_exception_closes_when_crm_value_fixed(ledger, routing, import_dir, monkeypatch):
    monkeypatch.setenv("HUBSPOT_CURRENCY", "USD")
    _load_storefront(ledger, routing, import_dir, _storefront_customer(consent="unsubscribed", total_spent="120.50"))
    _load_hubspot(ledger, routing, _hubspot_ana(total_revenue="98.00", hs_email_optout="false"))
    first = _reconcile(ledger, routing)
    opened = ledger.read_exceptions().set_index("field")["id"]

    # Deals were fixed in HubSpot, so the contact's total_revenue changed. Its consent is still wrong.
    _load_hubspot(ledger, routing, _hubspot_ana(minutes=120, total_revenue="120.50", hs_email_optout="false"))
    second = _reconcile(ledger, routing)

    assert first["closed"] == []
    assert second["closed"] == [int(opened["total_spent_amount"])]
    assert second["by_field"]["total_spent_amount"] == 0
    statuses = ledger.read_exceptions().set_index("id")["status"]
    assert statuses[opened["total_spent_amount"]] == "closed"
    assert statuses[opened["email_marketing_state"]] == "open"
    trail = read_transitions(ledger, int(opened["total_spent_amount"]))
    assert trail[["action", "actor", "reason"]].values.tolist() == [
        ["close", "meshline", "the total_spent_amount now matches the source of truth"]]


def test_changed_lifetime_value_replaces_exception(ledger, routing, import_dir, monkeypatch):
    monkeypatch.setenv("HUBSPOT_CURRENCY", "USD")
    _load_storefront(ledger, routing, import_dir, _storefront_customer(total_spent="120.50"))
    _load_hubspot(ledger, routing, _hubspot_ana(total_revenue="98.00"))
    _reconcile(ledger, routing)
    _load_hubspot(ledger, routing, _hubspot_ana(minutes=120, total_revenue="99.00"))

    summary = _reconcile(ledger, routing)

    found = ledger.read_exceptions().sort_values("id")
    assert found["status"].tolist() == ["closed", "open"]
    assert summary["closed"] == [int(found.iloc[0]["id"])]
    assert json.loads(found.iloc[1]["details"])["crm"] == "99.00"
    assert "lifetime value of 99.00 USD" in found.iloc[1]["reason"]
    trail = read_transitions(ledger, int(found.iloc[0]["id"]))
    assert trail["reason"].tolist() == ["replaced by an exception with the current difference"]
