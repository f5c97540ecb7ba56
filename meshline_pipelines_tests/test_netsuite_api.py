"""The NetSuite client against a mock transport that responds in NetSuite's REST wire format.

SuiteQL pages carry `items`, `hasMore`, `offset`, `count` and `totalResults`. Record upserts
return 204 with the record's URL in `Location`, and errors carry `o:errorDetails`. No request
leaves the process: every response comes from `httpx.MockTransport`.
"""

import base64
import hashlib
import hmac
import json
import re
from urllib.parse import unquote

import httpx
import pandas as pd
import pytest

from meshline_pipelines.delivery.base import DELIVERED, REJECTED, RETRY, OutboundRecord
from meshline_pipelines.ingest import run_stream
from meshline_pipelines.ledger import Ledger
from meshline_pipelines.netsuite.api import NetSuiteClient, default_base_url, parse_netsuite_time, realm
from meshline_pipelines.netsuite.assets import STREAMS
from meshline_pipelines.netsuite.outbound import customer_payload, external_id, sales_order_payload
from meshline_pipelines.routing import load_routing
from meshline_pipelines.sources.http import ApiAuthError, ApiRequestError, ApiResponseError
from meshline_pipelines.sources.live import Window

ACCOUNT_ID = "1234567_SB1"
BASE_URL = "https://1234567-sb1.suitetalk.api.netsuite.com"
SECRETS = {"consumer_key": "ck-test", "consumer_secret": "cs-test/+", "token_id": "tid-test",
           "token_secret": "ts-test&"}
DAY = "2026-11-24"
SUITEQL = "/services/rest/query/v1/suiteql"
SALES_ORDER = "/services/rest/record/v1/salesOrder"


def client(handler, waits: list | None = None, **options) -> NetSuiteClient:
    settings = {"account_id": ACCOUNT_ID, "base_url": BASE_URL, **SECRETS, **options}
    return NetSuiteClient(**settings).with_transport(httpx.MockTransport(handler),
                                                     sleep=(waits if waits is not None else []).append)


def availability(item: int, location: int, available, changed: str, sku: str | None = None) -> dict:
    """One SuiteQL row as NetSuite returns it: numbers as text, with an empty `links` list."""
    return {"links": [], "item": str(item), "itemid": sku or f"SKU-{item}", "location": str(location),
            "quantityavailable": str(available), "lastmodifieddate": changed}


class FakeSuiteQL:
    """Serves `rows` as SuiteQL pages by `limit` and `offset`, after any `queued` responses."""

    def __init__(self, rows: list[dict]):
        self.rows = rows
        self.queued: list[httpx.Response] = []
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.queued:
            return self.queued.pop(0)
        assert request.method == "POST"
        assert request.url.path == SUITEQL
        limit = int(request.url.params["limit"])
        offset = int(request.url.params["offset"])
        page = self.rows[offset:offset + limit]
        return httpx.Response(200, json={
            "links": [{"rel": "self", "href": str(request.url)}],
            "count": len(page), "hasMore": offset + len(page) < len(self.rows), "items": page,
            "offset": offset, "totalResults": len(self.rows),
        })


def netsuite_error_body(status: int, detail: str, code: str) -> dict:
    return {"type": "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.1", "title": "Bad Request",
            "status": status, "o:errorDetails": [{"detail": detail, "o:errorCode": code}]}


# Inbound: SuiteQL paging


def test_suiteql_second_page_uses_offset():
    fake = FakeSuiteQL([availability(n, 1, n, f"{DAY} 0{n}:00:00") for n in range(1, 4)])

    batches = list(client(fake, page_size=2).fetch("inventory", Window.for_day(DAY)))

    assert [len(batch.records) for batch in batches] == [2, 1]
    assert [request.url.params["offset"] for request in fake.requests] == ["0", "2"]
    assert [request.url.params["limit"] for request in fake.requests] == ["2", "2"]
    assert all(request.headers["Prefer"] == "transient" for request in fake.requests)
    assert batches[1].origin == f"POST {SUITEQL} offset 2"


