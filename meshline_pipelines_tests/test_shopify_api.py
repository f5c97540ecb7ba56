"""The Shopify Admin REST client against a mock transport that serves Shopify's wire format.

Bodies are built from the bundled REST 2026-07 samples, with IDs and times changed per test.
No request leaves the process: every response comes from `httpx.MockTransport`.
"""

import copy
import logging
from collections import defaultdict, deque
from datetime import datetime, timezone

import httpx
import pandas as pd
import pytest
from pydantic import ValidationError

from meshline_pipelines.ingest import run_stream
from meshline_pipelines.ledger import Ledger
from meshline_pipelines.routing import load_routing
from meshline_pipelines.shopify.api import ShopifyRestClient
from meshline_pipelines.shopify.assets import STREAMS
from meshline_pipelines.sources.http import ApiAuthError, ApiResponseError
from meshline_pipelines.sources.live import Window
from meshline_pipelines_tests.conftest import sample_json

SHOP = "jsmith.myshopify.com"
TOKEN = "shpat_0123456789abcdef0123456789abcdef"
BASE_URL = f"https://{SHOP}"
API = "/admin/api/2026-07"
DAY = "2026-11-24"
WINDOW = Window.for_day(DAY)
IN_WINDOW = "2026-11-24T10:15:00-05:00"  # 15:15 UTC


class FakeShopify:
    """Serves queued responses (or raises queued exceptions) per URL path and records every request."""

    def __init__(self):
        self.queues: dict[str, deque] = defaultdict(deque)
        self.requests: list[httpx.Request] = []

    def on(self, path: str, *replies) -> "FakeShopify":
        self.queues[path].extend(replies)
        return self

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        queue = self.queues[request.url.path]
        assert queue, f"unexpected request {request.method} {request.url}"
        reply = queue.popleft()
        if isinstance(reply, Exception):
            raise reply
        return reply

    def paths(self) -> list[str]:
        return [request.url.path for request in self.requests]

    def queries(self, path: str) -> list[dict[str, str]]:
        return [dict(request.url.params) for request in self.requests if request.url.path == path]


def make_client(server: FakeShopify, waits: list, **options) -> ShopifyRestClient:
    client = ShopifyRestClient(shop=SHOP, access_token=TOKEN, base_url=BASE_URL, **options)
    client.with_transport(httpx.MockTransport(server), sleep=waits.append)
    return client


def page(key: str, records: list, *, next_token: str | None = None, headers: dict | None = None) -> httpx.Response:
    """A 200 list response; with `next_token`, a Link header to the next page as Shopify writes it."""
    headers = dict(headers or {})
    if next_token:
        url = f"{BASE_URL}{API}/{key}.json?limit=250&page_info={next_token}"
        previous = f"{BASE_URL}{API}/{key}.json?limit=250&page_info=back"
        headers["Link"] = f'<{previous}>; rel="previous", <{url}>; rel="next"'
    return httpx.Response(200, json={key: records}, headers=headers)


def order(order_id: int, updated_at: str, *, created_at: str = "2026-11-20T09:00:00-05:00",
          refund_created_at: str | None = None) -> dict:
    """The sample order with its own IDs and times; with `refund_created_at`, one embedded refund."""
    payload = copy.deepcopy(sample_json("shopify", "orders.json")["orders"][0])
    payload["id"] = order_id
    payload["name"] = f"#{order_id}"
    payload["created_at"] = created_at
    payload["updated_at"] = updated_at
    for position, line in enumerate(payload["line_items"]):
        line["id"] = order_id * 10 + position
    refund = payload["refunds"][0]
    payload["refunds"] = []
    if refund_created_at:
        refund["id"] = order_id + 500
        refund["order_id"] = order_id
        refund["created_at"] = refund["processed_at"] = refund_created_at
        payload["refunds"] = [refund]
    return payload


def transaction(transaction_id: int, order_id: int, created_at: str) -> dict:
    payload = copy.deepcopy(sample_json("shopify", "transactions.json")["transactions"][0])
    payload.update(id=transaction_id, order_id=order_id, created_at=created_at, processed_at=created_at)
    return payload


def records(client: ShopifyRestClient, stream: str) -> list:
    return [payload for batch in client.fetch(stream, WINDOW) for payload in batch.records]


def ids(payloads: list) -> list:
    return [payload["id"] for payload in payloads]


# Requests and paging


