"""The outbox: one delivery per record version across retries, replays and crashes; held records wait."""

from datetime import datetime
from typing import Any, ClassVar

import pytest

from meshline_pipelines.delivery.base import DELIVERED, REJECTED, RETRY, DeliveryResult, TargetClient
from meshline_pipelines.delivery.outbox import (
    DRY, LIVE, Planned, holding_exceptions, plan, read_outbox, release, send,
)
from meshline_pipelines.identity import read_links
from meshline_pipelines.queue import transition
from meshline_pipelines.sources.live import Window
from meshline_pipelines.trace import trace_record


class TargetDouble(TargetClient):
    """A target that upserts by record key in memory, so one record per key proves idempotence."""

    system: ClassVar[str] = "netsuite"
    base_url_setting: ClassVar[str] = "NETSUITE_API_BASE_URL"
    credential_settings: ClassVar[tuple[str, ...]] = ()
    streams: ClassVar[tuple[str, ...]] = ()
    entities: ClassVar[tuple[str, ...]] = ("sales_order",)

    @property
    def account(self) -> str:
        return "1234567"

    def cursor(self, stream: str, payload: Any) -> datetime | None:
        return None

    def pages(self, stream: str, window: Window):
        return iter(())

    def deliver(self, entity, records):
        state = STATE.setdefault(id(self), {"records": {}, "calls": [], "answers": []})
        results = []
        for record in records:
            state["calls"].append(record.record_key)
            answer = state["answers"].pop(0) if state["answers"] else DELIVERED
            if answer == "crash":
                raise KeyboardInterrupt("the worker died after the target answered")
            if answer == DELIVERED:
                state["records"][record.record_key] = record.payload
                results.append(DeliveryResult(record.idempotency_key, DELIVERED, target_id=f"ns-{record.record_key}"))
            elif answer == REJECTED:
                results.append(DeliveryResult(record.idempotency_key, REJECTED, http_status=400,
                                              message="Invalid field value USD for currency"))
            else:
                results.append(DeliveryResult(record.idempotency_key, RETRY, message="HTTP 503 after 5 attempts"))
        return results


STATE: dict = {}


def _target():
    client = TargetDouble(base_url="https://1234567.suitetalk.api.netsuite.com")
    STATE[id(client)] = {"records": {}, "calls": [], "answers": []}
    return client, STATE[id(client)]


def _planned(version: str = "v1", source_id: str = "1001") -> Planned:
    return Planned(source_system="shopify", source_account="shop.myshopify.com", source_id=source_id,
                   version=version, record_key=f"shopify-{source_id}", payload={"externalId": f"shopify-{source_id}",
                                                                                 "version": version})


def test_dry_run_sends_nothing(ledger, routing):
    client, state = _target()

    counts = plan(ledger, "netsuite", "1234567", "sales_order", [_planned()], mode=DRY)
    sent = send(ledger, client, routing, target="netsuite", entity="sales_order")

    assert counts == {"dry_run": 1}
    assert sent == {}
    assert state["calls"] == []
    row = read_outbox(ledger).iloc[0]
    assert row["status"] == "dry_run"
    assert '"externalId":"shopify-1001"' in row["payload"]


def test_one_delivery_per_version_across_replays_and_retries(ledger, routing):
    client, state = _target()
    state["answers"] = [RETRY]

    plan(ledger, "netsuite", "1234567", "sales_order", [_planned()], mode=LIVE)
    first = send(ledger, client, routing, target="netsuite", entity="sales_order")
    plan(ledger, "netsuite", "1234567", "sales_order", [_planned()], mode=LIVE)  # a replay plans it again
    second = send(ledger, client, routing, target="netsuite", entity="sales_order")
    third = send(ledger, client, routing, target="netsuite", entity="sales_order")
    plan(ledger, "netsuite", "1234567", "sales_order", [_planned("v2")], mode=LIVE)
    fourth = send(ledger, client, routing, target="netsuite", entity="sales_order")

    assert (first, second, third, fourth) == ({"pending": 1}, {"delivered": 1}, {}, {"delivered": 1})
    assert state["calls"] == ["shopify-1001", "shopify-1001", "shopify-1001"]
    rows = read_outbox(ledger)
    assert rows[["version", "status", "attempts", "target_id"]].values.tolist() == [
        ["v1", "delivered", 2, "ns-shopify-1001"], ["v2", "delivered", 1, "ns-shopify-1001"]]


