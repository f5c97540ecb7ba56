"""The webhook receiver and the inbox: signed Shopify and Stripe deliveries, as the senders sign them.

Signatures are computed here from the published schemes, not with the receiver's own helpers, so
a receiver that verified the wrong bytes or encoding would fail. Inbox tests run on SQLite and
PostgreSQL through `ledger_url`.
"""

import asyncio
import base64
import copy
import hashlib
import hmac
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from datetime import datetime, timezone

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa
from starlette.requests import Request
from typer.testing import CliRunner

from meshline_pipelines.cli import app as cli_app
from meshline_pipelines.ledger.store import content_hash
from meshline_pipelines.webhooks import inbox
from meshline_pipelines.webhooks.app import DEFAULT_MAX_BODY_BYTES, create_app, read_limited_body
from meshline_pipelines.webhooks.events import Rejected
from meshline_pipelines.webhooks.signatures import InvalidSignature, parse_secrets, parse_stripe_header
from meshline_pipelines_tests.conftest import sample_json

with warnings.catch_warnings():
    # Starlette 1.x warns on import that its TestClient will move from httpx to httpx2; these
    # tests use only the TestClient API, which stays the same.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

SHOP = "meshline-test.myshopify.com"
SHOPIFY_SECRET = "shpss_current_0123456789abcdef"
SHOPIFY_OLD_SECRET = "shpss_previous_fedcba9876543210"
STRIPE_SECRET = "whsec_current_0123456789abcdef"
STRIPE_OLD_SECRET = "whsec_previous_fedcba9876543210"
STRIPE_ACCOUNT = "acct_1MeshLineTest000"
# The receiver's clock in these tests, in Unix seconds: 2026-12-05T00:00:00Z.
NOW = 1_796_428_800


# Bodies in the senders' formats


def shopify_order(**changes) -> dict:
    """The first bundled Shopify order in the REST shape, which is the body of orders/* webhooks."""
    order = copy.deepcopy(sample_json("shopify", "orders.json")["orders"][0])
    order.update(changes)
    return order


def shopify_body(**changes) -> bytes:
    return json.dumps(shopify_order(**changes)).encode("utf-8")


def stripe_event_body(event_id: str = "evt_1QmeshLineRefund01", *, created: int = NOW - 5,
                      event_type: str = "charge.refunded", **extra) -> bytes:
    charge = copy.deepcopy(sample_json("stripe", "charges.json")["data"][0])
    charge.update(amount_refunded=charge["amount"], refunded=True)
    event = {
        "id": event_id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": created,
        "data": {"object": charge, "previous_attributes": {"amount_refunded": 0, "refunded": False}},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": "req_meshlineTest01", "idempotency_key": None},
        "type": event_type,
        **extra,
    }
    return json.dumps(event).encode("utf-8")


def shopify_hmac(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def shopify_headers(body: bytes, secret: str = SHOPIFY_SECRET, *, topic: str = "orders/updated",
                    event_id: str | None = "98880550-7158-44d4-b7cd-2c97c8a091b5",
                    webhook_id: str | None = "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
                    triggered_at: str | None = "2026-12-04T23:59:58.123456789Z") -> dict:
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Hmac-Sha256": shopify_hmac(body, secret),
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": SHOP,
        "X-Shopify-API-Version": "2026-07",
    }
    optional = {"X-Shopify-Event-Id": event_id, "X-Shopify-Webhook-Id": webhook_id,
                "X-Shopify-Triggered-At": triggered_at}
    headers.update({name: value for name, value in optional.items() if value is not None})
    return headers


def stripe_v1(body: bytes, secret: str, timestamp: int) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def stripe_headers(body: bytes, *secrets: str, timestamp: int = NOW - 2) -> dict:
    signatures = ",".join(f"v1={stripe_v1(body, secret, timestamp)}" for secret in secrets or (STRIPE_SECRET,))
    return {"Content-Type": "application/json", "Stripe-Signature": f"t={timestamp},{signatures}"}


# Fixtures


def make_receiver(ledger_url: str, **options) -> TestClient:
    settings = {"shopify_secret": SHOPIFY_SECRET, "stripe_secret": STRIPE_SECRET,
                "stripe_account_id": STRIPE_ACCOUNT, "clock": lambda: NOW, **options}
    return TestClient(create_app(ledger_url, **settings))