def test_suiteql_query_filters_window():
    fake = FakeSuiteQL([])

    list(client(fake).fetch("inventory", Window.for_day(DAY)))

    query = json.loads(fake.requests[0].content)["q"]
    assert "FROM AggregateItemLocation" in query
    assert "TO_TIMESTAMP('2026-11-24 00:00:00', 'YYYY-MM-DD HH24:MI:SS')" in query
    assert "< TO_TIMESTAMP('2026-11-25 00:00:00', 'YYYY-MM-DD HH24:MI:SS')" in query
    assert "ORDER BY" in query


def test_rows_outside_window_are_dropped():
    fake = FakeSuiteQL([availability(1, 1, 5, f"{DAY} 23:59:59"), availability(2, 1, 5, "2026-11-25 00:00:00")])

    batches = list(client(fake).fetch("inventory", Window.for_day(DAY)))

    assert [row["item"] for row in batches[0].records] == ["1"]
    assert batches[0].outside_window == 1


def test_netsuite_time_parsed_as_utc():
    moment = parse_netsuite_time("2026-11-24 15:04:05")

    assert moment is not None
    assert moment.isoformat() == "2026-11-24T15:04:05+00:00"
    assert parse_netsuite_time("24/11/2026 3:04 pm") is None
    assert parse_netsuite_time(None) is None


def test_429_then_success_waits_retry_after():
    fake = FakeSuiteQL([availability(1, 1, 7, f"{DAY} 10:00:00")])
    fake.queued = [httpx.Response(429, headers={"Retry-After": "2"},
                                   json=netsuite_error_body(429, "Concurrency limit exceeded.", "CONCURRENCY_LIMIT"))]
    waits: list = []

    batches = list(client(fake, waits).fetch("inventory", Window.for_day(DAY)))

    assert [row["item"] for batch in batches for row in batch.records] == ["1"]
    assert waits == [2.0]
    assert len(fake.requests) == 2


def test_has_more_without_items_is_malformed():
    def handler(request):
        return httpx.Response(200, json={"count": 0, "hasMore": True, "items": [], "offset": 0, "totalResults": 5})

    with pytest.raises(ApiResponseError, match="hasMore is true but the page has no items"):
        list(client(handler).fetch("inventory", Window.for_day(DAY)))


# Token-based authentication


def test_oauth_header_matches_independent_signature():
    fake = FakeSuiteQL([])

    list(client(fake, page_size=5).fetch("inventory", Window.for_day(DAY)))

    header = fake.requests[0].headers["Authorization"]
    assert header.startswith("OAuth ")
    fields = dict(re.findall(r'(\w+)="([^"]*)"', header))
    assert fields["realm"] == "1234567_SB1"
    assert fields["oauth_consumer_key"] == "ck-test"
    assert fields["oauth_token"] == "tid-test"
    assert fields["oauth_signature_method"] == "HMAC-SHA256"
    assert fields["oauth_version"] == "1.0"
    assert fields["oauth_timestamp"].isdigit()
    assert len(fields["oauth_nonce"]) >= 6
    assert set(fields) == {"realm", "oauth_consumer_key", "oauth_token", "oauth_signature_method",
                           "oauth_timestamp", "oauth_nonce", "oauth_version", "oauth_signature"}

    # The base string, written out by hand from RFC 5849 section 3.4.1: parameters sorted by name
    # and encoded once, then the URI and parameter string encoded again.
    nonce, timestamp = fields["oauth_nonce"], fields["oauth_timestamp"]
    parameters = (f"limit=5&oauth_consumer_key=ck-test&oauth_nonce={nonce}&oauth_signature_method=HMAC-SHA256"
                  f"&oauth_timestamp={timestamp}&oauth_token=tid-test&oauth_version=1.0&offset=0")
    base_string = ("POST&https%3A%2F%2F1234567-sb1.suitetalk.api.netsuite.com%2Fservices%2Frest%2Fquery%2Fv1%2Fsuiteql&"
                   + parameters.replace("=", "%3D").replace("&", "%26"))
    key = b"cs-test%2F%2B&ts-test%26"
    expected = base64.b64encode(hmac.new(key, base_string.encode(), hashlib.sha256).digest()).decode()
    assert unquote(fields["oauth_signature"]) == expected