def test_orders_first_request_filters_by_update_window():
    server = FakeShopify().on(f"{API}/orders.json", page("orders", [order(1, IN_WINDOW)]))
    client = make_client(server, [])

    assert ids(records(client, "orders")) == [1]

    request = server.requests[0]
    assert request.url.host == SHOP
    assert request.headers["X-Shopify-Access-Token"] == TOKEN
    assert dict(request.url.params) == {
        "status": "any",
        "updated_at_min": "2026-11-24T00:00:00Z",
        "updated_at_max": "2026-11-25T00:00:00Z",
        "order": "updated_at asc",
        "limit": "250",
    }


def test_next_page_sends_page_info_only():
    server = FakeShopify().on(
        f"{API}/orders.json",
        page("orders", [order(1, IN_WINDOW), order(2, IN_WINDOW)], next_token="token-2"),
        page("orders", [order(3, IN_WINDOW)]),
    )
    client = make_client(server, [])

    batches = list(client.fetch("orders", WINDOW))

    assert [ids(batch.records) for batch in batches] == [[1, 2], [3]]
    assert [batch.origin for batch in batches] == [f"GET {API}/orders.json page 1", f"GET {API}/orders.json page 2"]
    queries = server.queries(f"{API}/orders.json")
    assert len(queries) == 2
    assert queries[1] == {"page_info": "token-2", "limit": "250"}


def test_link_header_with_unquoted_rel_is_followed():
    unquoted = {"Link": f"<{BASE_URL}{API}/orders.json?page_info=abc&limit=250>; rel=next"}
    server = FakeShopify().on(
        f"{API}/orders.json",
        httpx.Response(200, json={"orders": [order(1, IN_WINDOW)]}, headers=unquoted),
        page("orders", [order(2, IN_WINDOW)]),
    )

    assert ids(records(make_client(server, []), "orders")) == [1, 2]
    assert server.queries(f"{API}/orders.json")[1] == {"page_info": "abc", "limit": "250"}


def test_ten_tied_orders_across_page_boundary_arrive_once():
    tied = [order(100 + number, IN_WINDOW) for number in range(10)]
    server = FakeShopify().on(
        f"{API}/orders.json",
        page("orders", tied[:6], next_token="after-six"),
        page("orders", tied[6:]),
    )
    client = make_client(server, [], page_size=6)

    fetched = ids(records(client, "orders"))

    assert sorted(fetched) == list(range(100, 110))
    assert len(fetched) == 10
    assert server.queries(f"{API}/orders.json")[0]["limit"] == "6"
    assert server.queries(f"{API}/orders.json")[1] == {"page_info": "after-six", "limit": "6"}


def test_orders_outside_window_are_dropped():
    server = FakeShopify().on(f"{API}/orders.json", page("orders", [
        order(1, "2026-11-23T18:59:59-05:00"),  # 23:59:59 UTC the day before
        order(2, "2026-11-23T19:00:00-05:00"),  # midnight UTC, the window's start
        order(3, "2026-11-24T18:59:59-05:00"),  # the window's last second
        order(4, "2026-11-24T19:00:00-05:00"),  # midnight UTC, the next window's start
    ]))

    assert ids(records(make_client(server, []), "orders")) == [2, 3]


@pytest.mark.parametrize("stream", ["customers", "products"])
def test_stream_filters_by_update_window(stream):
    sample = sample_json("shopify", f"{stream}.json")[stream]
    inside, outside = copy.deepcopy(sample[0]), copy.deepcopy(sample[1])
    inside["updated_at"] = IN_WINDOW
    outside["updated_at"] = "2026-11-25T08:00:00+01:00"  # 07:00 UTC the next day
    server = FakeShopify().on(f"{API}/{stream}.json", page(stream, [inside, outside]))

    assert ids(records(make_client(server, []), stream)) == [inside["id"]]
    assert server.queries(f"{API}/{stream}.json") == [{
        "updated_at_min": "2026-11-24T00:00:00Z", "updated_at_max": "2026-11-25T00:00:00Z", "limit": "250",
    }]


# Refunds and transactions, read through the orders updated in the window


def test_refunds_come_from_orders_updated_in_window():
    server = FakeShopify().on(f"{API}/orders.json", page("orders", [
        order(1, IN_WINDOW, refund_created_at="2026-09-01T12:00:00-04:00"),
        order(2, IN_WINDOW, refund_created_at="2026-11-24T09:00:00-05:00"),
        order(3, IN_WINDOW),
    ]))
    client = make_client(server, [])

    refunds = records(client, "refunds")

    assert ids(refunds) == [501, 502]
    assert server.queries(f"{API}/orders.json")[0]["status"] == "any"
    assert server.queries(f"{API}/orders.json")[0]["updated_at_min"] == "2026-11-24T00:00:00Z"


