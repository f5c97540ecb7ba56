"""The Shopify GraphQL Admin client and mapper against a mock transport that serves Shopify's wire format.

Response bodies come from data/shopify_graphql/, written by hand as the GraphQL equivalents of
the bundled REST samples (order 450789469 and its refund and transactions, the customers,
products and inventory levels), with IDs and times changed per test. No request leaves the
process: every response comes from `httpx.MockTransport`.
"""

import copy
import json
import logging
import re
from collections import defaultdict, deque
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pandas as pd
import pytest
from pydantic import ValidationError

from meshline_pipelines.drift import new_fields
from meshline_pipelines.ingest import run_stream
from meshline_pipelines.ledger import Ledger
from meshline_pipelines.normalize import MapContext
from meshline_pipelines.routing import load_routing
from meshline_pipelines.shopify.assets import STREAMS
from meshline_pipelines.shopify.graphql import (
    BULK_OPERATION_STATUS, CURRENT_BULK_QUERY, INVENTORY_LEVELS_QUERY, LOCATIONS_QUERY, RUN_BULK_QUERY, STREAM_QUERIES,
    BulkOperationFailed, BulkOperationInProgress, ShopifyGraphqlClient, search_window,
)
from meshline_pipelines.sources.http import ApiAuthError, ApiRequestError, ApiResponseError, ApiUnavailable
from meshline_pipelines.sources.live import Window
from meshline_pipelines_tests.conftest import sample_json

SHOP = "jsmith.myshopify.com"
TOKEN = "shpat_0123456789abcdef0123456789abcdef"
BASE_URL = f"https://{SHOP}"
GRAPHQL_PATH = "/admin/api/2026-07/graphql.json"
DAY = "2026-11-24"
WINDOW = Window.for_day(DAY)
IN_WINDOW = "2026-11-24T15:15:00Z"
BACKFILL = Window(datetime(2026, 10, 1, tzinfo=timezone.utc), datetime(2026, 11, 25, tzinfo=timezone.utc))
DOWNLOAD_HOST = "storage.googleapis.com"
DOWNLOAD_PATH = "/shopify-tiers-assets-prod-us-east1/bulk-operation-outputs/1234-final"
DOWNLOAD_URL = f"https://{DOWNLOAD_HOST}{DOWNLOAD_PATH}?X-Goog-Signature=abc123"
OPERATION_ID = "gid://shopify/BulkOperation/720918"
FIXTURES = Path(__file__).parent / "data" / "shopify_graphql"
# A bucket with room to spare: no pause after the response.
FULL_BUCKET = {"requestedQueryCost": 100, "actualQueryCost": 20,
               "throttleStatus": {"maximumAvailable": 2000.0, "currentlyAvailable": 1900.0, "restoreRate": 100.0}}


class FakeShopify:
    """Serves queued responses per GraphQL operation name (or per URL path for downloads) and records every request."""

    def __init__(self):
        self.queues: dict[str, deque] = defaultdict(deque)
        self.requests: list[httpx.Request] = []

    def on(self, key: str, *replies) -> "FakeShopify":
        self.queues[key].extend(replies)
        return self

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        key = json.loads(request.content)["operationName"] if request.url.path == GRAPHQL_PATH else request.url.path
        queue = self.queues[key]
        assert queue, f"unexpected request {request.method} {request.url.path} ({key})"
        reply = queue.popleft()
        if isinstance(reply, Exception):
            raise reply
        return reply

    def bodies(self, operation: str | None = None) -> list[dict]:
        """Return the JSON bodies of the GraphQL requests, of one operation when given."""
        bodies = [json.loads(request.content) for request in self.requests if request.url.path == GRAPHQL_PATH]
        return [body for body in bodies if operation is None or body["operationName"] == operation]

    def operations(self) -> list[str]:
        return [body["operationName"] for body in self.bodies()]


def make_client(server: FakeShopify, waits: list, **options) -> ShopifyGraphqlClient:
    client = ShopifyGraphqlClient(shop=SHOP, access_token=TOKEN, base_url=BASE_URL, **options)
    client.with_transport(httpx.MockTransport(server), sleep=waits.append)
    return client


def reply(data=None, *, errors=None, cost=None, status: int = 200) -> httpx.Response:
    """A GraphQL response: `data`, `errors` and the cost extension, as Shopify sends them."""
    body = {}
    if data is not None:
        body["data"] = data
    if errors is not None:
        body["errors"] = errors
    body["extensions"] = {"cost": cost or FULL_BUCKET}
    return httpx.Response(status, json=body)


def cost(requested: float, available: float, maximum: float = 2000.0, restore: float = 100.0) -> dict:
    return {"requestedQueryCost": requested, "actualQueryCost": None,
            "throttleStatus": {"maximumAvailable": maximum, "currentlyAvailable": available, "restoreRate": restore}}


def connection(root: str, nodes: list, *, next_cursor: str | None = None) -> dict:
    return {root: {"nodes": nodes, "pageInfo": {"hasNextPage": next_cursor is not None,
                                                "endCursor": next_cursor or "last-cursor"}}}


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def order(order_id: int, updated_at: str) -> dict:
    """The GraphQL order 450789469 with its own IDs and update time."""
    node = copy.deepcopy(fixture("orders")["data"]["orders"]["nodes"][0])
    node["id"] = f"gid://shopify/Order/{order_id}"
    node["legacyResourceId"] = str(order_id)
    node["name"] = f"#{order_id}"
    node["updatedAt"] = updated_at
    for position, line in enumerate(node["lineItems"]["nodes"]):
        line["id"] = f"gid://shopify/LineItem/{order_id * 10 + position}"
    return node


def order_with_refund(order_id: int, updated_at: str, refund_created_at: str | None) -> dict:
    """The order node of the OrderRefunds query; with `refund_created_at`, one refund, else none."""
    node = copy.deepcopy(fixture("refunds")["data"]["orders"]["nodes"][0])
    node["id"] = f"gid://shopify/Order/{order_id}"
    node["legacyResourceId"] = str(order_id)
    node["updatedAt"] = updated_at
    refund = node["refunds"][0]
    node["refunds"] = []
    if refund_created_at:
        refund["id"] = f"gid://shopify/Refund/{order_id + 500}"
        refund["legacyResourceId"] = str(order_id + 500)
        refund["createdAt"] = refund["updatedAt"] = refund_created_at
        refund["order"] = {"id": node["id"], "legacyResourceId": node["legacyResourceId"]}
        node["refunds"] = [refund]
    return node


