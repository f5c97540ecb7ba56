"""Ledger contracts: migrations match the model, upserts follow record versions, raw landing is idempotent."""

import copy
import json

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from meshline_pipelines.ledger import Ledger
from meshline_pipelines.ledger.migrate import alembic_config
from meshline_pipelines.ledger.tables import metadata
from meshline_pipelines_tests.conftest import drop_file, sample_json
from meshline_pipelines_tests.helpers import run
from meshline_pipelines_tests.snapshots import end_state


def _orders_file(import_dir, orders, partition):
    drop_file(import_dir, "shopify", "orders.json", partition=partition,
              content=json.dumps({"orders": orders}).encode())


def _sample_order(**changes) -> dict:
    order = copy.deepcopy(sample_json("shopify", "orders.json")["orders"][0])
    order.update(changes)
    return order


def test_migrations_match_the_model(ledger):
    with ledger.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": "meshline_alembic_version"})
        differences = compare_metadata(context, metadata)

    assert differences == []


def test_connecting_again_keeps_the_data(ledger_url, ledger, routing, import_dir):
    drop_file(import_dir, "shopify", "orders.json")
    run("shopify", "orders", import_dir, ledger, routing)

    again = Ledger.connect(ledger_url)

    assert len(again.read_table("orders")) == 1
    with again.engine.connect() as connection:
        version = connection.execute(sa.text("select version_num from meshline_alembic_version")).scalar()
    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()
    again.dispose()


def test_rerun_is_absorbed(ledger, routing, import_dir):
    drop_file(import_dir, "shopify", "orders.json")
    run("shopify", "orders", import_dir, ledger, routing)
    before = end_state(ledger)

    second = run("shopify", "orders", import_dir, ledger, routing)

    assert second.stored["orders"].counts()["absorbed"] == 1
    assert second.stored["order_lines"].counts()["absorbed"] == 3
    assert second.raw_landed == 0
    assert end_state(ledger) == before


def test_newer_version_updates_and_older_never_overwrites(ledger, routing, import_dir):
    _orders_file(import_dir, [_sample_order(updated_at="2026-11-20T10:00:00-05:00", note="second")], "2026-11-24")
    _orders_file(import_dir, [_sample_order(updated_at="2026-11-19T10:00:00-05:00", note="first")], "2026-11-25")
    _orders_file(import_dir, [_sample_order(updated_at="2026-11-21T10:00:00+01:00", note="third")], "2026-11-26")

    run("shopify", "orders", import_dir, ledger, routing, partition="2026-11-24")
    stale = run("shopify", "orders", import_dir, ledger, routing, partition="2026-11-25")
    after_stale = ledger.read_table("orders").iloc[0]
    newer = run("shopify", "orders", import_dir, ledger, routing, partition="2026-11-26")
    after_newer = ledger.read_table("orders").iloc[0]

    assert stale.stored["orders"].counts()["stale"] == 1
    assert after_stale["version"] == "2026-11-20T15:00:00.000000Z"
    assert json.loads(after_stale["extra"])["note"] == "second"
    assert newer.stored["orders"].counts()["updated"] == 1
    assert after_newer["version"] == "2026-11-21T09:00:00.000000Z"
    assert json.loads(after_newer["extra"])["note"] == "third"
    assert after_newer["partition_key"] == "2026-11-26"
    assert ledger.read_exceptions().empty


def test_same_version_other_content_is_a_duplicate_record(ledger, routing, import_dir):
    _orders_file(import_dir, [_sample_order(note="original")], "2026-11-24")
    _orders_file(import_dir, [_sample_order(note="changed without a new updated_at")], "2026-11-25")

    run("shopify", "orders", import_dir, ledger, routing, partition="2026-11-24")
    conflict = run("shopify", "orders", import_dir, ledger, routing, partition="2026-11-25")

    assert conflict.stored["orders"].counts()["conflict"] == 1
    assert json.loads(ledger.read_table("orders").iloc[0]["extra"])["note"] == "original"
    exception = ledger.read_exceptions().iloc[0]
    assert exception["kind"] == "duplicate_record"
    assert exception["record_id"] == "450789469"
    assert "already stored with different content" in exception["reason"]


def test_conflicting_copies_in_one_partition(ledger, routing, import_dir):
    others = [_sample_order(id=2000 + n, line_items=[]) for n in range(8)]
    _orders_file(import_dir, [_sample_order(note="a"), _sample_order(note="b"), *others], "2026-11-24")

    result = run("shopify", "orders", import_dir, ledger, routing)

    assert "450789469" not in set(ledger.read_table("orders")["source_id"])
    assert len(ledger.read_table("orders")) == 8
    assert set(ledger.read_exceptions()["kind"]) == {"duplicate_record"}
    assert result.checks["orders"].failed_records == 2


def test_identical_redelivery_in_one_partition_is_counted(ledger, routing, import_dir):
    _orders_file(import_dir, [_sample_order(), _sample_order()], "2026-11-24")

    result = run("shopify", "orders", import_dir, ledger, routing)

    assert result.redelivered == 1
    assert len(ledger.read_table("orders")) == 1
    assert len(ledger.read_raw(system="shopify")) == 1
    assert ledger.read_exceptions().empty


