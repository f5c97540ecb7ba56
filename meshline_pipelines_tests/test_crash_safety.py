"""Crash safety: a run killed at any step, then replayed, leaves the ledger equal to a clean run."""

import copy
import hashlib
import json
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from meshline_pipelines.extract import extract_stream
from meshline_pipelines.ledger import Ledger
from meshline_pipelines.ledger.tables import audit_events, watermarks
from meshline_pipelines.stripe.api import StripeApiClient
from meshline_pipelines_tests.conftest import drop_file, sample_json
from meshline_pipelines_tests.helpers import run, stream
from meshline_pipelines_tests.snapshots import end_state
from meshline_pipelines_tests.stripe_mock import StripeDouble, charge

DAYS = ("2026-11-23", "2026-11-24")
NOV_2 = int(datetime(2026, 11, 2, tzinfo=timezone.utc).timestamp())


class Killed(BaseException):
    """Stands for the process dying: nothing in MeshLine catches it."""


def _kill_once(monkeypatch, method: str, call: int, work) -> None:
    """Run `work` with the `call`-th call of the Ledger method dying, then put the method back."""
    original = getattr(Ledger, method)
    calls = []

    def dies(self, *args, **kwargs):
        calls.append(method)
        if len(calls) == call:
            raise Killed(f"killed in {method} call {call}")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Ledger, method, dies)
    with pytest.raises(Killed):
        work()
    monkeypatch.setattr(Ledger, method, original)


def checksum(ledger: Ledger) -> str:
    """Hash the ledger's end state, its audit trail (as distinct steps per record) and its watermarks."""
    state = end_state(ledger)
    with ledger.engine.connect() as connection:
        state["audit"] = sorted({tuple(row) for row in connection.execute(sa.select(
            audit_events.c.system, audit_events.c.entity, audit_events.c.record_id, audit_events.c.step))})
        state["watermarks"] = sorted(tuple(row) for row in connection.execute(sa.select(
            watermarks.c.system, watermarks.c.account, watermarks.c.stream, watermarks.c.cursor_value,
            watermarks.c.ids_at_cursor)))
    return hashlib.sha256(json.dumps(state, default=str, sort_keys=True).encode()).hexdigest()


def _orders(day_number: int) -> list[dict]:
    template = sample_json("shopify", "orders.json")["orders"][0]
    orders = []
    for n in range(12):
        order = copy.deepcopy(template)
        order["id"] = day_number * 1000 + n
        for position, line in enumerate(order["line_items"]):
            line["id"] = order["id"] * 10 + position
        if n == 5:
            del order["total_price_set"]  # held back as a missing_field exception
        orders.append(order)
    return orders


def _import_days(import_dir) -> None:
    for number, day in enumerate(DAYS, start=1):
        drop_file(import_dir, "shopify", "orders.json", partition=day,
                  content=json.dumps({"orders": _orders(number)}).encode())


def _run_days(import_dir, ledger, routing) -> None:
    for day in DAYS:
        run("shopify", "orders", import_dir, ledger, routing, partition=day)


# (Ledger method, the call that dies): landing raw payloads, storing the orders (call 1) or their
# lines (call 2, after the orders are stored), auditing rejections, and opening exceptions.
KILL_POINTS = [
    ("land_raw", 1), ("land_raw", 2), ("store", 1), ("store", 2), ("store", 3),
    ("record_audit", 1), ("record_audit", 3), ("open_exceptions", 1), ("open_exceptions", 2),
]


@pytest.mark.parametrize("method, call", KILL_POINTS, ids=[f"{m}-{c}" for m, c in KILL_POINTS])
def test_killed_file_import_replays_clean(method, call, make_postgres_database, routing, import_dir,
                                                            monkeypatch):
    _import_days(import_dir)
    clean = Ledger.connect(make_postgres_database())
    _run_days(import_dir, clean, routing)

    crashed = Ledger.connect(make_postgres_database())
    _kill_once(monkeypatch, method, call, lambda: _run_days(import_dir, crashed, routing))
    _run_days(import_dir, crashed, routing)

    assert checksum(crashed) == checksum(clean)
    clean.dispose()
    crashed.dispose()


@pytest.mark.parametrize("method, call", [("land_raw", 1), ("store", 1), ("record_audit", 1), ("store", 2)])
def test_killed_extraction_replays_clean(method, call, make_postgres_database, routing, monkeypatch):
    double = StripeDouble()
    double.objects["charges"] = [charge(f"ch_{n:03d}", NOV_2 + 1800 * n) for n in range(80)]  # 80 charges over two days
    until = datetime.fromtimestamp(NOV_2 + 2 * 86400, timezone.utc)

    def extract(ledger):
        client = StripeApiClient(account_id="acct_1KILL", api_key="sk_test_double", base_url="https://api.stripe.test")
        # No `since`: the first run starts at the first partition, the replay at the watermark it left.
        return extract_stream(stream("stripe", "charges"), client.with_transport(double.transport()), ledger, routing,
                              until=until, lookback=timedelta(minutes=15))

    clean = Ledger.connect(make_postgres_database())
    extract(clean)
    crashed = Ledger.connect(make_postgres_database())
    _kill_once(monkeypatch, method, call, lambda: extract(crashed))
    extract(crashed)

    assert checksum(crashed) == checksum(clean)