def records(client: ShopifyGraphqlClient, stream: str, window: Window = WINDOW) -> list:
    return [payload for batch in client.fetch(stream, window) for payload in batch.records]


def ids(payloads: list) -> list:
    return [payload["id"] for payload in payloads]


def gid(kind: str, number: int) -> str:
    return f"gid://shopify/{kind}/{number}"


# Requests and paging


def test_orders_query_filters_by_update_window():
    server = FakeShopify().on("OrdersUpdated", reply(connection("orders", [order(1, IN_WINDOW)])))
    client = make_client(server, [])

    assert ids(records(client, "orders")) == [gid("Order", 1)]

    request = server.requests[0]
    assert request.method == "POST"
    assert request.url.host == SHOP
    assert request.url.path == GRAPHQL_PATH
    assert request.headers["X-Shopify-Access-Token"] == TOKEN
    body = server.bodies()[0]
    assert body["variables"] == {
        "first": 10,
        "after": None,
        "search": "updated_at:>='2026-11-24T00:00:00Z' AND updated_at:<'2026-11-25T00:00:00Z'",
        "nestedFirst": 20,
    }
    assert "orders(first: $first, after: $after, query: $search, sortKey: UPDATED_AT)" in body["query"]


def test_second_page_sends_after_cursor():
    server = FakeShopify().on(
        "OrdersUpdated",
        reply(connection("orders", [order(1, IN_WINDOW), order(2, IN_WINDOW)], next_cursor="eyJsYXN0X2lkIjoyfQ==")),
        reply(connection("orders", [order(3, IN_WINDOW)])),
    )
    client = make_client(server, [])

    batches = list(client.fetch("orders", WINDOW))

    assert [ids(batch.records) for batch in batches] == [[gid("Order", 1), gid("Order", 2)], [gid("Order", 3)]]
    assert [batch.origin for batch in batches] == [f"POST {GRAPHQL_PATH} OrdersUpdated page 1",
                                                  f"POST {GRAPHQL_PATH} OrdersUpdated page 2"]
    requests = server.bodies("OrdersUpdated")
    assert requests[0]["variables"]["after"] is None
    assert requests[1]["variables"]["after"] == "eyJsYXN0X2lkIjoyfQ=="
    assert requests[1]["variables"]["search"] == requests[0]["variables"]["search"]


def test_ten_tied_orders_across_page_boundary_arrive_once():
    tied = [order(100 + number, IN_WINDOW) for number in range(10)]
    server = FakeShopify().on(
        "OrdersUpdated",
        reply(connection("orders", tied[:6], next_cursor="after-six")),
        reply(connection("orders", tied[6:])),
    )
    client = make_client(server, [], parent_page_size=6)

    fetched = ids(records(client, "orders"))

    assert sorted(fetched) == sorted(gid("Order", 100 + number) for number in range(10))
    assert len(fetched) == 10
    requests = server.bodies("OrdersUpdated")
    assert [request["variables"]["first"] for request in requests] == [6, 6]
    assert requests[1]["variables"]["after"] == "after-six"


def test_orders_outside_window_are_dropped():
    server = FakeShopify().on("OrdersUpdated", reply(connection("orders", [
        order(1, "2026-11-23T23:59:59Z"),
        order(2, "2026-11-24T00:00:00Z"),
        order(3, "2026-11-24T23:59:59.999Z"),
        order(4, "2026-11-25T00:00:00Z"),
    ])))

    assert ids(records(make_client(server, []), "orders")) == [gid("Order", 2), gid("Order", 3)]


def test_line_items_beyond_first_page_are_requested():
    first = order(1, IN_WINDOW)
    lines = first["lineItems"]["nodes"]
    first["lineItems"] = {"nodes": lines[:2], "pageInfo": {"hasNextPage": True, "endCursor": "line-2"}}
    rest = {"node": {"lineItems": {"nodes": lines[2:], "pageInfo": {"hasNextPage": False, "endCursor": "line-3"}}}}
    server = (FakeShopify()
              .on("OrdersUpdated", reply(connection("orders", [first])))
              .on("OrderLineItems", reply(rest)))
    client = make_client(server, [], nested_page_size=2)

    fetched = records(client, "orders")

    assert fetched[0]["lineItems"] == {"nodes": lines}
    assert server.operations() == ["OrdersUpdated", "OrderLineItems"]
    assert server.bodies("OrdersUpdated")[0]["variables"]["nestedFirst"] == 2
    assert server.bodies("OrderLineItems")[0]["variables"] == {"id": gid("Order", 1), "first": 2, "after": "line-2"}


def test_nested_connection_lands_without_page_info():
    server = FakeShopify().on("OrdersUpdated", reply(connection("orders", [order(1, IN_WINDOW)])))

    fetched = records(make_client(server, []), "orders")

    assert set(fetched[0]["lineItems"]) == {"nodes"}
    assert len(fetched[0]["lineItems"]["nodes"]) == 3
    assert server.operations() == ["OrdersUpdated"]


def test_repeated_end_cursor_raises():
    server = FakeShopify().on(
        "OrdersUpdated",
        reply(connection("orders", [order(1, IN_WINDOW)], next_cursor="same")),
        reply(connection("orders", [order(2, IN_WINDOW)], next_cursor="same")),
    )

    with pytest.raises(ApiResponseError, match="endCursor repeats the cursor just requested"):
        records(make_client(server, []), "orders")


def test_next_page_without_end_cursor_raises():
    page = connection("orders", [order(1, IN_WINDOW)])
    page["orders"]["pageInfo"] = {"hasNextPage": True, "endCursor": None}
    server = FakeShopify().on("OrdersUpdated", reply(page))

    with pytest.raises(ApiResponseError, match="hasNextPage is true but endCursor is missing"):
        records(make_client(server, []), "orders")