def test_crash_before_confirm_keeps_one_record(ledger, routing):
    client, state = _target()
    state["answers"] = ["crash"]
    plan(ledger, "netsuite", "1234567", "sales_order", [_planned()], mode=LIVE)

    with pytest.raises(KeyboardInterrupt):
        send(ledger, client, routing, target="netsuite", entity="sales_order")
    assert read_outbox(ledger).iloc[0]["status"] == "sending"
    again = send(ledger, client, routing, target="netsuite", entity="sales_order")

    assert again == {"delivered": 1}
    assert list(state["records"]) == ["shopify-1001"]


def test_held_record_waits_until_its_exception_is_approved(ledger, routing, import_dir, monkeypatch):
    from meshline_pipelines_tests.test_queue import _open_exception

    exception_id = _open_exception(ledger, routing, import_dir)  # order 9001 of the shop in the samples
    client, state = _target()
    waiting = Planned(source_system="shopify", source_account="jsmith.myshopify.com", source_id="9001", version="v1",
                   record_key="shopify-9001", payload={"externalId": "shopify-9001"})

    assert plan(ledger, "netsuite", "1234567", "sales_order", [waiting], mode=LIVE) == {"held": 1}
    assert send(ledger, client, routing, target="netsuite", entity="sales_order") == {}
    transition(ledger, exception_id, "approve", actor="ana@example.com", reason="total checked")
    assert holding_exceptions(ledger, "shopify", "9001")  # the order's other problems still hold it
    assert release(ledger, "shopify", "9001") == 0
    others = ledger.read_exceptions()
    for other in others[others["id"] != exception_id].itertuples():
        transition(ledger, other.id, "approve", actor="ana@example.com")
    monkeypatch.setenv("MESHLINE_DELIVERY_MODE", "live")
    assert release(ledger, "shopify", "9001") == 1
    assert read_outbox(ledger).iloc[0]["status"] == "pending"
    assert plan(ledger, "netsuite", "1234567", "sales_order", [waiting], mode=LIVE) == {"pending": 1}
    assert send(ledger, client, routing, target="netsuite", entity="sales_order") == {"delivered": 1}
    assert state["calls"] == ["shopify-9001"]


def test_rejection_becomes_an_exception_for_the_decision_owner(ledger, routing):
    client, state = _target()
    state["answers"] = [REJECTED]
    plan(ledger, "netsuite", "1234567", "sales_order", [_planned()], mode=LIVE)

    assert send(ledger, client, routing, target="netsuite", entity="sales_order") == {"rejected": 1}

    problem = ledger.read_exceptions().iloc[0]
    assert (problem["kind"], problem["record_id"], problem["owner"]) == ("failed_validation", "1001", "team:order-ops")
    assert "Netsuite rejected sales_order shopify-1001: Invalid field value USD for currency" in problem["reason"]
    assert plan(ledger, "netsuite", "1234567", "sales_order", [_planned("v2")], mode=LIVE) == {"held": 1}


def test_delivery_links_and_traces(ledger, routing):
    client, _ = _target()
    plan(ledger, "netsuite", "1234567", "sales_order", [_planned()], mode=LIVE)
    send(ledger, client, routing, target="netsuite", entity="sales_order")

    path = trace_record(ledger, "shopify", "1001")

    links = read_links(ledger, entity="order")
    assert links[["canonical_id", "system", "system_id"]].values.tolist() == [
        ["order:shopify:shop.myshopify.com:1001", "netsuite", "ns-shopify-1001"]]
    assert "delivery: delivered" in path["step"].tolist()
    assert "mapped: order" in path["step"].tolist()