def test_refund_cursor_is_its_order_update_time():
    server = FakeShopify().on(f"{API}/orders.json", page("orders", [
        order(1, IN_WINDOW, refund_created_at="2026-09-01T12:00:00-04:00"),
        order(2, "2026-11-24T19:00:00-05:00", refund_created_at="2026-11-24T11:00:00-05:00"),
    ]))
    client = make_client(server, [])

    refunds = records(client, "refunds")

    # Order 2 was updated at the window's end, so it and its refund belong to the next window.
    assert ids(refunds) == [501]
    assert client.cursor("refunds", refunds[0]) == datetime(2026, 11, 24, 15, 15, tzinfo=timezone.utc)


def test_refund_cursor_without_its_order_is_created_at():
    client = ShopifyRestClient(shop=SHOP, access_token=TOKEN, base_url=BASE_URL)
    refund = sample_json("shopify", "refunds.json")["refunds"][0]

    assert client.cursor("refunds", refund) == datetime(2025, 7, 2, 16, 38, 15, tzinfo=timezone.utc)


def test_orders_with_malformed_refunds_raise():
    broken = order(1, IN_WINDOW)
    broken["refunds"] = {"id": 5}
    server = FakeShopify().on(f"{API}/orders.json", page("orders", [broken]))

    with pytest.raises(ApiResponseError, match="order 1 has invalid refunds: expected a list, got dict"):
        records(make_client(server, []), "refunds")


def test_transactions_requested_for_each_updated_order():
    server = (
        FakeShopify()
        .on(f"{API}/orders.json", page("orders", [order(1, IN_WINDOW), order(2, IN_WINDOW)], next_token="p2"),
            page("orders", [order(3, "2026-11-24T20:00:00-05:00")]))
        .on(f"{API}/orders/1/transactions.json",
            page("transactions", [transaction(11, 1, "2026-10-01T09:00:00-04:00")]))
        .on(f"{API}/orders/2/transactions.json", page("transactions", [transaction(21, 2, IN_WINDOW),
                                                                       transaction(22, 2, IN_WINDOW)]))
    )
    client = make_client(server, [])

    transactions = records(client, "transactions")

    # Transaction 11 is older than the window, but its order changed in it. Order 3 changed after the
    # window, so its transactions belong to a later window and are not requested.
    assert ids(transactions) == [11, 21, 22]
    assert server.paths() == [f"{API}/orders.json", f"{API}/orders/1/transactions.json",
                              f"{API}/orders/2/transactions.json", f"{API}/orders.json"]
    assert server.queries(f"{API}/orders/1/transactions.json") == [{}]


def test_transactions_reject_order_without_numeric_id():
    broken = order(1, IN_WINDOW)
    broken["id"] = "../customers"
    server = FakeShopify().on(f"{API}/orders.json", page("orders", [broken]))

    with pytest.raises(ApiResponseError, match="invalid order id '../customers': expected a number"):
        records(make_client(server, []), "transactions")


# Inventory levels


def test_inventory_levels_requested_per_50_locations():
    locations = [{"id": 1000 + number, "name": f"Store {number}", "active": True} for number in range(51)]
    levels = sample_json("shopify", "inventory_levels.json")["inventory_levels"]
    inside = dict(levels[0], updated_at=IN_WINDOW)
    later = dict(levels[1], updated_at="2026-11-26T10:00:00-05:00")
    server = (
        FakeShopify()
        .on(f"{API}/locations.json", page("locations", locations))
        .on(f"{API}/inventory_levels.json", page("inventory_levels", [inside, later]),
            page("inventory_levels", []))
    )

    fetched = records(make_client(server, []), "inventory_levels")

    assert fetched == [inside]
    queries = server.queries(f"{API}/inventory_levels.json")
    assert queries[0]["location_ids"] == ",".join(str(1000 + number) for number in range(50))
    assert queries[1]["location_ids"] == "1050"
    assert queries[0]["updated_at_min"] == "2026-11-24T00:00:00Z"
    assert "updated_at_max" not in queries[0]
    assert server.queries(f"{API}/locations.json") == [{}]


