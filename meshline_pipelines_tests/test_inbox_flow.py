"""From signed webhook to ledger: the inbox sensor, the inbox job, ordering, duplicates and compliance."""

import json

import dagster as dg
import pytest
import sqlalchemy as sa

from meshline_pipelines.definitions import build_definitions
from meshline_pipelines.jobs import INBOX_JOB
from meshline_pipelines.ledger import Ledger
from meshline_pipelines.ledger.tables import audit_events
from meshline_pipelines.resources import LedgerResource, RoutingResource
from meshline_pipelines.triggers import read_triggers
from meshline_pipelines.webhooks import inbox
from meshline_pipelines_tests.helpers import clients
from meshline_pipelines_tests.test_webhooks import (
    NOW, SHOP, STRIPE_ACCOUNT, make_receiver, shopify_body, shopify_headers, stripe_event_body, stripe_headers,
)


@pytest.fixture
def definitions(ledger_url, import_dir):
    return build_definitions({**clients(import_dir), "ledger": LedgerResource(database_url=ledger_url),
                              "routing": RoutingResource()})


def _deliver_shopify(receiver, *, event_id: str, topic: str = "orders/updated", triggered_at: str, **order):
    body = shopify_body(**order) if topic.startswith("orders/") and topic != "orders/delete" else \
        json.dumps(order).encode()
    response = receiver.post("/webhooks/shopify", content=body,
                             headers=shopify_headers(body, topic=topic, event_id=event_id, triggered_at=triggered_at))
    assert response.status_code == 200, response.text


def _tick_and_run(definitions, instance, cursor=None):
    """Evaluate the inbox sensor and run what it requests; return the sensor result."""
    context = dg.build_sensor_context(cursor=cursor, instance=instance, definitions=definitions,
                                      resources=definitions.resources)
    result = definitions.resolve_sensor_def("inbox_sensor").evaluate_tick(context)
    job = definitions.resolve_job_def(INBOX_JOB)
    for request in result.run_requests:
        job.execute_in_process(run_config=request.run_config, instance=instance, tags=request.tags,
                               raise_on_error=False)
    return result


def _steps(ledger: Ledger, record_id: str) -> list[str]:
    with ledger.engine.connect() as connection:
        return list(connection.execute(sa.select(audit_events.c.step).where(
            audit_events.c.record_id == record_id).order_by(audit_events.c.id)).scalars())


def test_webhook_order_reaches_the_ledger_once(ledger_url, definitions):
    ledger = Ledger.connect(ledger_url)
    with make_receiver(ledger_url) as receiver, dg.instance_for_test() as instance:
        _deliver_shopify(receiver, event_id="evt-a", triggered_at="2026-11-24T10:00:00Z", id=7001)
        _deliver_shopify(receiver, event_id="evt-a", triggered_at="2026-11-24T10:00:00Z", id=7001)
        first = _tick_and_run(definitions, instance)
        second = _tick_and_run(definitions, instance, first.cursor)

    assert len(first.run_requests) == 1
    assert first.run_requests[0].tags["connector"] == "shopify"
    assert second.run_requests == []
    orders = ledger.read_table("orders", system="shopify")
    assert orders["source_id"].tolist() == ["7001"]
    assert orders["partition_key"].tolist() == ["2026-11-24"]
    events = inbox.read_inbox(ledger)
    assert events["status"].tolist() == ["processed"]
    assert events["deliveries"].tolist() == [2]
    assert events["record_id"].tolist() == ["7001"]
    assert _steps(ledger, "7001") == ["triggered", "stored"]
    triggers = read_triggers(ledger)
    assert triggers[["kind", "reference", "status", "owner"]].values.tolist() == [
        ["webhook", "evt-a", "succeeded", "team:storefront"]]


def test_older_shopify_event_never_overwrites_newer_state(ledger_url, definitions):
    ledger = Ledger.connect(ledger_url)
    with make_receiver(ledger_url) as receiver, dg.instance_for_test() as instance:
        _deliver_shopify(receiver, event_id="evt-new", triggered_at="2026-11-24T12:00:00Z", id=7002,
                         updated_at="2026-11-24T12:00:00-00:00", financial_status="refunded")
        cursor = _tick_and_run(definitions, instance).cursor
        _deliver_shopify(receiver, event_id="evt-old", triggered_at="2026-11-24T11:00:00Z", id=7002,
                         updated_at="2026-11-24T11:00:00-00:00", financial_status="paid")
        _tick_and_run(definitions, instance, cursor)

    order = ledger.read_table("orders").set_index("source_id").loc["7002"]
    assert order["status"] == "refunded"
    assert _steps(ledger, "7002") == ["triggered", "stored", "triggered", "skipped_stale"]