@pytest.fixture
def receiver(ledger_url):
    with make_receiver(ledger_url) as client:
        yield client


def stored(ledger, **filters):
    return inbox.read_inbox(ledger, **filters)


# Accepted deliveries


def test_shopify_delivery_stored(receiver, ledger):
    body = shopify_body()

    response = receiver.post("/webhooks/shopify", content=body, headers=shopify_headers(body))

    assert response.status_code == 200, response.text
    assert response.json()["duplicate"] is False
    rows = stored(ledger)
    assert len(rows) == 1
    row = rows.iloc[0]
    assert response.json()["inbox_id"] == row["id"]
    assert row["system"] == "shopify"
    assert row["account"] == SHOP
    assert row["topic"] == "orders/updated"
    assert row["event_id"] == "98880550-7158-44d4-b7cd-2c97c8a091b5"
    assert row["webhook_id"] == "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"
    assert row["triggered_at"] == datetime(2026, 12, 4, 23, 59, 58, 123456, tzinfo=timezone.utc)
    assert row["payload"] == body.decode("utf-8")
    assert row["content_hash"] == content_hash(body.decode("utf-8"))
    assert row["status"] == "received"
    assert row["deliveries"] == 1
    assert pd.isna(row["processed_at"])


def test_shopify_webhook_id_as_event_id(receiver, ledger):
    body = shopify_body()

    response = receiver.post("/webhooks/shopify", content=body,
                             headers=shopify_headers(body, event_id=None, triggered_at=None))

    assert response.status_code == 200, response.text
    row = stored(ledger).iloc[0]
    assert row["event_id"] == "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"
    assert pd.isna(row["triggered_at"])


def test_shopify_bad_triggered_at_still_stored(receiver, ledger):
    body = shopify_body()

    response = receiver.post("/webhooks/shopify", content=body,
                             headers=shopify_headers(body, triggered_at="yesterday"))

    assert response.status_code == 200, response.text
    assert pd.isna(stored(ledger).iloc[0]["triggered_at"])


def test_stripe_delivery_stored(receiver, ledger):
    body = stripe_event_body(created=NOW - 30)

    response = receiver.post("/webhooks/stripe", content=body, headers=stripe_headers(body))

    assert response.status_code == 200, response.text
    assert response.json()["event_id"] == "evt_1QmeshLineRefund01"
    row = stored(ledger).iloc[0]
    assert row["system"] == "stripe"
    assert row["account"] == STRIPE_ACCOUNT
    assert row["topic"] == "charge.refunded"
    assert row["event_id"] == "evt_1QmeshLineRefund01"
    assert pd.isna(row["webhook_id"])
    assert row["triggered_at"] == datetime.fromtimestamp(NOW - 30, timezone.utc)
    assert row["payload"] == body.decode("utf-8")
    assert json.loads(row["payload"])["data"]["object"]["id"] == "ch_1PgafuB7WZ01zgkWXYmPNZs8"
    assert row["status"] == "received"


def test_stripe_connect_event_uses_its_account(receiver, ledger):
    body = stripe_event_body(account="acct_1ConnectedShop0001")

    response = receiver.post("/webhooks/stripe", content=body, headers=stripe_headers(body))

    assert response.status_code == 200, response.text
    assert stored(ledger).iloc[0]["account"] == "acct_1ConnectedShop0001"


@pytest.mark.parametrize("topic", ["customers/data_request", "customers/redact", "shop/redact"])
def test_compliance_topics_stored(receiver, ledger, topic):
    body = json.dumps({"shop_id": 954889, "shop_domain": SHOP, "customer": {"id": 191167, "email": "john@example.com"},
                       "orders_requested": [299938, 280263]}).encode()

    response = receiver.post("/webhooks/shopify", content=body, headers=shopify_headers(body, topic=topic))

    assert response.status_code == 200, response.text
    row = stored(ledger).iloc[0]
    assert row["topic"] == topic
    assert row["status"] == "received"


