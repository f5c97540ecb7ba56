"""The PostgreSQL COPY path stores exactly what the generic SQLAlchemy path stores."""

import copy
import json

import pytest

from meshline_pipelines.ledger import Ledger
from meshline_pipelines_tests.conftest import drop_file, sample_json
from meshline_pipelines_tests.helpers import run
from meshline_pipelines_tests.snapshots import end_state


def _order(**changes) -> dict:
    order = copy.deepcopy(sample_json("shopify", "orders.json")["orders"][0])
    order.update(changes)
    return order


def _drop_partitions(import_dir) -> list[str]:
    """Days that exercise every decision: insert, absorb, stale, conflict, update, and hostile text."""
    hostile = 'tab\there, newline\nthere, backslash \\ and \\N, quote " and comma, ünïcödé'
    days = {
        "2026-11-24": [_order(updated_at="2026-11-20T10:00:00Z", note=hostile), _order(id=2001, line_items=[])],
        "2026-11-25": [_order(updated_at="2026-11-20T10:00:00Z", note=hostile)],
        "2026-11-26": [_order(updated_at="2026-11-19T10:00:00Z", note="older")],
        "2026-11-27": [_order(updated_at="2026-11-20T10:00:00Z", note="same version, other content")],
        "2026-11-28": [_order(updated_at="2026-11-21T10:00:00Z", note="newer", email=None)],
    }
    for day, orders in days.items():
        drop_file(import_dir, "shopify", "orders.json", partition=day, content=json.dumps({"orders": orders}).encode())
    return list(days)


def _run_days(ledger, routing, import_dir, days) -> list[dict]:
    decisions = []
    for day in days:
        result = run("shopify", "orders", import_dir, ledger, routing, partition=day)
        decisions.append({table: outcome.counts() for table, outcome in result.stored.items()})
    return decisions


def test_copy_path_matches_generic_path(make_postgres_database, routing, import_dir):
    days = _drop_partitions(import_dir)
    bulk = Ledger.connect(make_postgres_database(), bulk_copy=True)
    generic = Ledger.connect(make_postgres_database(), bulk_copy=False)

    bulk_decisions = _run_days(bulk, routing, import_dir, days)
    generic_decisions = _run_days(generic, routing, import_dir, days)

    assert bulk.bulk_copy and not generic.bulk_copy
    assert bulk_decisions == generic_decisions
    assert [day["orders"] for day in bulk_decisions] == [
        {"inserted": 2, "updated": 0, "absorbed": 0, "stale": 0, "conflict": 0},
        {"inserted": 0, "updated": 0, "absorbed": 1, "stale": 0, "conflict": 0},
        {"inserted": 0, "updated": 0, "absorbed": 0, "stale": 1, "conflict": 0},
        {"inserted": 0, "updated": 0, "absorbed": 0, "stale": 0, "conflict": 1},
        {"inserted": 0, "updated": 1, "absorbed": 0, "stale": 0, "conflict": 0},
    ]
    assert end_state(bulk) == end_state(generic)
    bulk.dispose()
    generic.dispose()


def test_copy_path_round_trips_hostile_text(postgres_database, routing, import_dir):
    note = 'tab\there, newline\nthere, backslash \\ and \\N, quote " and comma, ünïcödé'
    drop_file(import_dir, "shopify", "orders.json", content=json.dumps({"orders": [_order(note=note)]}).encode())
    ledger = Ledger.connect(postgres_database)

    run("shopify", "orders", import_dir, ledger, routing)

    stored = ledger.read_table("orders").iloc[0]
    assert ledger.bulk_copy
    assert json.loads(stored["extra"])["note"] == note
    assert stored["fulfillment_status"] is None
    assert stored["total_amount"] == 59894
    ledger.dispose()


@pytest.mark.parametrize("bulk_copy", [True, False])
def test_empty_string_stays_distinct_from_null(postgres_database, routing, import_dir, bulk_copy):
    drop_file(import_dir, "shopify", "orders.json",
              content=json.dumps({"orders": [_order(name="", fulfillment_status=None)]}).encode())
    ledger = Ledger.connect(postgres_database, bulk_copy=bulk_copy)

    run("shopify", "orders", import_dir, ledger, routing)

    stored = ledger.read_table("orders").iloc[0]
    assert stored["order_number"] == ""
    assert stored["fulfillment_status"] is None
    ledger.dispose()