def test_exception_opens_once_per_fingerprint(ledger, routing, import_dir):
    broken = _sample_order(id=1001)
    del broken["created_at"]
    good = [_sample_order(id=2000 + n, line_items=[]) for n in range(8)]
    _orders_file(import_dir, [broken, *good], "2026-11-24")

    first = run("shopify", "orders", import_dir, ledger, routing)
    second = run("shopify", "orders", import_dir, ledger, routing)

    exceptions = ledger.read_exceptions()
    assert first.exceptions == {"opened": 1, "seen_again": 0, "reopened": 0}
    assert second.exceptions == {"opened": 0, "seen_again": 1, "reopened": 0}
    assert len(exceptions) == 1
    assert exceptions.iloc[0]["occurrences"] == 2
    assert exceptions.iloc[0]["status"] == "open"


def test_stale_order_keeps_its_stored_lines(ledger, routing, import_dir):
    newer = _sample_order(updated_at="2026-11-20T10:00:00Z")
    newer["line_items"][0]["quantity"] = 2
    older = _sample_order(updated_at="2026-11-19T10:00:00Z")
    older["line_items"][0]["quantity"] = 1
    _orders_file(import_dir, [newer], "2026-11-24")
    _orders_file(import_dir, [older], "2026-11-25")

    run("shopify", "orders", import_dir, ledger, routing, partition="2026-11-24")
    stale = run("shopify", "orders", import_dir, ledger, routing, partition="2026-11-25")

    assert stale.stored["orders"].counts()["stale"] == 1
    assert stale.stored["order_lines"].decisions.empty
    line = ledger.read_table("order_lines").set_index("source_id").loc["466157049"]
    assert line["quantity"] == 2


def _order_pages(import_dir, pages: int, per_page: int, *, broken: set[int] = frozenset()):
    for page in range(pages):
        orders = []
        for number in range(per_page):
            order_id = 10_000 + page * per_page + number
            order = _sample_order(id=order_id)
            for line_number, line in enumerate(order["line_items"]):
                line["id"] = order_id * 10 + line_number
            if order_id in broken:
                del order["updated_at"]
            orders.append(order)
        drop_file(import_dir, "shopify", f"orders-{page:03d}.json", content=json.dumps({"orders": orders}).encode())


def test_chunked_partition_matches_one_pass(ledger_url, routing, tmp_path, request):
    _order_pages(tmp_path / "one", pages=4, per_page=5, broken={10_003})
    _order_pages(tmp_path / "many", pages=4, per_page=5, broken={10_003})
    if ledger_url.startswith("sqlite"):
        second_url = f"sqlite:///{tmp_path / 'chunked.db'}"
    else:
        second_url = request.getfixturevalue("make_postgres_database")()
    one_pass = Ledger.connect(ledger_url)
    chunked = Ledger.connect(second_url)

    single = run("shopify", "orders", tmp_path / "one", one_pass, routing, max_failure_rate=0.5)
    several = run("shopify", "orders", tmp_path / "many", chunked, routing, max_failure_rate=0.5,
                  records_per_chunk=5)

    assert (single.chunks, several.chunks) == (1, 4)
    assert several.records == single.records == 20
    assert several.failed_records == single.failed_records == 1
    assert several.stored["orders"].counts() == single.stored["orders"].counts()
    assert several.stored["order_lines"].count("inserted") == 57
    assert end_state(chunked)["orders"] == end_state(one_pass)["orders"]
    assert len(chunked.read_exceptions()) == len(one_pass.read_exceptions()) == 1
    one_pass.dispose()
    chunked.dispose()


def test_chunked_partition_over_maximum_stores_nothing(ledger, routing, import_dir):
    _order_pages(import_dir, pages=3, per_page=4, broken={10_008, 10_009, 10_010, 10_011})

    result = run("shopify", "orders", import_dir, ledger, routing, records_per_chunk=4)

    assert result.chunks == 3
    assert result.quarantined
    assert ledger.read_table("orders").empty
    assert len(ledger.read_raw(system="shopify")) == 12


def test_replaying_an_older_snapshot_keeps_the_newer_one(ledger, routing, import_dir):
    header = "seller-sku\tfulfillment-channel-sku\tasin\tcondition-type\tWarehouse-Condition-code\tQuantity Available\n"
    for day, quantity in (("2026-11-24", 100), ("2026-11-25", 87)):
        drop_file(import_dir, "amazon", "GET_AFN_INVENTORY_DATA.csv", partition=day,
                  content=(header + f"sku-1\tfnsku-1\tasin-1\tNewItem\tSELLABLE\t{quantity}\n").encode())
    run("amazon", "inventory", import_dir, ledger, routing, partition="2026-11-24")
    run("amazon", "inventory", import_dir, ledger, routing, partition="2026-11-25")

    replay = run("amazon", "inventory", import_dir, ledger, routing, partition="2026-11-24")

    level = ledger.read_table("inventory_levels").iloc[0]
    assert level["available"] == 87
    assert level["partition_key"] == "2026-11-25"
    assert replay.stored["inventory_levels"].counts()["stale"] == 1