def test_duplicate_delivery_counts(receiver, ledger):
    body = shopify_body()
    headers = shopify_headers(body)

    first = receiver.post("/webhooks/shopify", content=body, headers=headers)
    second = receiver.post("/webhooks/shopify", content=body, headers=headers)

    assert first.status_code == 200
    assert second.status_code == 200
    assert first.json()["duplicate"] is False
    assert second.json()["duplicate"] is True
    assert second.json()["inbox_id"] == first.json()["inbox_id"]
    rows = stored(ledger)
    assert len(rows) == 1
    assert rows.iloc[0]["deliveries"] == 2


def test_duplicate_keeps_first_payload(receiver, ledger):
    first_body = shopify_body(note="first")
    second_body = shopify_body(note="second")

    receiver.post("/webhooks/shopify", content=first_body, headers=shopify_headers(first_body))
    response = receiver.post("/webhooks/shopify", content=second_body, headers=shopify_headers(second_body))

    assert response.json()["duplicate"] is True
    row = stored(ledger).iloc[0]
    assert row["payload"] == first_body.decode()
    assert row["deliveries"] == 2


def test_out_of_order_deliveries_both_stored(receiver, ledger):
    older = shopify_body(updated_at="2026-12-04T10:00:00-05:00", note="packed")
    newer = shopify_body(updated_at="2026-12-04T10:05:00-05:00", note="shipped")

    # The newer update arrives first; the older one is redelivered after it.
    for body, event_id in ((newer, "evt-newer"), (older, "evt-older")):
        response = receiver.post("/webhooks/shopify", content=body, headers=shopify_headers(body, event_id=event_id))
        assert response.status_code == 200, response.text

    rows = stored(ledger)
    assert list(rows["event_id"]) == ["evt-newer", "evt-older"]
    assert [json.loads(payload)["note"] for payload in rows["payload"]] == ["shipped", "packed"]
    assert list(rows["deliveries"]) == [1, 1]


def test_same_event_id_in_two_systems_kept_apart(receiver, ledger):
    shopify = shopify_body()
    stripe = stripe_event_body("shared-id")

    receiver.post("/webhooks/shopify", content=shopify, headers=shopify_headers(shopify, event_id="shared-id"))
    receiver.post("/webhooks/stripe", content=stripe, headers=stripe_headers(stripe))

    assert sorted(stored(ledger)["system"]) == ["shopify", "stripe"]


# Secret rotation


def test_shopify_rotated_secret_passes(ledger_url, ledger):
    old_body = shopify_body(note="signed with the old secret")
    new_body = shopify_body(note="signed with the new secret")

    with make_receiver(ledger_url, shopify_secret=f"{SHOPIFY_SECRET}, {SHOPIFY_OLD_SECRET}") as client:
        old = client.post("/webhooks/shopify", content=old_body,
                          headers=shopify_headers(old_body, SHOPIFY_OLD_SECRET, event_id="evt-old"))
        new = client.post("/webhooks/shopify", content=new_body,
                          headers=shopify_headers(new_body, SHOPIFY_SECRET, event_id="evt-new"))

    assert old.status_code == 200, old.text
    assert new.status_code == 200, new.text
    assert len(stored(ledger)) == 2


def test_stripe_two_signatures_one_matching(receiver, ledger):
    # While Stripe rolls an endpoint secret, the header has one v1 per secret, and only one is configured here.
    body = stripe_event_body()
    headers = stripe_headers(body, "whsec_other", STRIPE_SECRET)

    response = receiver.post("/webhooks/stripe", content=body, headers=headers)

    assert response.status_code == 200, response.text
    assert len(stored(ledger)) == 1


def test_stripe_rotated_secret_list_passes(ledger_url, ledger):
    body = stripe_event_body()

    with make_receiver(ledger_url, stripe_secret=[STRIPE_SECRET, STRIPE_OLD_SECRET]) as client:
        response = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body, STRIPE_OLD_SECRET))

    assert response.status_code == 200, response.text


def test_secrets_read_from_environment(ledger_url, ledger, monkeypatch):
    monkeypatch.setenv("SHOPIFY_WEBHOOK_SECRET", f"{SHOPIFY_OLD_SECRET},{SHOPIFY_SECRET}")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET)
    monkeypatch.setenv("STRIPE_ACCOUNT_ID", "acct_1FromEnvironment00")
    shopify = shopify_body()
    stripe = stripe_event_body()

    with TestClient(create_app(ledger_url, clock=lambda: NOW)) as client:
        shopify_response = client.post("/webhooks/shopify", content=shopify, headers=shopify_headers(shopify))
        stripe_response = client.post("/webhooks/stripe", content=stripe, headers=stripe_headers(stripe))

    assert shopify_response.status_code == 200, shopify_response.text
    assert stripe_response.status_code == 200, stripe_response.text
    assert stored(ledger, system="stripe").iloc[0]["account"] == "acct_1FromEnvironment00"