def test_older_stripe_event_is_ignored(ledger_url, definitions):
    ledger = Ledger.connect(ledger_url)
    with make_receiver(ledger_url) as receiver, dg.instance_for_test() as instance:
        newer = stripe_event_body("evt_new", created=NOW - 5, event_type="charge.refunded")
        receiver.post("/webhooks/stripe", content=newer, headers=stripe_headers(newer))
        cursor = _tick_and_run(definitions, instance).cursor
        older = json.loads(stripe_event_body("evt_old", created=NOW - 60, event_type="charge.captured"))
        older["data"]["object"].update(amount_refunded=0, refunded=False)
        older = json.dumps(older).encode()
        receiver.post("/webhooks/stripe", content=older, headers=stripe_headers(older))
        _tick_and_run(definitions, instance, cursor)

    events = inbox.read_inbox(ledger).set_index("event_id")
    assert events.loc["evt_new", "status"] == "processed"
    assert events.loc["evt_old", "status"] == "ignored"
    assert "older than the event already applied" in events.loc["evt_old", "error"]
    payment = ledger.read_table("payments", system="stripe").iloc[0]
    assert payment["account"] == STRIPE_ACCOUNT
    assert payment["refunded_amount"] == payment["amount"]


def test_customer_redact_webhook_redacts_the_stored_order(ledger_url, definitions):
    ledger = Ledger.connect(ledger_url)
    with make_receiver(ledger_url) as receiver, dg.instance_for_test() as instance:
        _deliver_shopify(receiver, event_id="evt-order", triggered_at="2026-11-24T10:00:00Z", id=7003)
        cursor = _tick_and_run(definitions, instance).cursor
        redact = {"shop_id": 954889, "shop_domain": SHOP, "customer": {"id": 207119551},
                  "orders_to_redact": [7003]}
        _deliver_shopify(receiver, event_id="evt-redact", topic="customers/redact",
                         triggered_at="2026-11-25T10:00:00Z", **redact)
        _tick_and_run(definitions, instance, cursor)

    order = ledger.read_table("orders").set_index("source_id").loc["7003"]
    assert order["email"] is None or order["email"] != order["email"]
    assert "bob.norman" not in ledger.read_raw(system="shopify")["payload"].str.cat()
    assert inbox.read_inbox(ledger).set_index("event_id").loc["evt-redact", "status"] == "processed"
    assert _steps(ledger, "7003")[-1] == "redacted"


def test_order_delete_webhook_is_audited(ledger_url, definitions):
    ledger = Ledger.connect(ledger_url)
    with make_receiver(ledger_url) as receiver, dg.instance_for_test() as instance:
        _deliver_shopify(receiver, event_id="evt-create", triggered_at="2026-11-24T10:00:00Z", id=7004)
        cursor = _tick_and_run(definitions, instance).cursor
        _deliver_shopify(receiver, event_id="evt-delete", topic="orders/delete", triggered_at="2026-11-26T10:00:00Z",
                         id=7004)
        _tick_and_run(definitions, instance, cursor)

    assert "7004" in set(ledger.read_table("orders")["source_id"])
    assert _steps(ledger, "7004") == ["triggered", "stored", "triggered", "deleted_at_source"]


def test_unknown_topic_is_ignored_with_the_reason(ledger_url, definitions):
    ledger = Ledger.connect(ledger_url)
    with make_receiver(ledger_url) as receiver, dg.instance_for_test() as instance:
        _deliver_shopify(receiver, event_id="evt-theme", topic="themes/publish", triggered_at="2026-11-24T10:00:00Z",
                         id=1, name="Dawn")
        _tick_and_run(definitions, instance)

    event = inbox.read_inbox(ledger).iloc[0]
    assert event["status"] == "ignored"
    assert "no stream for the Shopify topic themes/publish" in event["error"]