def test_inventory_levels_without_locations_request_nothing_more():
    server = FakeShopify().on(f"{API}/locations.json", page("locations", []))

    assert records(make_client(server, []), "inventory_levels") == []
    assert server.paths() == [f"{API}/locations.json"]


# Retries, pacing and errors


def test_429_waits_as_retry_after_asks():
    server = FakeShopify().on(
        f"{API}/orders.json",
        httpx.Response(429, json={"errors": "Exceeded 2 calls per second for api client. Reduce request rates to "
                                            "resume uninterrupted service."}, headers={"Retry-After": "3"}),
        page("orders", [order(1, IN_WINDOW)]),
    )
    waits = []

    assert ids(records(make_client(server, waits), "orders")) == [1]
    assert waits == [3.0]
    assert len(server.requests) == 2


def test_503_is_retried():
    server = FakeShopify().on(
        f"{API}/orders.json",
        httpx.Response(503, text="Service Unavailable"),
        page("orders", [order(1, IN_WINDOW)]),
    )
    waits = []

    assert ids(records(make_client(server, waits), "orders")) == [1]
    assert len(waits) == 1
    assert len(server.requests) == 2


def test_read_timeout_is_retried():
    server = FakeShopify().on(
        f"{API}/customers.json",
        httpx.ReadTimeout("timed out"),
        page("customers", []),
    )
    waits = []

    assert records(make_client(server, waits), "customers") == []
    assert len(waits) == 1
    assert len(server.requests) == 2


@pytest.mark.parametrize(("header", "leak_rate", "expected_waits"), [
    ("38/40", 2.0, [4.0]),
    ("32/40", 2.0, [1.0]),
    ("30/40", 2.0, []),
    ("1/40", 2.0, []),
    ("390/400", 20.0, [4.5]),
    ("not a count", 2.0, []),
])
def test_call_limit_header_near_full_pauses(header, leak_rate, expected_waits):
    server = FakeShopify().on(
        f"{API}/orders.json",
        page("orders", [order(1, IN_WINDOW)], headers={"X-Shopify-Shop-Api-Call-Limit": header}),
    )
    waits = []

    assert ids(records(make_client(server, waits, leak_rate=leak_rate), "orders")) == [1]
    assert waits == expected_waits


def test_body_not_json_raises_naming_endpoint_and_setting():
    server = FakeShopify().on(f"{API}/orders.json", httpx.Response(200, text="<html>Log in</html>"))

    with pytest.raises(ApiResponseError) as raised:
        records(make_client(server, []), "orders")

    message = str(raised.value)
    assert message.startswith("shopify account 'jsmith.myshopify.com': GET /admin/api/2026-07/orders.json failed")
    assert "not JSON" in message
    assert "SHOPIFY_API_BASE_URL" in message


def test_body_without_list_key_raises():
    server = FakeShopify().on(f"{API}/orders.json", httpx.Response(200, json={"order": {"id": 1}}))

    with pytest.raises(ApiResponseError) as raised:
        records(make_client(server, []), "orders")

    message = str(raised.value)
    assert 'expected a JSON object with a "orders" list' in message
    assert f"{API}/orders.json" in message
    assert "SHOPIFY_API_BASE_URL" in message


def test_next_link_without_page_info_raises():
    broken = {"Link": f'<{BASE_URL}{API}/orders.json?limit=250>; rel="next"'}
    server = FakeShopify().on(f"{API}/orders.json",
                              httpx.Response(200, json={"orders": [order(1, IN_WINDOW)]}, headers=broken))

    with pytest.raises(ApiResponseError, match="missing the page_info parameter"):
        records(make_client(server, []), "orders")


def test_next_link_repeating_page_info_raises():
    server = FakeShopify().on(
        f"{API}/orders.json",
        page("orders", [order(1, IN_WINDOW)], next_token="same"),
        page("orders", [order(2, IN_WINDOW)], next_token="same"),
    )

    with pytest.raises(ApiResponseError, match="repeats the current page_info"):
        records(make_client(server, []), "orders")