# Rejected deliveries


def assert_rejected(response, status_code: int, error: str) -> None:
    assert response.status_code == status_code, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == error
    for secret in (SHOPIFY_SECRET, SHOPIFY_OLD_SECRET, STRIPE_SECRET, STRIPE_OLD_SECRET):
        assert secret not in response.text


def test_tampered_shopify_body_rejected(receiver, ledger):
    body = shopify_body()
    headers = shopify_headers(body)
    tampered = body.replace(b'"total_price": "', b'"total_price": "1')
    assert tampered != body

    response = receiver.post("/webhooks/shopify", content=tampered, headers=headers)

    assert_rejected(response, 401, "invalid_signature")
    assert shopify_hmac(tampered, SHOPIFY_SECRET) not in response.text
    assert stored(ledger).empty


def test_tampered_stripe_body_rejected(receiver, ledger):
    body = stripe_event_body()
    headers = stripe_headers(body)
    tampered = body.replace(b'"amount": 100', b'"amount": 1000')
    assert tampered != body

    response = receiver.post("/webhooks/stripe", content=tampered, headers=headers)

    assert_rejected(response, 401, "invalid_signature")
    assert stripe_v1(tampered, STRIPE_SECRET, NOW - 2) not in response.text
    assert stored(ledger).empty


def test_wrong_secret_rejected(receiver, ledger):
    shopify = shopify_body()
    stripe = stripe_event_body()

    shopify_response = receiver.post("/webhooks/shopify", content=shopify,
                                     headers=shopify_headers(shopify, "shpss_not_ours"))
    stripe_response = receiver.post("/webhooks/stripe", content=stripe,
                                    headers=stripe_headers(stripe, "whsec_not_ours"))

    assert_rejected(shopify_response, 401, "invalid_signature")
    assert_rejected(stripe_response, 401, "invalid_signature")
    assert stored(ledger).empty


def test_stripe_timestamp_outside_signature_rejected(receiver, ledger):
    # The signature covers the timestamp: moving t to now without re-signing must fail.
    body = stripe_event_body()
    signature = stripe_v1(body, STRIPE_SECRET, NOW - 3600)

    response = receiver.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": f"t={NOW},v1={signature}"})

    assert_rejected(response, 401, "invalid_signature")


@pytest.mark.parametrize("path, headers", [
    ("/webhooks/shopify", {}),
    ("/webhooks/shopify", {"X-Shopify-Hmac-Sha256": " "}),
    ("/webhooks/stripe", {}),
    ("/webhooks/stripe", {"Stripe-Signature": f"t={NOW}"}),
    ("/webhooks/stripe", {"Stripe-Signature": "v1=abc"}),
    ("/webhooks/stripe", {"Stripe-Signature": "t=yesterday,v1=abc"}),
    ("/webhooks/stripe", {"Stripe-Signature": "garbage"}),
])
def test_missing_or_malformed_signature_rejected(receiver, ledger, path, headers):
    response = receiver.post(path, content=b'{"id": "evt_1"}', headers=headers)

    assert_rejected(response, 401, "invalid_signature")
    assert stored(ledger).empty


@pytest.mark.parametrize("timestamp", [NOW - 301, NOW - 86_400, NOW + 301])
def test_stale_stripe_timestamp_rejected(receiver, ledger, timestamp):
    body = stripe_event_body()

    response = receiver.post("/webhooks/stripe", content=body, headers=stripe_headers(body, timestamp=timestamp))

    assert_rejected(response, 400, "stale_timestamp")
    assert stored(ledger).empty


def test_stripe_timestamp_within_tolerance_passes(receiver, ledger):
    body = stripe_event_body()

    response = receiver.post("/webhooks/stripe", content=body, headers=stripe_headers(body, timestamp=NOW - 300))

    assert response.status_code == 200, response.text