@pytest.mark.parametrize(("stream", "operation"), [("customers", "CustomersUpdated"), ("products", "ProductsUpdated")])
def test_stream_filters_by_update_window(stream, operation):
    nodes = fixture(stream)["data"][stream]["nodes"]
    inside, outside = copy.deepcopy(nodes[0]), copy.deepcopy(nodes[1])
    inside["updatedAt"] = IN_WINDOW
    outside["updatedAt"] = "2026-11-25T07:00:00Z"
    server = FakeShopify().on(operation, reply(connection(stream, [inside, outside])))

    assert ids(records(make_client(server, []), stream)) == [inside["id"]]
    variables = server.bodies(operation)[0]["variables"]
    assert variables["search"] == "updated_at:>='2026-11-24T00:00:00Z' AND updated_at:<'2026-11-25T00:00:00Z'"
    assert variables["first"] == (50 if stream == "customers" else 10)


def test_refunds_come_from_orders_with_order_cursor():
    server = FakeShopify().on("OrderRefunds", reply(connection("orders", [
        order_with_refund(1, IN_WINDOW, "2026-09-01T16:00:00Z"),
        order_with_refund(2, "2026-11-25T00:00:00Z", "2026-11-24T16:00:00Z"),
        order_with_refund(3, IN_WINDOW, None),
    ])))
    client = make_client(server, [])

    refunds = records(client, "refunds")

    # Order 2 was updated at the window's end, so it and its refund belong to the next window.
    assert ids(refunds) == [gid("Refund", 501)]
    assert client.cursor("refunds", refunds[0]) == datetime(2026, 11, 24, 15, 15, tzinfo=timezone.utc)
    assert server.bodies("OrderRefunds")[0]["variables"]["first"] == 10


def test_refund_cursor_without_its_order_is_created_at():
    client = ShopifyGraphqlClient(shop=SHOP, access_token=TOKEN, base_url=BASE_URL)
    refund = fixture("refunds")["data"]["orders"]["nodes"][0]["refunds"][0]

    assert client.cursor("refunds", refund) == datetime(2025, 7, 2, 16, 38, 15, tzinfo=timezone.utc)


def test_transactions_come_from_orders_updated_in_window():
    transactions_body = fixture("transactions")
    inside = copy.deepcopy(transactions_body["data"]["orders"]["nodes"][0])
    inside["updatedAt"] = IN_WINDOW
    later = copy.deepcopy(inside)
    later["id"], later["legacyResourceId"], later["updatedAt"] = gid("Order", 9), "9", "2026-11-25T01:00:00Z"
    for transaction in later["transactions"]:
        transaction["id"] += "9"
        transaction["order"] = {"id": later["id"], "legacyResourceId": "9"}
    server = FakeShopify().on("OrderTransactions", reply(connection("orders", [inside, later])))
    client = make_client(server, [])

    transactions = records(client, "transactions")

    # The transactions are years older than the window, but their order changed in it.
    assert ids(transactions) == [gid("OrderTransaction", 179259969), gid("OrderTransaction", 389404469),
                                 gid("OrderTransaction", 801038806)]
    assert {client.cursor("transactions", transaction) for transaction in transactions} == {
        datetime(2026, 11, 24, 15, 15, tzinfo=timezone.utc)}
    assert "nestedFirst" not in server.bodies("OrderTransactions")[0]["variables"]


def test_orders_with_malformed_refunds_raise():
    broken = order_with_refund(1, IN_WINDOW, None)
    broken["refunds"] = {"id": 5}
    server = FakeShopify().on("OrderRefunds", reply(connection("orders", [broken])))

    with pytest.raises(ApiResponseError, match="order gid://shopify/Order/1 has invalid refunds: expected a list"):
        records(make_client(server, []), "refunds")


def test_inventory_levels_requested_per_location():
    levels = fixture("inventory_levels")["data"]["location"]["inventoryLevels"]["nodes"]
    inside = dict(levels[0], updatedAt=IN_WINDOW)
    later = dict(levels[1], updatedAt="2026-11-26T15:00:00Z")
    locations = [{"id": gid("Location", 1000 + number), "legacyResourceId": str(1000 + number), "name": f"Store {number}",
                  "isActive": True} for number in range(2)]
    server = (FakeShopify()
              .on("Locations", reply(connection("locations", locations)))
              .on("LocationInventoryLevels",
                  reply({"location": connection("inventoryLevels", [inside, later])}),
                  reply({"location": connection("inventoryLevels", [])})))

    fetched = records(make_client(server, []), "inventory_levels")

    assert fetched == [inside]
    requests = server.bodies("LocationInventoryLevels")
    assert [request["variables"]["id"] for request in requests] == [gid("Location", 1000), gid("Location", 1001)]
    assert requests[0]["variables"]["search"] == "updated_at:>='2026-11-24T00:00:00Z'"
    assert server.bodies("Locations")[0]["variables"] == {"first": 50, "after": None}


def test_inventory_levels_of_missing_location_raise():
    server = (FakeShopify()
              .on("Locations", reply(connection("locations", [{"id": gid("Location", 7), "name": "Gone"}])))
              .on("LocationInventoryLevels", reply({"location": None})))

    with pytest.raises(ApiResponseError, match="data.location is null: gid://shopify/Location/7 was not found"):
        records(make_client(server, []), "inventory_levels")


def _documents() -> dict[str, str]:
    documents = {"Locations": LOCATIONS_QUERY, "LocationInventoryLevels": INVENTORY_LEVELS_QUERY,
                 "CurrentBulkQuery": CURRENT_BULK_QUERY, "RunBulkQuery": RUN_BULK_QUERY,
                 "BulkOperationStatus": BULK_OPERATION_STATUS}
    for name, query in STREAM_QUERIES.items():
        documents[query.operation] = query.page_query()
        documents[f"bulk {name}"] = query.bulk_query(search_window(WINDOW))
        if query.nested:
            documents[query.nested.operation] = query.nested.page_query()
    return documents


@pytest.mark.parametrize("name", sorted(_documents()))
def test_query_document_is_valid_graphql(name):
    graphql = pytest.importorskip("graphql")
    document = _documents()[name]

    parsed = graphql.parse(document)

    operation = parsed.definitions[0]
    if not name.startswith("bulk "):
        assert operation.name.value == name
    for definition in operation.variable_definitions:
        variable = definition.variable.name.value
        assert len(re.findall(rf"\${variable}\b", document)) >= 2, f"${variable} is declared but not used"