def test_401_names_token_setting_and_hides_token(caplog):
    server = FakeShopify().on(f"{API}/orders.json", httpx.Response(
        401, json={"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}))
    client = make_client(server, [])

    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ApiAuthError) as raised:
            records(client, "orders")

    message = str(raised.value)
    assert "HTTP 401" in message
    assert "SHOPIFY_ACCESS_TOKEN" in message
    assert TOKEN not in message
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(client)
    assert len(server.requests) == 1


# Settings


def test_unknown_stream_is_rejected():
    client = ShopifyRestClient(shop=SHOP, access_token=TOKEN, base_url=BASE_URL)

    with pytest.raises(ValueError, match="shopify has no live stream 'payouts'"):
        records(client, "payouts")


def test_shop_with_scheme_is_rejected():
    with pytest.raises(ValidationError, match="without https://"):
        ShopifyRestClient(shop=f"https://{SHOP}/", access_token=TOKEN, base_url=BASE_URL)


def test_page_size_above_250_is_rejected():
    with pytest.raises(ValidationError, match="page_size"):
        ShopifyRestClient(shop=SHOP, access_token=TOKEN, base_url=BASE_URL, page_size=251)


# Through the mapper into the ledger


def stream(name: str):
    return next(candidate for candidate in STREAMS if candidate.name == name)


@pytest.fixture
def sqlite_ledger(tmp_path):
    ledger = Ledger.connect("sqlite:///" + str(tmp_path / "l.db"))
    yield ledger
    ledger.dispose()


def test_extracted_orders_are_stored_by_mapper(sqlite_ledger):
    server = FakeShopify().on(
        f"{API}/orders.json",
        page("orders", [order(1001, "2026-11-24T08:00:00-05:00"), order(1002, "2026-11-24T20:30:00+01:00")],
             next_token="p2"),
        page("orders", [order(1003, "2026-11-24T23:59:59Z"), order(1004, "2026-11-25T00:00:00Z")]),
    )
    client = make_client(server, [])

    run = run_stream(stream("orders"), client, sqlite_ledger, load_routing(), partition_key=DAY, run_id="test-run")

    assert run.records == 3
    assert run.failed_records == 0
    orders = sqlite_ledger.read_table("orders")
    assert sorted(orders["source_id"]) == ["1001", "1002", "1003"]
    assert set(orders["account"]) == {SHOP}
    assert set(orders["total_amount"]) == {59894}
    assert set(orders["total_currency"]) == {"USD"}
    updated = dict(zip(orders["source_id"], orders["updated_at"]))
    assert updated["1001"] == pd.Timestamp("2026-11-24T13:00:00Z")
    assert updated["1002"] == pd.Timestamp("2026-11-24T19:30:00Z")
    assert updated["1003"] == pd.Timestamp("2026-11-24T23:59:59Z")
    lines = sqlite_ledger.read_table("order_lines")
    assert sorted(lines["source_id"]) == ["10010", "10011", "10012", "10020", "10021", "10022",
                                          "10030", "10031", "10032"]


def test_old_refund_stored_in_order_partition(sqlite_ledger):
    server = FakeShopify().on(f"{API}/orders.json", page("orders", [
        order(2001, IN_WINDOW, refund_created_at="2026-09-01T12:00:00-04:00"),
    ]))
    client = make_client(server, [])

    run = run_stream(stream("refunds"), client, sqlite_ledger, load_routing(), partition_key=DAY, run_id="test-run")

    assert run.records == 1
    assert run.failed_records == 0
    refunds = sqlite_ledger.read_table("refunds")
    assert list(refunds["source_id"]) == ["2501"]
    assert list(refunds["order_source_id"]) == ["2001"]
    assert list(refunds["amount"]) == [20900]
    assert list(refunds["created_at"]) == [pd.Timestamp("2026-09-01T16:00:00Z")]


def test_refund_reread_is_absorbed(sqlite_ledger):
    routing = load_routing()
    refund_created = "2026-11-24T09:00:00-05:00"
    server = FakeShopify().on(
        f"{API}/orders.json",
        page("orders", [order(3001, IN_WINDOW, refund_created_at=refund_created)]),
        page("orders", [order(3001, "2026-11-27T10:00:00-05:00", refund_created_at=refund_created)]),
    )
    client = make_client(server, [])

    first = run_stream(stream("refunds"), client, sqlite_ledger, routing, partition_key=DAY, run_id="first")
    again = run_stream(stream("refunds"), client, sqlite_ledger, routing, partition_key="2026-11-27", run_id="again")

    assert first.stored["refunds"].count("inserted") == 1
    assert again.records == 1
    assert again.stored["refunds"].count("absorbed") == 1
    refunds = sqlite_ledger.read_table("refunds")
    assert list(refunds["source_id"]) == ["3501"]