def test_retry_is_signed_with_fresh_nonce():
    fake = FakeSuiteQL([])
    fake.queued = [httpx.Response(503, json=netsuite_error_body(503, "Service unavailable.", "UNEXPECTED_ERROR"))]

    list(client(fake).fetch("inventory", Window.for_day(DAY)))

    nonces = [re.search(r'oauth_nonce="([^"]+)"', request.headers["Authorization"]).group(1)
              for request in fake.requests]
    assert len(nonces) == 2
    assert nonces[0] != nonces[1]


def test_sandbox_realm_and_base_url():
    assert realm("1234567_sb1") == "1234567_SB1"
    assert realm("1234567-SB1") == "1234567_SB1"
    assert default_base_url("1234567_SB1") == "https://1234567-sb1.suitetalk.api.netsuite.com"
    assert default_base_url("7654321") == "https://7654321.suitetalk.api.netsuite.com"
    assert client(FakeSuiteQL([])).account == "1234567_SB1"


# Outbound: upserts by external ID


ORDER = {"system": "shopify", "account": "jsmith.myshopify.com", "source_id": "820982911946154508",
         "order_number": "#1001", "created_at": pd.Timestamp("2026-11-24T23:30:00Z"), "total_currency": "USD"}
LINES = [
    {"source_id": "466157049", "order_source_id": "820982911946154508", "sku": "IPOD2008GREEN", "quantity": 2,
     "currency": "USD", "unit_price_amount": 59894},
    {"source_id": "466157050", "order_source_id": "820982911946154508", "sku": "CASE-01", "quantity": 1,
     "currency": "USD", "unit_price_amount": pd.NA},
]
CUSTOMER_EID = external_id("shopify", "jsmith.myshopify.com", "207119551")


def order_record(version: str = "v1") -> OutboundRecord:
    payload = sales_order_payload(ORDER, LINES, CUSTOMER_EID)
    return OutboundRecord(target="netsuite", entity="sales_order", record_key=payload["externalId"], version=version,
                          idempotency_key=f"so-{version}", payload=payload)


class FakeRecords:
    """Returns 204 with a Location for each record upsert, after any `queued` responses."""

    def __init__(self):
        self.queued: list[httpx.Response] = []
        self.requests: list[httpx.Request] = []
        self.internal_ids: dict[str, int] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.queued:
            return self.queued.pop(0)
        record_type, key = request.url.path.rsplit("/", 2)[-2:]
        internal_id = self.internal_ids.setdefault(key, 8912 + len(self.internal_ids))
        location = f"{BASE_URL}/services/rest/record/v1/{record_type}/{internal_id}"
        return httpx.Response(204, headers={"Location": location})


def test_sales_order_upsert_put_to_eid_path():
    fake = FakeRecords()
    record = order_record()

    results = client(fake).deliver("sales_order", [record])

    request = fake.requests[0]
    assert request.method == "PUT"
    assert request.url.path == f"{SALES_ORDER}/eid:{record.record_key}"
    assert json.loads(request.content) == record.payload
    assert results[0].status == DELIVERED
    assert results[0].target_id == "8912"
    assert results[0].http_status == 204
    assert results[0].idempotency_key == "so-v1"


def test_same_record_twice_puts_same_eid():
    fake = FakeRecords()
    netsuite = client(fake)

    first = netsuite.deliver("sales_order", [order_record()])
    second = netsuite.deliver("sales_order", [order_record()])

    assert [request.method for request in fake.requests] == ["PUT", "PUT"]
    assert fake.requests[0].url.path == fake.requests[1].url.path
    assert first[0].target_id == second[0].target_id == "8912"