# Cost-based pacing, retries and errors


def test_throttled_retried_after_bucket_refills():
    throttled = reply(errors=[{"message": "Throttled", "extensions": {
        "code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
        cost=cost(requested=400, available=150))
    server = FakeShopify().on("OrdersUpdated", throttled, reply(connection("orders", [order(1, IN_WINDOW)])))
    waits = []

    assert ids(records(make_client(server, waits), "orders")) == [gid("Order", 1)]
    # (400 - 150) points at 100 points per second.
    assert waits == [2.5]
    assert server.operations() == ["OrdersUpdated", "OrdersUpdated"]


def test_throttled_without_cost_data_waits_one_second():
    throttled = httpx.Response(200, json={"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]})
    server = FakeShopify().on("OrdersUpdated", throttled, reply(connection("orders", [])))
    waits = []

    assert records(make_client(server, waits), "orders") == []
    assert waits == [1.0]


def test_throttled_on_every_attempt_raises_unavailable():
    throttled = reply(errors=[{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
                      cost=cost(requested=400, available=0))
    server = FakeShopify().on("OrdersUpdated", throttled, throttled)

    with pytest.raises(ApiUnavailable, match="THROTTLED: 0 of 2000 cost points available.*after 2 attempts"):
        records(make_client(server, [], max_attempts=2), "orders")


@pytest.mark.parametrize(("bucket", "reserve", "expected_waits"), [
    # 200 requested + 10 % of 2,000 reserved = 400 needed; 250 available; 150 more at 100 per second.
    (cost(requested=200, available=250), 0.1, [1.5]),
    (cost(requested=200, available=400), 0.1, []),
    (cost(requested=200, available=150), 0.0, [0.5]),
    (cost(requested=900, available=100, maximum=1000, restore=50), 0.2, [18.0]),
    ({"requestedQueryCost": 10}, 0.1, []),
])
def test_low_bucket_pauses_after_response(bucket, reserve, expected_waits):
    server = FakeShopify().on("OrdersUpdated", reply(connection("orders", [order(1, IN_WINDOW)]), cost=bucket))
    waits = []

    assert ids(records(make_client(server, waits, bucket_reserve=reserve), "orders")) == [gid("Order", 1)]
    assert waits == expected_waits
    assert len(server.requests) == 1


def test_503_is_retried():
    server = FakeShopify().on("CustomersUpdated", httpx.Response(503, text="Service Unavailable"),
                              reply(connection("customers", [])))
    waits = []

    assert records(make_client(server, waits), "customers") == []
    assert len(waits) == 1
    assert len(server.requests) == 2


def test_internal_error_in_200_body_is_retried():
    failed = reply(errors=[{"message": "Internal error. Looks like something went wrong on our end.",
                            "extensions": {"code": "INTERNAL_SERVER_ERROR"}}])
    server = FakeShopify().on("CustomersUpdated", failed, reply(connection("customers", [])))
    waits = []

    assert records(make_client(server, waits), "customers") == []
    assert waits == [2.0]


def test_body_not_json_raises_naming_endpoint_and_setting():
    server = FakeShopify().on("OrdersUpdated", httpx.Response(200, text="<html>Log in</html>"))

    with pytest.raises(ApiResponseError) as raised:
        records(make_client(server, []), "orders")

    message = str(raised.value)
    assert message.startswith(f"shopify account 'jsmith.myshopify.com': POST {GRAPHQL_PATH} failed")
    assert "not JSON" in message
    assert "SHOPIFY_API_BASE_URL" in message


def test_body_without_data_raises():
    server = FakeShopify().on("OrdersUpdated", httpx.Response(200, json={"extensions": {"cost": FULL_BUCKET}}))

    with pytest.raises(ApiResponseError, match='GraphQL OrdersUpdated: the body has neither "data" nor "errors"'):
        records(make_client(server, []), "orders")


def test_data_without_page_info_raises():
    server = FakeShopify().on("OrdersUpdated", reply({"orders": {"nodes": []}}))

    with pytest.raises(ApiResponseError, match="expected data.orders with a nodes list and pageInfo"):
        records(make_client(server, []), "orders")


@pytest.mark.parametrize(("code", "error_type", "fix"), [
    ("undefinedField", ApiRequestError, "check api_version 2026-07"),
    ("ACCESS_DENIED", ApiAuthError, "check SHOPIFY_ACCESS_TOKEN"),
    ("MAX_COST_EXCEEDED", ApiRequestError, "lower parent_page_size, nested_page_size or page_size"),
])
def test_graphql_error_names_query_and_message(code, error_type, fix):
    errors = [{"message": "Field 'displayFinancialStatus' doesn't exist on type 'Order'",
               "locations": [{"line": 1, "column": 120}], "path": ["query OrdersUpdated", "orders"],
               "extensions": {"code": code}}]
    server = FakeShopify().on("OrdersUpdated", reply(errors=errors))

    with pytest.raises(error_type) as raised:
        records(make_client(server, []), "orders")

    message = str(raised.value)
    assert f"GraphQL OrdersUpdated failed with {code}: Field 'displayFinancialStatus' doesn't exist" in message
    assert fix in message
    assert len(server.requests) == 1


def test_errors_beside_partial_data_raise():
    errors = [{"message": "Access denied for email field.", "extensions": {"code": "ACCESS_DENIED"}},
              {"message": "Access denied for phone field.", "extensions": {"code": "ACCESS_DENIED"}}]
    server = FakeShopify().on("CustomersUpdated", reply(connection("customers", []), errors=errors))

    with pytest.raises(ApiAuthError, match=r"Access denied for email field\. \(and 1 more errors\)"):
        records(make_client(server, []), "customers")


def test_token_never_in_errors_logs_or_repr(caplog):
    server = FakeShopify().on("OrdersUpdated", httpx.Response(
        401, json={"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}))
    client = make_client(server, [])

    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ApiAuthError) as raised:
            records(client, "orders")

    assert "SHOPIFY_ACCESS_TOKEN" in str(raised.value)
    assert TOKEN not in str(raised.value)
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(client)


# Bulk operations


def bulk_status(status: str, *, object_count: int = 0, url: str | None = None, error_code: str | None = None,
                partial_url: str | None = None) -> httpx.Response:
    return reply({"node": {
        "id": OPERATION_ID, "status": status, "errorCode": error_code, "objectCount": str(object_count),
        "rootObjectCount": "0", "fileSize": None, "url": url, "partialDataUrl": partial_url,
        "createdAt": "2026-11-25T02:00:00Z", "completedAt": None,
    }}, cost={"requestedQueryCost": 1, "actualQueryCost": 1, "throttleStatus": FULL_BUCKET["throttleStatus"]})


def bulk_started() -> httpx.Response:
    return reply({"bulkOperationRunQuery": {"bulkOperation": {"id": OPERATION_ID, "status": "CREATED"},
                                            "userErrors": []}})


def no_current_bulk() -> httpx.Response:
    return reply({"currentBulkOperation": {"id": "gid://shopify/BulkOperation/1", "status": "COMPLETED",
                                           "createdAt": "2026-11-01T00:00:00Z"}})


def jsonl(objects: list[dict]) -> httpx.Response:
    return httpx.Response(200, text="".join(json.dumps(item) + "\n" for item in objects),
                          headers={"Content-Type": "application/jsonl"})


def bulk_order_lines(order_ids: list[int]) -> list[dict]:
    """The JSONL objects of a bulk orders query: each order without lineItems, and its lines with __parentId."""
    objects = []
    for order_id in order_ids:
        node = order(order_id, "2026-10-15T12:00:00Z")
        lines = node.pop("lineItems")["nodes"]
        objects.append(node)
        objects.extend({**line, "__parentId": node["id"]} for line in lines)
    return objects


def test_bulk_backfill_rebuilds_orders_with_their_lines():
    objects = bulk_order_lines([1, 2])
    # A line before its order, because the rebuild must not depend on the order of the lines.
    objects.insert(0, objects.pop(5))
    server = (FakeShopify()
              .on("CurrentBulkQuery", no_current_bulk())
              .on("RunBulkQuery", bulk_started())
              .on("BulkOperationStatus", bulk_status("RUNNING", object_count=3),
                  bulk_status("COMPLETED", object_count=8, url=DOWNLOAD_URL))
              .on(DOWNLOAD_PATH, jsonl(objects)))
    waits = []
    client = make_client(server, waits, bulk_poll_seconds=15)

    batches = list(client.fetch("orders", BACKFILL))

    fetched = [payload for batch in batches for payload in batch.records]
    assert ids(fetched) == [gid("Order", 1), gid("Order", 2)]
    assert [ids(payload["lineItems"]["nodes"]) for payload in fetched] == [
        [gid("LineItem", 10), gid("LineItem", 11), gid("LineItem", 12)],
        [gid("LineItem", 20), gid("LineItem", 21), gid("LineItem", 22)],
    ]
    assert all("__parentId" not in line for payload in fetched for line in payload["lineItems"]["nodes"])
    assert fetched[0] == dict(order(1, "2026-10-15T12:00:00Z"), lineItems={"nodes": order(1, "x")["lineItems"]["nodes"]})
    assert [batch.origin for batch in batches] == [f"bulk operation {OPERATION_ID} orders records 1-2"]
    assert waits == [15]

    assert server.operations() == ["CurrentBulkQuery", "RunBulkQuery", "BulkOperationStatus", "BulkOperationStatus"]
    bulk_query = server.bodies("RunBulkQuery")[0]["variables"]["query"]
    assert ("orders(query: \"updated_at:>='2026-10-01T00:00:00Z' AND updated_at:<'2026-11-25T00:00:00Z'\", "
            "sortKey: UPDATED_AT)") in bulk_query
    assert "lineItems { edges { node {" in bulk_query
    assert server.bodies("BulkOperationStatus")[0]["variables"] == {"id": OPERATION_ID}
    download = server.requests[-1]
    assert download.url.host == DOWNLOAD_HOST
    assert download.method == "GET"
    assert "X-Shopify-Access-Token" not in download.headers


def test_bulk_refunds_come_inline_with_their_orders():
    objects = [order_with_refund(1, "2026-10-15T12:00:00Z", "2026-09-01T16:00:00Z"),
               order_with_refund(2, "2026-10-16T12:00:00Z", None)]
    server = (FakeShopify()
              .on("CurrentBulkQuery", reply({"currentBulkOperation": None}))
              .on("RunBulkQuery", bulk_started())
              .on("BulkOperationStatus", bulk_status("COMPLETED", object_count=2, url=DOWNLOAD_URL))
              .on(DOWNLOAD_PATH, jsonl(objects)))
    client = make_client(server, [])

    refunds = records(client, "refunds", BACKFILL)

    assert ids(refunds) == [gid("Refund", 501)]
    assert refunds[0]["totalRefundedSet"]["presentmentMoney"] == {"amount": "209.0", "currencyCode": "USD"}
    assert client.cursor("refunds", refunds[0]) == datetime(2026, 10, 15, 12, tzinfo=timezone.utc)
    bulk_query = server.bodies("RunBulkQuery")[0]["variables"]["query"]
    assert "refunds { id legacyResourceId createdAt" in bulk_query
    assert "edges" not in bulk_query.split("refunds", 1)[1]


def test_bulk_products_nest_their_variants():
    products = copy.deepcopy(fixture("products")["data"]["products"]["nodes"])
    objects = []
    for product in products:
        product["updatedAt"] = "2026-10-20T08:00:00Z"
        variants = product.pop("variants")["nodes"]
        objects.append(product)
        objects.extend({**variant, "__parentId": product["id"]} for variant in variants)
    server = (FakeShopify()
              .on("CurrentBulkQuery", no_current_bulk())
              .on("RunBulkQuery", bulk_started())
              .on("BulkOperationStatus", bulk_status("COMPLETED", object_count=7, url=DOWNLOAD_URL))
              .on(DOWNLOAD_PATH, jsonl(objects)))

    fetched = records(make_client(server, []), "products", BACKFILL)

    assert ids(fetched) == [gid("Product", 632910392), gid("Product", 921728736)]
    assert [len(product["variants"]["nodes"]) for product in fetched] == [4, 1]
    rows = normalized("products", fetched).tables["product_variants"]
    assert list(rows["product_id"]) == ["632910392"] * 4 + ["921728736"]


def test_bulk_node_of_unselected_type_fails():
    objects = bulk_order_lines([1])
    objects.append({"id": gid("Fulfillment", 5), "__parentId": gid("Order", 1)})
    server = (FakeShopify()
              .on("CurrentBulkQuery", no_current_bulk())
              .on("RunBulkQuery", bulk_started())
              .on("BulkOperationStatus", bulk_status("COMPLETED", object_count=5, url=DOWNLOAD_URL))
              .on(DOWNLOAD_PATH, jsonl(objects)))

    with pytest.raises(BulkOperationFailed, match="line 5: a Fulfillment under gid://shopify/Order/1 is not a "
                                                  "connection the query selected"):
        records(make_client(server, []), "orders", BACKFILL)


def test_bulk_with_no_matches_has_no_file():
    server = (FakeShopify()
              .on("CurrentBulkQuery", no_current_bulk())
              .on("RunBulkQuery", bulk_started())
              .on("BulkOperationStatus", bulk_status("COMPLETED", object_count=0)))

    batches = list(make_client(server, []).fetch("customers", BACKFILL))

    assert [batch.records for batch in batches] == [[]]
    assert batches[0].origin == f"bulk operation {OPERATION_ID} customers: no records"


def test_bulk_object_count_mismatch_fails():
    server = (FakeShopify()
              .on("CurrentBulkQuery", no_current_bulk())
              .on("RunBulkQuery", bulk_started())
              .on("BulkOperationStatus", bulk_status("COMPLETED", object_count=9, url=DOWNLOAD_URL))
              .on(DOWNLOAD_PATH, jsonl(bulk_order_lines([1, 2]))))

    with pytest.raises(BulkOperationFailed) as raised:
        records(make_client(server, []), "orders", BACKFILL)

    message = str(raised.value)
    assert f"bulk operation {OPERATION_ID} counted 9 objects but its file has 8 lines" in message
    assert "no record of it was passed on" in message


def test_bulk_child_without_parent_in_file_fails():
    objects = bulk_order_lines([1])[1:]
    server = (FakeShopify()
              .on("CurrentBulkQuery", no_current_bulk())
              .on("RunBulkQuery", bulk_started())
              .on("BulkOperationStatus", bulk_status("COMPLETED", object_count=3, url=DOWNLOAD_URL))
              .on(DOWNLOAD_PATH, jsonl(objects)))

    with pytest.raises(BulkOperationFailed, match="line 1: its parent gid://shopify/Order/1 is not in the file"):
        records(make_client(server, []), "orders", BACKFILL)


def test_bulk_query_already_running_fails_naming_it():
    server = FakeShopify().on("CurrentBulkQuery", reply({"currentBulkOperation": {
        "id": "gid://shopify/BulkOperation/77", "status": "RUNNING", "createdAt": "2026-11-25T01:00:00Z"}}))

    with pytest.raises(BulkOperationInProgress) as raised:
        records(make_client(server, []), "orders", BACKFILL)

    message = str(raised.value)
    assert "a bulk query of this app is already running for the shop: gid://shopify/BulkOperation/77 (RUNNING" in message
    assert "bulkOperationCancel" in message
    assert server.operations() == ["CurrentBulkQuery"]


def test_bulk_operation_in_progress_user_error_fails():
    rejected = reply({"bulkOperationRunQuery": {"bulkOperation": None, "userErrors": [{
        "field": None, "code": "OPERATION_IN_PROGRESS",
        "message": "A bulk query operation for this app and shop is already in progress: gid://shopify/BulkOperation/78."}]}})
    server = FakeShopify().on("CurrentBulkQuery", no_current_bulk()).on("RunBulkQuery", rejected)

    with pytest.raises(BulkOperationInProgress, match="already in progress: gid://shopify/BulkOperation/78"):
        records(make_client(server, []), "orders", BACKFILL)


def test_bulk_user_error_names_message_and_field():
    rejected = reply({"bulkOperationRunQuery": {"bulkOperation": None, "userErrors": [{
        "field": ["query"], "code": "INVALID", "message": "Queries that contain a connection field within a list "
                                                         "field are not currently supported."}]}})
    server = FakeShopify().on("CurrentBulkQuery", no_current_bulk()).on("RunBulkQuery", rejected)

    with pytest.raises(ApiRequestError) as raised:
        records(make_client(server, []), "refunds", BACKFILL)

    message = str(raised.value)
    assert "bulkOperationRunQuery for refunds was rejected: Queries that contain a connection field" in message
    assert "(field ['query'], code INVALID)" in message


@pytest.mark.parametrize(("status", "error_code", "fix"), [
    ("FAILED", "TIMEOUT", "lower bulk_after_days"),
    ("FAILED", "ACCESS_DENIED", "check SHOPIFY_ACCESS_TOKEN"),
    ("CANCELED", None, "run again later"),
    ("EXPIRED", None, "run again later"),
])
def test_bulk_operation_that_did_not_complete_fails(status, error_code, fix):
    server = (FakeShopify()
              .on("CurrentBulkQuery", no_current_bulk())
              .on("RunBulkQuery", bulk_started())
              .on("BulkOperationStatus", bulk_status(status, object_count=120, error_code=error_code,
                                                     partial_url=DOWNLOAD_URL if error_code == "TIMEOUT" else None)))

    with pytest.raises(BulkOperationFailed) as raised:
        records(make_client(server, []), "orders", BACKFILL)

    message = str(raised.value)
    assert f"bulk operation {OPERATION_ID} for orders ended {status} with errorCode {error_code}" in message
    assert fix in message
    assert ("available at its partialDataUrl" in message) == (error_code == "TIMEOUT")


def test_bulk_operation_running_too_long_fails():
    server = (FakeShopify()
              .on("CurrentBulkQuery", no_current_bulk())
              .on("RunBulkQuery", bulk_started())
              .on("BulkOperationStatus", *[bulk_status("RUNNING", object_count=10) for _ in range(4)]))
    waits = []

    with pytest.raises(BulkOperationFailed, match="is still RUNNING after 30 s"):
        records(make_client(server, waits, bulk_poll_seconds=10, bulk_timeout_seconds=30), "orders", BACKFILL)
    assert waits == [10, 10, 10]


@pytest.mark.parametrize(("bulk_after_days", "window", "first_operation"), [
    (7, Window(datetime(2026, 11, 17, tzinfo=timezone.utc), datetime(2026, 11, 24, tzinfo=timezone.utc)),
     "OrdersUpdated"),
    (7, Window(datetime(2026, 11, 17, tzinfo=timezone.utc), datetime(2026, 11, 24, 0, 0, 1, tzinfo=timezone.utc)),
     "CurrentBulkQuery"),
    (0, WINDOW, "CurrentBulkQuery"),
])
def test_window_longer_than_bulk_after_days_runs_bulk(bulk_after_days, window, first_operation):
    server = (FakeShopify()
              .on("OrdersUpdated", reply(connection("orders", [])))
              .on("CurrentBulkQuery", reply({"currentBulkOperation": {"id": "gid://shopify/BulkOperation/5",
                                                                      "status": "CREATED", "createdAt": None}})))
    client = make_client(server, [], bulk_after_days=bulk_after_days)

    try:
        records(client, "orders", window)
    except BulkOperationInProgress:
        pass

    assert server.operations()[0] == first_operation


def test_inventory_levels_never_use_bulk():
    server = FakeShopify().on("Locations", reply(connection("locations", [])))

    assert records(make_client(server, [], bulk_after_days=0), "inventory_levels", BACKFILL) == []
    assert server.operations() == ["Locations"]


# Settings


def test_unknown_stream_is_rejected():
    client = ShopifyGraphqlClient(shop=SHOP, access_token=TOKEN, base_url=BASE_URL)

    with pytest.raises(ValueError, match="shopify has no live stream 'payouts'"):
        records(client, "payouts")


def test_shop_with_scheme_is_rejected():
    with pytest.raises(ValidationError, match="without https://"):
        ShopifyGraphqlClient(shop=f"https://{SHOP}/", access_token=TOKEN, base_url=BASE_URL)


@pytest.mark.parametrize("option", ["page_size", "parent_page_size", "nested_page_size"])
def test_page_size_above_250_is_rejected(option):
    with pytest.raises(ValidationError, match=option):
        ShopifyGraphqlClient(shop=SHOP, access_token=TOKEN, base_url=BASE_URL, **{option: 251})


# The mapper: GraphQL payloads map to the rows of the REST payload of the same record


def stream(name: str):
    return next(candidate for candidate in STREAMS if candidate.name == name)


CONTEXT = MapContext(system="shopify", account=SHOP, partition_key=DAY)


def normalized(stream_name: str, payloads: list):
    return stream(stream_name).normalize(pd.DataFrame({"payload": payloads}), CONTEXT)


def graphql_nodes(name: str) -> list:
    data = fixture(name)["data"]
    if name == "inventory_levels":
        return data["location"]["inventoryLevels"]["nodes"]
    nodes = data[{"refunds": "orders", "transactions": "orders"}.get(name, name)]["nodes"]
    if name in ("refunds", "transactions"):
        return [item for node in nodes for item in node[name]]
    return nodes


def test_graphql_order_maps_like_rest_sample():
    rest = normalized("orders", sample_json("shopify", "orders.json")["orders"])
    graphql = normalized("orders", graphql_nodes("orders"))

    assert rest.issues == []
    assert graphql.issues == []
    # `extra` keeps each API's own unmapped fields, which differ in names and in number.
    pd.testing.assert_frame_equal(graphql.tables["orders"].drop(columns=["extra"]),
                                  rest.tables["orders"].drop(columns=["extra"]))
    pd.testing.assert_frame_equal(graphql.tables["order_lines"], rest.tables["order_lines"])

    order_row = graphql.tables["orders"].iloc[0]
    assert order_row["source_id"] == "450789469"
    assert order_row["status"] == "partially_refunded"
    assert pd.isna(order_row["fulfillment_status"])
    assert order_row["customer_source_id"] == "207119551"
    assert order_row["total_amount"] == 59894
    assert json.loads(order_row["extra"])["presentmentCurrencyCode"] == "USD"
    lines = graphql.tables["order_lines"].set_index("source_id")
    assert list(lines.index) == ["466157049", "518995019", "703073504"]
    assert lines.loc["466157049", "variant_id"] == "39072856"
    assert lines.loc["466157049", "discount_amount"] == 334
    assert lines.loc["466157049", "tax_amount"] == 398


def test_graphql_order_with_other_values_differs_from_rest():
    # The comparison above must be able to fail: one changed value shows in the frames.
    changed = copy.deepcopy(graphql_nodes("orders"))
    changed[0]["lineItems"]["nodes"][0]["discountAllocations"][0]["allocatedAmountSet"]["shopMoney"]["amount"] = "3.35"
    rest = normalized("orders", sample_json("shopify", "orders.json")["orders"])

    graphql = normalized("orders", changed)

    with pytest.raises(AssertionError):
        pd.testing.assert_frame_equal(graphql.tables["order_lines"], rest.tables["order_lines"])


def test_graphql_refund_maps_like_rest_sample():
    rest = normalized("refunds", sample_json("shopify", "refunds.json")["refunds"])
    graphql = normalized("refunds", graphql_nodes("refunds"))

    assert graphql.issues == []
    pd.testing.assert_frame_equal(graphql.tables["refunds"].drop(columns=["extra"]),
                                  rest.tables["refunds"].drop(columns=["extra"]))
    assert graphql.tables["refunds"].iloc[0]["amount"] == 20900


def test_graphql_transactions_map_like_rest_sample():
    rest = normalized("transactions", sample_json("shopify", "transactions.json")["transactions"])
    graphql = normalized("transactions", graphql_nodes("transactions"))

    assert graphql.issues == []
    # A payment's version is the hash of its payload, and the payloads of the two APIs differ.
    pd.testing.assert_frame_equal(graphql.tables["payments"].drop(columns=["extra", "version"]),
                                  rest.tables["payments"].drop(columns=["extra", "version"]))
    assert list(graphql.tables["payments"]["kind"]) == ["refund", "authorization", "capture"]


def test_graphql_customers_map_like_rest_sample():
    rest = normalized("customers", sample_json("shopify", "customers.json")["customers"])
    graphql = normalized("customers", graphql_nodes("customers"))

    assert graphql.issues == []
    pd.testing.assert_frame_equal(graphql.tables["customers"].drop(columns=["extra"]),
                                  rest.tables["customers"].drop(columns=["extra"]))
    assert list(graphql.tables["customers"]["total_spent_amount"]) == [0, 19965]


def test_graphql_products_map_like_rest_sample():
    rest = normalized("products", sample_json("shopify", "products.json")["products"])
    graphql = normalized("products", graphql_nodes("products"))

    assert graphql.issues == []
    pd.testing.assert_frame_equal(graphql.tables["product_variants"].drop(columns=["extra"]),
                                  rest.tables["product_variants"].drop(columns=["extra"]))


def test_graphql_inventory_levels_map_like_rest_sample():
    rest = normalized("inventory_levels", sample_json("shopify", "inventory_levels.json")["inventory_levels"])
    graphql = normalized("inventory_levels", graphql_nodes("inventory_levels"))

    assert graphql.issues == []
    pd.testing.assert_frame_equal(graphql.tables["inventory_levels"].drop(columns=["extra"]),
                                  rest.tables["inventory_levels"].drop(columns=["extra"]))
    assert list(graphql.tables["inventory_levels"]["source_id"])[0] == "49148385@655441491"


@pytest.mark.parametrize(("stream_name", "rest_file", "graphql_name", "expected"), [
    ("orders", "orders.json", "orders", "450789469"),
    ("refunds", "refunds.json", "refunds", "509562969"),
    ("transactions", "transactions.json", "transactions", "179259969"),
    ("customers", "customers.json", "customers", "1073339462"),
    ("products", "products.json", "products", "632910392"),
    ("inventory_levels", "inventory_levels.json", "inventory_levels", "49148385@655441491"),
])
def test_record_id_is_numeric_for_both_shapes(stream_name, rest_file, graphql_name, expected):
    rest_payload = sample_json("shopify", rest_file)[rest_file.removesuffix(".json")][0]
    graphql_payload = graphql_nodes(graphql_name)[0]

    record_ids = stream(stream_name).record_id(pd.Series([rest_payload, graphql_payload, "not an object"]))

    assert list(record_ids[:2]) == [expected, expected]
    assert pd.isna(record_ids[2])


def test_record_id_from_global_id_without_legacy_id():
    payload = {"id": "gid://shopify/Order/450789469", "name": "#1001"}

    assert list(stream("orders").record_id(pd.Series([payload]))) == ["450789469"]


def test_both_shapes_in_one_frame_keep_record_order():
    rest_order = sample_json("shopify", "orders.json")["orders"][0]
    graphql_order = order(2, IN_WINDOW)

    result = normalized("orders", [graphql_order, rest_order])

    assert result.issues == []
    orders = result.tables["orders"]
    assert list(orders["_record"]) == [0, 1]
    assert list(orders["source_id"]) == ["2", "450789469"]
    lines = result.tables["order_lines"]
    assert list(lines["_record"]) == [0, 0, 0, 1, 1, 1]
    assert list(lines["order_source_id"]) == ["2", "2", "2", "450789469", "450789469", "450789469"]


def test_invalid_global_id_is_an_issue():
    broken = order(1, IN_WINDOW)
    broken["customer"] = {"id": "gid://shopify/Customer/not-a-number"}

    result = normalized("orders", [broken])

    assert [(issue["column"], issue["source_field"]) for issue in result.issues] == [
        ("customer_source_id", "customer.id")]
    assert "expected a Shopify global ID" in result.issues[0]["message"]


@pytest.mark.parametrize(("display", "expected"), [
    ("UNFULFILLED", None), ("FULFILLED", "fulfilled"), ("PARTIALLY_FULFILLED", "partial"),
    ("RESTOCKED", "restocked"), ("ON_HOLD", "on_hold"),
])
def test_fulfillment_status_uses_rest_values(display, expected):
    node = order(1, IN_WINDOW)
    node["displayFulfillmentStatus"] = display

    status = normalized("orders", [node]).tables["orders"].iloc[0]["fulfillment_status"]

    assert (pd.isna(status) and expected is None) or status == expected


# Through the client and the mapper into the ledger


@pytest.fixture
def sqlite_ledger(tmp_path):
    ledger = Ledger.connect("sqlite:///" + str(tmp_path / "l.db"))
    yield ledger
    ledger.dispose()


def test_extracted_graphql_orders_are_stored_by_mapper(sqlite_ledger):
    server = FakeShopify().on(
        "OrdersUpdated",
        reply(connection("orders", [order(1001, "2026-11-24T13:00:00Z"), order(1002, "2026-11-24T19:30:00Z")],
                         next_cursor="page-2")),
        reply(connection("orders", [order(1003, "2026-11-24T23:59:59Z"), order(1004, "2026-11-25T00:00:00Z")])),
    )
    client = make_client(server, [])

    run = run_stream(stream("orders"), client, sqlite_ledger, load_routing(), partition_key=DAY, run_id="test-run")

    assert run.records == 3
    assert run.failed_records == 0
    orders = sqlite_ledger.read_table("orders")
    assert sorted(orders["source_id"]) == ["1001", "1002", "1003"]
    assert set(orders["total_amount"]) == {59894}
    assert set(orders["status"]) == {"partially_refunded"}
    lines = sqlite_ledger.read_table("order_lines")
    assert sorted(lines["source_id"]) == ["10010", "10011", "10012", "10020", "10021", "10022",
                                          "10030", "10031", "10032"]


def test_graphql_payloads_never_count_as_schema_drift():
    nodes = json.loads((FIXTURES / "orders.json").read_text())["data"]["orders"]["nodes"]

    assert new_fields("shopify", "orders", nodes) == {}