def test_oversized_declared_body_rejected(receiver, ledger):
    body = shopify_body(note="x" * DEFAULT_MAX_BODY_BYTES)
    assert len(body) > DEFAULT_MAX_BODY_BYTES

    response = receiver.post("/webhooks/shopify", content=body, headers=shopify_headers(body))

    assert_rejected(response, 413, "body_too_large")
    assert stored(ledger).empty


def test_oversized_streamed_body_rejected(ledger_url, ledger):
    body = shopify_body()
    chunks = [body[start:start + 1000] for start in range(0, len(body), 1000)]

    # A generator body goes out chunked, without Content-Length, so only counting can stop it.
    with make_receiver(ledger_url, max_body_bytes=len(body) - 1) as client:
        response = client.post("/webhooks/shopify", content=iter(chunks), headers=shopify_headers(body))

    assert "content-length" not in {name.lower() for name in response.request.headers}
    assert_rejected(response, 413, "body_too_large")
    assert stored(ledger).empty


def test_body_at_limit_accepted(ledger_url, ledger):
    body = shopify_body()

    with make_receiver(ledger_url, max_body_bytes=len(body)) as client:
        response = client.post("/webhooks/shopify", content=body, headers=shopify_headers(body))

    assert response.status_code == 200, response.text


def test_declared_oversize_rejected_before_reading():
    received = []

    async def receive_message():
        received.append(True)
        return {"type": "http.request", "body": b"{}", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/webhooks/shopify",
             "headers": [(b"content-length", b"5000000")]}
    with pytest.raises(Rejected) as rejection:
        asyncio.run(read_limited_body(Request(scope, receive_message), 1024))

    assert rejection.value.status_code == 413
    assert received == []


@pytest.mark.parametrize("body", [
    b'{"id": 450789469, "note": ',
    b"",
    b"[]",
    b'"an order"',
    b'{"total_price": NaN}',
    b'{"note": "\xff\xfe"}',
    b"[" * 100_000 + b"]" * 100_000,
], ids=["truncated", "empty", "array", "string", "nan", "not-utf8", "deep-nesting"])
def test_malformed_shopify_body_rejected(receiver, ledger, body):
    response = receiver.post("/webhooks/shopify", content=body, headers=shopify_headers(body))

    assert_rejected(response, 400, "invalid_body")
    assert stored(ledger).empty


def test_malformed_stripe_body_rejected(receiver, ledger):
    body = b'{"id": "evt_1", "type": "charge.refunded", "created": '

    response = receiver.post("/webhooks/stripe", content=body, headers=stripe_headers(body))

    assert_rejected(response, 400, "invalid_body")
    assert stored(ledger).empty


@pytest.mark.parametrize("missing, error", [
    ("X-Shopify-Topic", "missing_header"),
    ("X-Shopify-Shop-Domain", "missing_header"),
    ("both IDs", "missing_header"),
])
def test_shopify_missing_headers_rejected(receiver, ledger, missing, error):
    body = shopify_body()
    headers = shopify_headers(body)
    if missing == "both IDs":
        del headers["X-Shopify-Event-Id"], headers["X-Shopify-Webhook-Id"]
    else:
        del headers[missing]

    response = receiver.post("/webhooks/shopify", content=body, headers=headers)

    assert_rejected(response, 400, error)
    assert stored(ledger).empty


def test_shopify_invalid_shop_domain_rejected(receiver, ledger):
    body = shopify_body()
    headers = {**shopify_headers(body), "X-Shopify-Shop-Domain": "https://evil.example/path"}

    response = receiver.post("/webhooks/shopify", content=body, headers=headers)

    assert_rejected(response, 400, "invalid_header")


@pytest.mark.parametrize("changes", [
    {"id": None},
    {"id": ""},
    {"type": None},
    {"created": "2026-12-05T00:00:00Z"},
    {"created": True},
    {"object": "charge"},
    {"account": 42},
], ids=["no-id", "empty-id", "no-type", "created-iso", "created-bool", "not-an-event", "account-number"])
def test_stripe_invalid_event_rejected(receiver, ledger, changes):
    event = json.loads(stripe_event_body())
    for name, value in changes.items():
        if value is None:
            del event[name]
        else:
            event[name] = value
    body = json.dumps(event).encode()

    response = receiver.post("/webhooks/stripe", content=body, headers=stripe_headers(body))

    assert_rejected(response, 400, "invalid_event")
    assert stored(ledger).empty