def test_customer_upsert_delivered():
    fake = FakeRecords()
    payload = customer_payload({"system": "shopify", "account": "jsmith.myshopify.com", "source_id": "207119551",
                                "email": "bob.norman@example.com", "first_name": "Bob", "last_name": "Norman",
                                "phone": None})
    record = OutboundRecord(target="netsuite", entity="customer", record_key=payload["externalId"], version="v1",
                            idempotency_key="cu-1", payload=payload)

    results = client(fake).deliver("customer", [record])

    assert fake.requests[0].url.path == f"/services/rest/record/v1/customer/eid:{CUSTOMER_EID}"
    assert results[0].status == DELIVERED


def test_400_error_details_become_rejected():
    fake = FakeRecords()
    detail = "Invalid value for the resource or sub-resource field 'item'. Provide a valid value."
    fake.queued = [httpx.Response(400, json=netsuite_error_body(400, detail, "INVALID_VALUE"))]

    results = client(fake).deliver("sales_order", [order_record()])

    assert results[0].status == REJECTED
    assert results[0].message == detail
    assert results[0].http_status == 400
    assert results[0].details["error_codes"] == ["INVALID_VALUE"]
    assert len(fake.requests) == 1


def test_persistent_503_becomes_retry():
    fake = FakeRecords()
    fake.queued = [httpx.Response(503, json=netsuite_error_body(503, "Service unavailable.", "UNEXPECTED_ERROR"))
                    for _ in range(3)]
    waits: list = []

    results = client(fake, waits, max_attempts=3).deliver("sales_order", [order_record()])

    assert results[0].status == RETRY
    assert results[0].http_status == 503
    assert "after 3 attempts" in results[0].message
    assert len(fake.requests) == 3
    assert len(waits) == 2


def test_timeouts_become_retry():
    def handler(request):
        raise httpx.ReadTimeout("timed out", request=request)

    results = client(handler, max_attempts=2).deliver("sales_order", [order_record()])

    assert results[0].status == RETRY
    assert "timed out" in results[0].message


def test_401_raises_for_whole_batch():
    fake = FakeRecords()
    fake.queued = [httpx.Response(401, json=netsuite_error_body(401, "Invalid login attempt.", "INVALID_LOGIN"))]

    with pytest.raises(ApiAuthError, match="NETSUITE_CONSUMER_KEY"):
        client(fake).deliver("sales_order", [order_record()])


def test_404_raises_for_whole_batch():
    fake = FakeRecords()
    fake.queued = [httpx.Response(404, json=netsuite_error_body(404, "Record type 'salesOrder' not found.",
                                                                "NONEXISTENT_ID"))]

    with pytest.raises(ApiRequestError, match="NETSUITE_API_BASE_URL"):
        client(fake).deliver("sales_order", [order_record()])


def test_invalid_external_id_rejected_locally():
    fake = FakeRecords()
    record = OutboundRecord(target="netsuite", entity="customer", record_key="shop|207", version="v1",
                            idempotency_key="cu-2", payload={})

    results = client(fake).deliver("customer", [record])

    assert results[0].status == REJECTED
    assert "invalid" in results[0].message
    assert fake.requests == []


def test_unknown_entity_raises():
    with pytest.raises(ValueError, match="expected one of sales_order, customer"):
        client(FakeRecords()).deliver("invoice", [])


# Outbound payloads


def test_sales_order_payload_shape():
    payload = sales_order_payload(ORDER, LINES, CUSTOMER_EID)

    assert payload["externalId"] == external_id("shopify", "jsmith.myshopify.com", "820982911946154508")
    assert payload["entity"] == {"externalId": CUSTOMER_EID}
    assert payload["tranDate"] == "2026-11-24"
    assert payload["currency"] == {"refName": "USD"}
    assert payload["otherRefNum"] == "#1001"
    assert "shopify order #1001" in payload["memo"]
    assert payload["item"]["items"][0] == {"item": {"externalId": "IPOD2008GREEN"}, "quantity": 2, "rate": "598.94"}
    assert payload["item"]["items"][1] == {"item": {"externalId": "CASE-01"}, "quantity": 1}


