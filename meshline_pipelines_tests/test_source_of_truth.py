"""Source of truth: stale authoritative values and stock that disagrees with a fresher authority."""

from datetime import datetime, timedelta, timezone

import pytest

from meshline_pipelines.ledger.store import utc_now
from meshline_pipelines.ledger.tables import CANONICAL_TABLES
from meshline_pipelines.source_of_truth import FieldRule, SourceOfTruthError, check, load_rules
from meshline_pipelines_tests.conftest import drop_file
from meshline_pipelines_tests.helpers import run

STOCK = FieldRule("inventory_levels", "available", "netsuite", timedelta(hours=24), ("shopify",))


def _netsuite_level(ledger, sku: str, available: int, updated_at: datetime, location: str = "1") -> None:
    row = {"system": "netsuite", "account": "1234567", "source_id": f"{sku}@{location}",
           "version": updated_at.isoformat(), "extra": None, "sku": sku, "inventory_item_id": f"ns-{sku}",
           "location_id": location, "condition": None,
           "available": available, "updated_at": updated_at, "content_hash": "sha256:test", "partition_key": "2026-11-24",
           "run_id": "test", "loaded_at": utc_now()}
    with ledger.engine.begin() as connection:
        connection.execute(CANONICAL_TABLES["inventory_levels"].insert().values(row))


def _shopify_stock(ledger, routing, import_dir) -> None:
    drop_file(import_dir, "shopify", "products.json")
    drop_file(import_dir, "shopify", "inventory_levels.json")
    run("shopify", "products", import_dir, ledger, routing)
    run("shopify", "inventory_levels", import_dir, ledger, routing)


def test_stale_authoritative_value_is_an_exception(ledger, routing):
    now = datetime(2026, 11, 30, 12, tzinfo=timezone.utc)
    _netsuite_level(ledger, "IPOD2008RED", 2, now - timedelta(hours=30))
    _netsuite_level(ledger, "IPOD2008GREEN", 3, now - timedelta(hours=2))

    opened = check(ledger, routing, now=now, rules=[STOCK])
    later = check(ledger, routing, now=now + timedelta(hours=23), rules=[STOCK])

    found = ledger.read_exceptions()
    assert opened["opened"] == 1
    assert later["opened"] == 1  # the second value has aged past 24 hours by then
    assert sorted(found["record_id"]) == ["IPOD2008GREEN@1", "IPOD2008RED@1"]
    assert set(found["kind"]) == {"stale_source_of_truth"}
    assert "longer ago than 1 day" in found.iloc[0]["reason"]


def test_stock_disagreement_is_flagged(ledger, routing, import_dir):
    _shopify_stock(ledger, routing, import_dir)  # Shopify: RED 2, GREEN 3, updated 2025-07-02
    fresh = datetime(2026, 11, 30, tzinfo=timezone.utc)
    _netsuite_level(ledger, "IPOD2008RED", 7, fresh)
    _netsuite_level(ledger, "IPOD2008GREEN", 3, fresh)
    _netsuite_level(ledger, "IPOD2008BLACK", 9, datetime(2025, 1, 1, tzinfo=timezone.utc))

    check(ledger, routing, now=fresh, rules=[FieldRule("inventory_levels", "available", "netsuite", None, ("shopify",))])

    found = ledger.read_exceptions()
    assert found["record_id"].tolist() == ["sku:IPOD2008RED"]
    mismatch = found.iloc[0]
    assert (mismatch["kind"], mismatch["system"]) == ("reconciliation_mismatch", "shopify")
    assert "Shopify shows 2 available for SKU IPOD2008RED, while Netsuite, the source of truth for stock, shows 7" in (
        mismatch["reason"])


def test_rules_load_and_errors_name_key(tmp_path):
    assert [rule.system for rule in load_rules()] == ["netsuite", "channel", "shopify"]
    bad = tmp_path / "sot.yaml"
    bad.write_text("fields:\n  - {field: inventory_levels.available, system: netsuite, max_age: 1 day}\n")

    with pytest.raises(SourceOfTruthError, match=r"fields\[0\]: invalid max_age '1 day'"):
        load_rules(bad)


def test_stock_is_compared_per_mapped_location(ledger, routing, import_dir):
    _shopify_stock(ledger, routing, import_dir)  # all at Shopify location 655441491: RED 2, GREEN 3
    fresh = datetime(2026, 11, 30, tzinfo=timezone.utc)
    _netsuite_level(ledger, "IPOD2008RED", 2, fresh, location="1")
    _netsuite_level(ledger, "IPOD2008RED", 5, fresh, location="2")  # a warehouse the storefront does not sell from
    _netsuite_level(ledger, "IPOD2008GREEN", 8, fresh, location="1")
    rule = FieldRule("inventory_levels", "available", "netsuite", None, ("shopify",),
                     locations=((("netsuite", "1"), ("shopify", "655441491")),))

    check(ledger, routing, now=fresh, rules=[rule])

    found = ledger.read_exceptions()
    assert found["record_id"].tolist() == ["sku:IPOD2008GREEN@location 1"]
    assert "shows 3 available for SKU IPOD2008GREEN at location 1, while Netsuite" in found.iloc[0]["reason"]


def test_locations_must_map_known_systems(tmp_path):
    bad = tmp_path / "sot.yaml"
    bad.write_text("fields:\n  - field: inventory_levels.available\n    system: netsuite\n"
                   "    locations: [{netsuite: '1', shopfy: '655441491'}]\n")

    with pytest.raises(SourceOfTruthError, match=r"fields\[0\].locations\[0\]: unknown system shopfy"):
        load_rules(bad)