def test_missing_secrets_give_503(ledger_url, ledger, monkeypatch):
    for name in ("SHOPIFY_WEBHOOK_SECRET", "STRIPE_WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    shopify = shopify_body()
    stripe = stripe_event_body()

    with TestClient(create_app(ledger_url, stripe_account_id=STRIPE_ACCOUNT, clock=lambda: NOW)) as client:
        shopify_response = client.post("/webhooks/shopify", content=shopify, headers=shopify_headers(shopify))
        stripe_response = client.post("/webhooks/stripe", content=stripe, headers=stripe_headers(stripe))

    assert_rejected(shopify_response, 503, "not_configured")
    assert "SHOPIFY_WEBHOOK_SECRET" in shopify_response.json()["detail"]
    assert_rejected(stripe_response, 503, "not_configured")
    assert stored(ledger).empty


def test_empty_secret_list_gives_503(ledger_url, ledger):
    body = shopify_body()

    with make_receiver(ledger_url, shopify_secret=" , ") as client:
        response = client.post("/webhooks/shopify", content=body, headers=shopify_headers(body))

    assert_rejected(response, 503, "not_configured")


def test_stripe_without_account_gives_503(ledger_url, ledger, monkeypatch):
    monkeypatch.delenv("STRIPE_ACCOUNT_ID", raising=False)
    body = stripe_event_body()

    with make_receiver(ledger_url, stripe_account_id=None) as client:
        response = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))

    assert_rejected(response, 503, "not_configured")
    assert "STRIPE_ACCOUNT_ID" in response.json()["detail"]
    assert stored(ledger).empty


def test_rejection_logged_without_secrets(receiver, caplog):
    body = shopify_body()
    headers = shopify_headers(body, "shpss_not_ours")

    with caplog.at_level(logging.WARNING, logger="meshline_pipelines.webhooks"):
        receiver.post("/webhooks/shopify", content=body, headers=headers)

    lines = [record.getMessage() for record in caplog.records if record.name.startswith("meshline_pipelines.webhooks")]
    assert len(lines) == 1
    assert "shopify" in lines[0]
    assert "401" in lines[0]
    assert "invalid_signature" in lines[0]
    assert SHOPIFY_SECRET not in lines[0]
    assert headers["X-Shopify-Hmac-Sha256"] not in lines[0]
    assert shopify_hmac(body, SHOPIFY_SECRET) not in lines[0]
    assert "bob.norman" not in lines[0]


def test_storage_failure_gives_500(receiver, ledger, caplog):
    body = shopify_body()
    with ledger.engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE inbox_events"))

    with caplog.at_level(logging.ERROR, logger="meshline_pipelines.webhooks"):
        response = receiver.post("/webhooks/shopify", content=body, headers=shopify_headers(body))

    assert_rejected(response, 500, "storage_failed")
    assert "could not store shopify event 98880550-7158-44d4-b7cd-2c97c8a091b5" in caplog.text


def test_get_on_webhook_route_not_allowed(receiver):
    assert receiver.get("/webhooks/shopify").status_code == 405