def test_currency_ids_and_zero_decimal_rate():
    order = {**ORDER, "total_currency": "JPY"}
    lines = [{**LINES[0], "currency": "JPY", "unit_price_amount": 1500}]

    payload = sales_order_payload(order, lines, None, currency_ids={"JPY": "7"})

    assert payload["currency"] == {"id": "7"}
    assert payload["item"]["items"][0]["rate"] == "1500"
    assert "entity" not in payload


def test_sales_order_line_without_sku_raises():
    with pytest.raises(ValueError, match="has no SKU"):
        sales_order_payload(ORDER, [{**LINES[0], "sku": None}], CUSTOMER_EID)


def test_external_ids_fit_netsuite_rules():
    for system, account, source_id in [("shopify", "jsmith.myshopify.com", "820982911946154508"),
                                       ("amazon", "A2TESTSELLER/ATVPDKIKX0DER", "113-0000001-0000001"),
                                       ("stripe", "acct_1TEST", "ch_3N|x y")]:
        assert re.fullmatch(r"[A-Za-z0-9_-]+", external_id(system, account, source_id))
    assert external_id("shopify", "a.myshopify.com", "1") != external_id("shopify", "b.myshopify.com", "1")
    assert external_id("stripe", "acct", "a b") != external_id("stripe", "acct", "a_b")


def test_customer_payload_leaves_out_missing_fields():
    payload = customer_payload({"system": "shopify", "account": "jsmith.myshopify.com", "source_id": "207119551",
                                "email": "bob.norman@example.com", "first_name": "Bob", "last_name": pd.NA,
                                "phone": None})

    assert payload == {"externalId": CUSTOMER_EID, "isPerson": True, "firstName": "Bob",
                       "email": "bob.norman@example.com"}


# Through the mapper into the ledger


@pytest.fixture
def ledger(tmp_path):
    ledger = Ledger.connect("sqlite:///" + str(tmp_path / "l.db"))
    yield ledger
    ledger.dispose()


def test_inventory_lands_as_inventory_levels(ledger):
    fake = FakeSuiteQL([availability(812, 3, 40, f"{DAY} 08:15:00", sku="IPOD2008GREEN"),
                        availability(812, 5, 0, f"{DAY} 12:00:00", sku="IPOD2008GREEN"),
                        availability(901, 3, "12.0", f"{DAY} 23:59:59", sku="CASE-01")])

    result = run_stream(STREAMS[0], client(fake, page_size=2), ledger, load_routing(), partition_key=DAY,
                        run_id="test")

    assert result.records == 3
    assert result.failed_records == 0
    stored = ledger.read_table("inventory_levels", system="netsuite").set_index("source_id")
    assert sorted(stored.index) == ["812@3", "812@5", "901@3"]
    assert set(stored["account"]) == {"1234567_SB1"}
    assert stored.loc["812@3", "sku"] == "IPOD2008GREEN"
    assert stored.loc["812@3", "inventory_item_id"] == "812"
    assert stored.loc["812@3", "location_id"] == "3"
    assert stored.loc["812@3", "available"] == 40
    assert stored.loc["812@5", "available"] == 0
    assert stored.loc["901@3", "available"] == 12
    assert stored.loc["812@3", "updated_at"] == pd.Timestamp("2026-11-24T08:15:00Z")
    assert stored.loc["812@3", "version"] == "2026-11-24T08:15:00.000000Z"


def test_fractional_quantity_fails_validation(ledger):
    fake = FakeSuiteQL([availability(812, 3, "2.5", f"{DAY} 08:15:00"), availability(813, 3, 4, f"{DAY} 09:00:00")])

    result = run_stream(STREAMS[0], client(fake), ledger, load_routing(), partition_key=DAY, run_id="test",
                        max_failure_rate=0.9)

    assert result.failed_records == 1
    stored = ledger.read_table("inventory_levels", system="netsuite")
    assert stored["source_id"].tolist() == ["813@3"]