def test_healthz(receiver):
    response = receiver.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_create_app_rejects_bad_limits(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with pytest.raises(ValueError, match="max_body_bytes"):
        create_app(url, max_body_bytes=0)
    with pytest.raises(ValueError, match="stripe_tolerance_seconds"):
        create_app(url, stripe_tolerance_seconds=0)


# Signature helpers


def test_parse_secrets():
    assert parse_secrets(None) == ()
    assert parse_secrets("") == ()
    assert parse_secrets(" new , old ,, ") == ("new", "old")
    assert parse_secrets(["new", " ", "old"]) == ("new", "old")


def test_stripe_header_ignores_other_schemes():
    parsed = parse_stripe_header("t=1796428800,v0=aaaa,v1=bbbb,v1=cccc")

    assert parsed.timestamp == 1796428800
    assert parsed.signatures == ("bbbb", "cccc")


def test_stripe_header_needs_v1():
    with pytest.raises(InvalidSignature, match="no v1"):
        parse_stripe_header("t=1796428800,v0=aaaa")


# Inbox functions


def event(event_id: str, *, system: str = "shopify", topic: str = "orders/updated") -> inbox.InboxEvent:
    return inbox.InboxEvent(system=system, account=SHOP, event_id=event_id, topic=topic,
                            payload=json.dumps({"event": event_id}))


def test_receive_reports_duplicates(ledger):
    first_id, first_duplicate = inbox.receive(ledger, event("e1"))
    again_id, again_duplicate = inbox.receive(ledger, event("e1"))
    other_id, other_duplicate = inbox.receive(ledger, event("e2"))

    assert (first_duplicate, again_duplicate, other_duplicate) == (False, True, False)
    assert again_id == first_id
    assert other_id != first_id
    assert list(inbox.read_inbox(ledger)["deliveries"]) == [2, 1]


def test_concurrent_duplicates_one_row(ledger):
    threads = 8
    barrier = threading.Barrier(threads)
    outcomes = []
    errors = []

    def deliver():
        barrier.wait()
        try:
            outcomes.append(inbox.receive(ledger, event("e-concurrent")))
        except Exception as error:  # Collected so that the assertion below shows the error.
            errors.append(error)

    workers = [threading.Thread(target=deliver) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)

    assert errors == []
    assert len({inbox_id for inbox_id, _ in outcomes}) == 1
    assert sorted(duplicate for _, duplicate in outcomes) == [False] + [True] * (threads - 1)
    rows = inbox.read_inbox(ledger)
    assert len(rows) == 1
    assert rows.iloc[0]["deliveries"] == threads


def test_pending_orders_and_pages(ledger):
    ids = [inbox.receive(ledger, event(f"e{number}"))[0] for number in range(5)]
    inbox.mark(ledger, [ids[1]], "processed", run_id="run-1")

    first_page = inbox.pending(ledger, limit=2)
    next_page = inbox.pending(ledger, after_id=int(first_page["id"].iloc[-1]), limit=2)

    assert list(first_page["id"]) == [ids[0], ids[2]]
    assert list(next_page["id"]) == [ids[3], ids[4]]
    assert set(first_page["status"]) == {"received"}
    assert inbox.pending(ledger, after_id=ids[4]).empty


def test_pending_rejects_bad_limit(ledger):
    with pytest.raises(ValueError, match="limit"):
        inbox.pending(ledger, limit=0)


def test_mark_sets_status_and_run(ledger):
    processed, failed, ignored = (inbox.receive(ledger, event(f"e{number}"))[0] for number in range(3))

    changed = inbox.mark(ledger, [processed], "processed", run_id="run-7")
    inbox.mark(ledger, [failed], "failed", run_id="run-8", error="order 450789469 not found")
    inbox.mark(ledger, [ignored], "ignored")

    assert changed == 1
    rows = inbox.read_inbox(ledger).set_index("id")
    assert rows.loc[processed, "status"] == "processed"
    assert rows.loc[processed, "run_id"] == "run-7"
    assert rows.loc[failed, "status"] == "failed"
    assert rows.loc[failed, "error"] == "order 450789469 not found"
    assert rows.loc[ignored, "status"] == "ignored"
    assert rows["processed_at"].notna().all()
    assert inbox.pending(ledger).empty


def test_mark_received_requeues(ledger):
    inbox_id, _ = inbox.receive(ledger, event("e1"))
    inbox.mark(ledger, [inbox_id], "failed", run_id="run-1", error="timed out")

    inbox.mark(ledger, [inbox_id], "received")

    row = inbox.pending(ledger).iloc[0]
    assert row["id"] == inbox_id
    assert pd.isna(row["processed_at"])
    assert pd.isna(row["error"])


def test_mark_rejects_unknown_status(ledger):
    inbox_id, _ = inbox.receive(ledger, event("e1"))

    with pytest.raises(ValueError, match="unknown inbox status 'done'"):
        inbox.mark(ledger, [inbox_id], "done")
    assert inbox.mark(ledger, [], "processed") == 0


def test_read_inbox_filters(ledger):
    inbox.receive(ledger, event("e1"))
    stripe_id, _ = inbox.receive(ledger, event("evt_1", system="stripe", topic="charge.refunded"))
    inbox.mark(ledger, [stripe_id], "processed")

    assert list(inbox.read_inbox(ledger, system="stripe")["event_id"]) == ["evt_1"]
    assert list(inbox.read_inbox(ledger, status="received")["event_id"]) == ["e1"]
    assert inbox.read_inbox(ledger, status="failed", system="shopify").empty
    with pytest.raises(ValueError, match="unknown inbox status"):
        inbox.read_inbox(ledger, status="open")


# Command line


@pytest.fixture
def cli_env(tmp_path, monkeypatch, ledger_url):
    monkeypatch.setenv("MESHLINE_HOME", str(tmp_path / ".meshline"))
    monkeypatch.setenv("MESHLINE_DATABASE_URL", ledger_url)
    monkeypatch.chdir(tmp_path)


def invoke(*arguments) -> str:
    result = CliRunner().invoke(cli_app, list(arguments))
    assert result.exit_code == 0, result.output
    return result.output


def test_inbox_list_table_and_json(cli_env, ledger):
    inbox.receive(ledger, event("e1"))
    stripe_id, _ = inbox.receive(ledger, event("evt_1", system="stripe", topic="charge.refunded"))
    inbox.mark(ledger, [stripe_id], "processed", run_id="run-9")

    table = invoke("inbox", "list")
    rows = json.loads(invoke("inbox", "list", "--system", "stripe", "--format", "json"))
    received = json.loads(invoke("inbox", "list", "--status", "received", "--format", "json"))

    assert "inbox events (2)" in table
    assert "orders/updated" in table
    assert "charge.refunded" in table
    assert len(rows) == 1
    assert rows[0]["event_id"] == "evt_1"
    assert rows[0]["status"] == "processed"
    assert rows[0]["run_id"] == "run-9"
    assert rows[0]["payload"] == {"event": "evt_1"}
    assert rows[0]["processed_at"].endswith("+00:00")
    assert set(rows[0]) == {column.name for column in inbox.inbox_events.columns}
    assert [row["event_id"] for row in received] == ["e1"]


def test_inbox_list_rejects_unknown_filters(cli_env):
    runner = CliRunner()

    bad_status = runner.invoke(cli_app, ["inbox", "list", "--status", "open"])
    bad_system = runner.invoke(cli_app, ["inbox", "list", "--system", "amazon"])

    assert bad_status.exit_code == 2
    assert "unknown status 'open'" in bad_status.output
    assert bad_system.exit_code == 2
    assert "unknown system 'amazon'" in bad_system.output


# A real server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_stores_signed_shopify_webhook(tmp_path, ledger_url, ledger):
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    environment = {**os.environ, "MESHLINE_HOME": str(tmp_path / ".meshline"), "MESHLINE_DATABASE_URL": ledger_url,
                   "SHOPIFY_WEBHOOK_SECRET": SHOPIFY_SECRET}
    environment.pop("STRIPE_WEBHOOK_SECRET", None)
    log_path = tmp_path / "serve.log"
    body = shopify_body()

    with open(log_path, "wb") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "meshline_pipelines.cli", "webhooks", "serve", "--port", str(port)],
            cwd=tmp_path, env=environment, stdout=log_file, stderr=subprocess.STDOUT,
        )
        try:
            # Proxies from the environment must not see loopback traffic.
            with httpx.Client(base_url=base_url, trust_env=False, timeout=10) as client:
                deadline = time.monotonic() + 60
                while True:
                    assert server.poll() is None, log_path.read_text()
                    try:
                        if client.get("/healthz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert time.monotonic() < deadline, "receiver did not start in 60 s:\n" + log_path.read_text()
                    time.sleep(0.2)

                response = client.post("/webhooks/shopify", content=body, headers=shopify_headers(body))
                rejected = client.post("/webhooks/shopify", content=body,
                                       headers=shopify_headers(body, "shpss_not_ours", event_id="evt-forged"))
                unconfigured = client.post("/webhooks/stripe", content=b"{}", headers={"Stripe-Signature": "t=1,v1=0"})
        finally:
            server.send_signal(signal.SIGINT)
            exit_code = server.wait(timeout=30)

    output = log_path.read_text()
    assert response.status_code == 200, output
    assert rejected.status_code == 401
    assert unconfigured.status_code == 503
    assert exit_code == 0, output
    rows = stored(ledger)
    assert len(rows) == 1
    assert rows.iloc[0]["payload"] == body.decode()
    assert "stored shopify event" in output
    assert "rejected shopify webhook" in output
    assert SHOPIFY_SECRET not in output
