"""The Shopify GraphQL Admin API client: cursor-paged queries, cost-based pacing, and bulk operations for backfills.

Every request is a POST to /admin/api/{version}/graphql.json. Orders, customers and products are
requested with the search query `updated_at:>='<since>' AND updated_at:<'<until>'` (Shopify's
search syntax wants date values in quotes) and `sortKey: UPDATED_AT`, and paged with
`pageInfo { hasNextPage endCursor }` and `after`. The cursor carries the sort key and the ID, so
orders that share an update time are neither skipped nor repeated at a page boundary.

Nested connections (an order's line items, a product's variants) are requested
`nested_page_size` at a time with the parent. A parent whose first nested page has more is
completed with `node(id:)` queries from that page's end cursor, so nothing is cut off. Each
nested connection lands as `{"nodes": [...]}` with every node and without `pageInfo`, whether it
was read in pages or by a bulk operation, so both reads of a record give one payload. An
order's refunds and transactions are lists in the schema, returned whole without paging.

Refunds and transactions are read through the orders updated in the window, as the REST client
reads them, and their cursor is their order's update time: `meshline_pipelines.shopify.admin` explains why.

Shopify limits each app and shop by query cost, and every response reports the cost bucket in
`extensions.cost`. The client pauses when fewer points are left than the query just sent
requested, plus a reserve for parallel runs. It retries a THROTTLED response after the time the
bucket needs to refill that far. Other GraphQL errors raise, naming the query and Shopify's message.

A window longer than `bulk_after_days` is read by a bulk operation: one `bulkOperationRunQuery`,
polled until it completes, then its JSONL file is downloaded from the pre-signed URL (without
the access token), checked line for line against the operation's `objectCount`, and rebuilt into
nested records from each line's `__parentId`. MeshLine runs one bulk query per shop at a time: if
the app's latest bulk query is still running, or Shopify answers OPERATION_IN_PROGRESS, the run
fails with `BulkOperationInProgress` naming that operation. It does not wait, because that
operation may be another MeshLine backfill that is hours from done, and it does not cancel it.
"""

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
from pydantic import Field, PrivateAttr

from meshline_pipelines.shopify.admin import READ_THROUGH_ORDERS, ShopifyAdminClient
from meshline_pipelines.shopify.normalize_graphql import global_id_type, numeric_id
from meshline_pipelines.sources.base import SourceBatch
from meshline_pipelines.sources.http import (
    ApiAuthError, ApiError, ApiRequestError, ApiResponseError, ApiSession, RetryPolicy, Throttle,
)
from meshline_pipelines.sources.live import Window, iso_utc, parse_cursor

log = logging.getLogger(__name__)

BULK_ACTIVE_STATUSES = frozenset({"CREATED", "RUNNING", "CANCELING"})
BULK_FAILED_STATUSES = frozenset({"FAILED", "CANCELED", "EXPIRED"})
# Records per batch when a bulk operation's file is passed on, so a backfill is stored in parts.
BULK_BATCH_SIZE = 250
# Wait before retrying a THROTTLED response whose cost data is missing or shows the bucket already refilled.
MIN_THROTTLE_WAIT = 1.0
# Wait before retrying a 200 response whose body reports INTERNAL_SERVER_ERROR.
INTERNAL_ERROR_WAIT = 2.0

MONEY_BAG = "shopMoney { amount currencyCode } presentmentMoney { amount currencyCode }"
PAGE_INFO = "pageInfo { hasNextPage endCursor }"


def _connection(field: str, selection: str, *, paged: bool) -> str:
    """Select a nested connection: its first page in a paged query, or every node in a bulk query.

    Bulk queries take no page size on nested connections and return their nodes as JSONL lines.
    """
    if paged:
        return f"{field}(first: $nestedFirst) {{ nodes {{ {selection} }} {PAGE_INFO} }}"
    return f"{field} {{ edges {{ node {{ {selection} }} }} }}"


LINE_ITEM = (
    "id name title variantTitle sku vendor quantity "
    f"originalUnitPriceSet {{ {MONEY_BAG} }} variant {{ id legacyResourceId }} product {{ id legacyResourceId }} "
    f"taxLines {{ title rate priceSet {{ {MONEY_BAG} }} }} discountAllocations {{ allocatedAmountSet {{ {MONEY_BAG} }} }}"
)
TRANSACTION = (
    "id kind status gateway test errorCode authorizationCode createdAt processedAt "
    f"amountSet {{ {MONEY_BAG} }} parentTransaction {{ id }} order {{ id legacyResourceId }}"
)
CUSTOMER = (
    "id legacyResourceId firstName lastName state note tags verifiedEmail taxExempt createdAt updatedAt "
    "numberOfOrders amountSpent { amount currencyCode } defaultEmailAddress { emailAddress marketingState } "
    "defaultPhoneNumber { phoneNumber }"
)
VARIANT = "id legacyResourceId title sku barcode price createdAt updatedAt inventoryItem { id legacyResourceId }"
INVENTORY_LEVEL = (
    'id createdAt updatedAt quantities(names: ["available"]) { name quantity } '
    "item { id legacyResourceId sku } location { id legacyResourceId }"
)


def _order(paged: bool) -> str:
    money = " ".join(f"{name} {{ {MONEY_BAG} }}" for name in (
        "totalPriceSet", "subtotalPriceSet", "totalTaxSet", "totalDiscountsSet", "totalShippingPriceSet"))
    return (
        "id legacyResourceId name email createdAt updatedAt processedAt cancelledAt cancelReason "
        "displayFinancialStatus displayFulfillmentStatus currencyCode presentmentCurrencyCode "
        f"customer {{ id legacyResourceId }} {money} {_connection('lineItems', LINE_ITEM, paged=paged)}"
    )


def _order_refunds(paged: bool) -> str:
    # NOTE: a refund's transactions are not selected. They are a connection inside the Order.refunds
    # list, which bulk queries are taken to reject (not tried against a live shop), so the refund
    # amount comes from totalRefundedSet in pages and in bulk operations alike.
    refund = (
        "id legacyResourceId createdAt updatedAt note order { id legacyResourceId } "
        f"totalRefundedSet {{ {MONEY_BAG} }}"
    )
    return f"id legacyResourceId updatedAt refunds {{ {refund} }}"


def _order_transactions(paged: bool) -> str:
    return f"id legacyResourceId updatedAt transactions {{ {TRANSACTION} }}"


def _customer(paged: bool) -> str:
    return CUSTOMER


def _product(paged: bool) -> str:
    return (
        "id legacyResourceId title handle vendor productType status createdAt updatedAt "
        f"{_connection('variants', VARIANT, paged=paged)}"
    )


@dataclass(frozen=True)
class NestedConnection:
    """A connection inside each record of a stream that is read `nested_page_size` nodes at a time."""

    owner_type: str
    field: str
    node_type: str
    selection: str

    def page_query(self) -> str:
        return (
            f"query {self.operation}($id: ID!, $first: Int!, $after: String) {{ node(id: $id) {{ ... on {self.owner_type} "
            f"{{ {self.field}(first: $first, after: $after) {{ nodes {{ {self.selection} }} {PAGE_INFO} }} }} }} }}"
        )

    @property
    def operation(self) -> str:
        return f"{self.owner_type}{self.field[0].upper()}{self.field[1:]}"


@dataclass(frozen=True)
class StreamQuery:
    """A stream's read plan: the root connection, the node selection, and the field that contains the records."""

    operation: str
    root: str
    selection: Callable[[bool], str]
    # Whether each node carries nested lists or connections, so a page contains `parent_page_size` nodes.
    large_nodes: bool
    nested: NestedConnection | None = None
    # The list field of each order node that contains the stream's records; None when the nodes are the records.
    records_field: str | None = None

    def page_query(self) -> str:
        variables = "$first: Int!, $after: String, $search: String!" + (", $nestedFirst: Int!" if self.nested else "")
        return (
            f"query {self.operation}({variables}) {{ {self.root}(first: $first, after: $after, query: $search, "
            f"sortKey: UPDATED_AT) {{ nodes {{ {self.selection(True)} }} {PAGE_INFO} }} }}"
        )

    def bulk_query(self, search: str) -> str:
        # json.dumps writes a valid GraphQL string literal for the search text.
        return (
            f"{{ {self.root}(query: {json.dumps(search)}, sortKey: UPDATED_AT) "
            f"{{ edges {{ node {{ {self.selection(False)} }} }} }} }}"
        )


STREAM_QUERIES = {
    "orders": StreamQuery("OrdersUpdated", "orders", _order, large_nodes=True,
                          nested=NestedConnection("Order", "lineItems", "LineItem", LINE_ITEM)),
    "refunds": StreamQuery("OrderRefunds", "orders", _order_refunds, large_nodes=True, records_field="refunds"),
    "transactions": StreamQuery("OrderTransactions", "orders", _order_transactions, large_nodes=True,
                                records_field="transactions"),
    "customers": StreamQuery("CustomersUpdated", "customers", _customer, large_nodes=False),
    "products": StreamQuery("ProductsUpdated", "products", _product, large_nodes=True,
                            nested=NestedConnection("Product", "variants", "ProductVariant", VARIANT)),
}

LOCATIONS_QUERY = (
    "query Locations($first: Int!, $after: String) { locations(first: $first, after: $after, includeInactive: true) "
    f"{{ nodes {{ id legacyResourceId name isActive }} {PAGE_INFO} }} }}"
)
INVENTORY_LEVELS_QUERY = (
    "query LocationInventoryLevels($id: ID!, $first: Int!, $after: String, $search: String!) { location(id: $id) "
    f"{{ inventoryLevels(first: $first, after: $after, query: $search) {{ nodes {{ {INVENTORY_LEVEL} }} {PAGE_INFO} }} }} }}"
)
CURRENT_BULK_QUERY = "query CurrentBulkQuery { currentBulkOperation(type: QUERY) { id status createdAt } }"
RUN_BULK_QUERY = (
    "mutation RunBulkQuery($query: String!) { bulkOperationRunQuery(query: $query) "
    "{ bulkOperation { id status } userErrors { field message code } } }"
)
BULK_OPERATION_STATUS = (
    "query BulkOperationStatus($id: ID!) { node(id: $id) { ... on BulkOperation { id status errorCode objectCount "
    "rootObjectCount fileSize url partialDataUrl createdAt completedAt } } }"
)


class BulkOperationFailed(ApiError):
    """A bulk operation gave no complete result: it failed, was cancelled, expired, ran too long, or its file is incomplete."""


class BulkOperationInProgress(BulkOperationFailed):
    """A bulk query of this app is already running for the shop, so MeshLine does not start another."""


@dataclass(frozen=True)
class QueryCost:
    """The cost data of one response: the query's requested cost and the app's bucket for the shop, in points."""

    requested: float
    available: float
    maximum: float
    restore_rate: float  # points per second

    @classmethod
    def from_body(cls, body: dict) -> "QueryCost | None":
        """Read `extensions.cost`; None when the bucket figures are missing or unreadable."""
        cost = _dig(body, "extensions", "cost")
        status = cost.get("throttleStatus") if isinstance(cost, dict) else None
        if not isinstance(status, dict):
            return None
        available = _number(status.get("currentlyAvailable"))
        maximum = _number(status.get("maximumAvailable"))
        restore_rate = _number(status.get("restoreRate"))
        if available is None or maximum is None or not restore_rate:
            return None
        return cls(requested=_number(cost.get("requestedQueryCost")) or 0.0, available=available, maximum=maximum,
                   restore_rate=restore_rate)

    def seconds_until(self, points: float) -> float:
        """Return the seconds the bucket needs to hold `points`, capped at a full bucket."""
        return max(0.0, (min(points, self.maximum) - self.available) / self.restore_rate)

    def describe(self) -> str:
        return (f"{self.available:g} of {self.maximum:g} cost points available, restoring {self.restore_rate:g} per "
                f"second; the query requested {self.requested:g}")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _dig(node: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _error_codes(body: dict) -> set[str]:
    errors = body.get("errors")
    if not isinstance(errors, list):
        return set()
    return {code for error in errors if isinstance(code := _dig(error, "extensions", "code"), str)}


def search_window(window: Window) -> str:
    """Return the search query for records updated in the window, in Shopify's search syntax."""
    return f"updated_at:>='{iso_utc(window.since)}' AND updated_at:<'{iso_utc(window.until)}'"


def rebuild_bulk_records(text: str, connections: dict[str, NestedConnection]) -> tuple[list[dict], int]:
    """Nest the objects of a bulk operation's JSONL file under their parents; return the top-level objects and the line count.

    A line with `__parentId` is a node of a nested connection. It goes into its parent's
    connection, chosen by the node's global ID type in `connections`, as `{"nodes": [...]}`.
    Lines may come in any order. Raises ValueError for a line that is not a JSON object, a
    parent missing from the file, or a node type the query did not select.
    """
    objects: list[tuple[int, dict]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            raise ValueError(f"line {number} is not JSON; it begins {line[:80]!r}") from None
        if not isinstance(value, dict):
            raise ValueError(f"line {number} is not a JSON object")
        objects.append((number, value))

    parents = {value["id"]: value for _, value in objects
               if "__parentId" not in value and isinstance(value.get("id"), str)}
    for parent in parents.values():
        for connection in connections.values():
            if global_id_type(parent.get("id")) == connection.owner_type:
                parent.setdefault(connection.field, {"nodes": []})

    roots = []
    for number, value in objects:
        parent_id = value.pop("__parentId", None)
        if parent_id is None:
            roots.append(value)
            continue
        parent = parents.get(parent_id)
        if parent is None:
            raise ValueError(f"line {number}: its parent {parent_id} is not in the file")
        node_type = global_id_type(value.get("id"))
        connection = connections.get(node_type or "")
        if connection is None or global_id_type(parent_id) != connection.owner_type:
            raise ValueError(f"line {number}: a {node_type or 'node without a global ID'} under {parent_id} "
                             "is not a connection the query selected")
        parent[connection.field]["nodes"].append(value)
    return roots, len(objects)


class ShopifyGraphqlClient(ShopifyAdminClient):
    """The GraphQL Admin API of one shop: orders, refunds, transactions, customers, inventory levels and products."""

    # NOTE: the page sizes are estimates, not measured. They aim to keep an orders query with its
    # line items under the 1,000-point maximum that Shopify is reported to accept for one query's
    # requested cost. A query above it fails with MAX_COST_EXCEEDED, and the error names these settings.
    page_size: int = Field(default=50, ge=1, le=250,
                           description="Customers, locations or inventory levels per page, from 1 to 250.")
    parent_page_size: int = Field(
        default=10, ge=1, le=250,
        description="Orders or products per page, from 1 to 250. These nodes carry nested lists and connections, "
        "so each costs many points.",
    )
    nested_page_size: int = Field(
        default=20, ge=1, le=250,
        description="Line items or variants per nested page, from 1 to 250.",
    )
    bucket_reserve: float = Field(
        default=0.1, ge=0, lt=1,
        description="Share of the cost bucket kept free for parallel runs of the same app. The client pauses "
        "after a response when fewer points are left than the query requested plus this share of the bucket.",
    )
    bulk_after_days: float = Field(
        default=7.0, ge=0,
        description="Windows longer than this many days are read by a bulk operation instead of pages; "
        "0 reads every window by bulk operation. Inventory levels are always read in pages.",
    )
    bulk_poll_seconds: float = Field(default=10.0, gt=0, description="Seconds between checks of a running bulk operation.")
    bulk_timeout_seconds: float = Field(
        default=6 * 3600.0, gt=0,
        description="Seconds to wait for a bulk operation before the run fails; the operation keeps running at Shopify.",
    )

    # The last response `pace` parsed and its body, so the body is parsed once.
    _parsed: tuple[httpx.Response, Any] | None = PrivateAttr(default=None)

    def path(self) -> str:
        return f"/admin/api/{self.api_version}/graphql.json"

    # Pacing and errors

    def pace(self, response: httpx.Response) -> Throttle | None:
        """Ask for a retry of a THROTTLED response, or a pause when the cost bucket is nearly empty.

        The wait is the time the bucket needs, at its restore rate, to hold the points the query
        requested (plus the reserve, for a pause). Parallel runs of the same app share the bucket.
        """
        try:
            body = response.json()
        except ValueError:
            return None
        self._parsed = (response, body)
        if not isinstance(body, dict):
            return None
        cost = QueryCost.from_body(body)
        codes = _error_codes(body)
        if "THROTTLED" in codes:
            wait = cost.seconds_until(cost.requested) if cost else 0.0
            reason = f"THROTTLED: {cost.describe()}" if cost else "THROTTLED, with no cost data in the response"
            return Throttle(wait=max(MIN_THROTTLE_WAIT, wait), retry=True, reason=reason)
        if "INTERNAL_SERVER_ERROR" in codes:
            return Throttle(wait=INTERNAL_ERROR_WAIT, retry=True, reason="INTERNAL_SERVER_ERROR in the response body")
        if cost is None:
            return None
        needed = cost.requested + cost.maximum * self.bucket_reserve
        if cost.available >= min(needed, cost.maximum):
            return None
        return Throttle(wait=cost.seconds_until(needed), retry=False, reason=cost.describe())

    def _response_error(self, operation: str, reason: str) -> ApiResponseError:
        return ApiResponseError(
            system=self.system, account=self.account, method="POST", endpoint=self.path(), status=200,
            reason=f"GraphQL {operation}: {reason}",
            fix=f"check that {self.base_url_setting} ({self.base_url}) points at the Shopify Admin API and that "
            f"api_version {self.api_version} is one Shopify supports",
        )

    def _query_error(self, operation: str, errors: Any) -> ApiError:
        """Build the error for a response whose `errors` Shopify does not mark as temporary."""
        first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
        message = str(first.get("message") or errors)[:300]
        code = _dig(first, "extensions", "code")
        more = f" (and {len(errors) - 1} more errors)" if isinstance(errors, list) and len(errors) > 1 else ""
        reason = f"GraphQL {operation} failed{f' with {code}' if code else ''}: {message}{more}"
        common = dict(system=self.system, account=self.account, method="POST", endpoint=self.path(), status=200,
                      reason=reason)
        if code == "ACCESS_DENIED":
            return ApiAuthError(**common, fix="check SHOPIFY_ACCESS_TOKEN: the app needs the read scope of this "
                                "stream (read_orders, and read_all_orders for orders older than 60 days, "
                                "read_customers, read_products, read_inventory, read_locations)")
        if code == "MAX_COST_EXCEEDED":
            return ApiRequestError(**common, fix="lower parent_page_size, nested_page_size or page_size, so the "
                                   "query's requested cost stays within Shopify's maximum for one query")
        return ApiRequestError(**common, fix=f"check api_version {self.api_version}: the query's fields and "
                               "arguments must exist in that version of the Admin API")

    def execute(self, operation: str, document: str, variables: dict[str, Any]) -> dict:
        """Send one GraphQL document and return its `data`; raise for GraphQL errors and for a body without data."""
        session = self.session()
        response = session.request("POST", self.path(),
                                   json={"query": document, "variables": variables, "operationName": operation})
        if self._parsed is not None and self._parsed[0] is response:
            body = self._parsed[1]
        else:
            body = session.read_json(response, "POST")
        if not isinstance(body, dict):
            raise self._response_error(operation, f"expected a JSON object, got {type(body).__name__}")
        if body.get("errors"):
            raise self._query_error(operation, body["errors"])
        data = body.get("data")
        if not isinstance(data, dict):
            raise self._response_error(operation, 'the body has neither "data" nor "errors"')
        return data

    # Streams

    def time_field(self, stream: str) -> str:
        return "createdAt" if stream in READ_THROUGH_ORDERS else "updatedAt"

    def order_id_of(self, payload: dict) -> str | None:
        return numeric_id(_dig(payload, "order", "id"))

    def pages(self, stream: str, window: Window) -> Iterator[SourceBatch]:
        if stream == "inventory_levels":
            return self._inventory_level_pages(window)
        if window.until - window.since > timedelta(days=self.bulk_after_days):
            return self._bulk_pages(stream, window)
        return self._query_pages(stream, window)

    def _batch(self, origin: str, records: list[Any]) -> SourceBatch:
        return SourceBatch(origin=origin, records=records, fetched_at=datetime.now(timezone.utc))

    def _connection_pages(self, operation: str, document: str, path: tuple[str, ...], variables: dict[str, Any],
                          after: str | None = None) -> Iterator[tuple[list[Any], int]]:
        """Request every page of the connection at `path` in `data`, from `after`; yield each page's nodes and number."""
        page = 0
        while True:
            page += 1
            data = self.execute(operation, document, {**variables, "after": after})
            if len(path) > 1 and _dig(data, *path[:-1]) is None:
                raise self._response_error(operation, f"data.{'.'.join(path[:-1])} is null: {variables.get('id')} "
                                           "was not found; it may have been deleted during the run, so run again")
            connection = _dig(data, *path)
            if not isinstance(connection, dict) or not isinstance(connection.get("nodes"), list) \
                    or not isinstance(connection.get("pageInfo"), dict):
                raise self._response_error(operation, f"expected data.{'.'.join(path)} with a nodes list and pageInfo")
            yield connection["nodes"], page

            info = connection["pageInfo"]
            if not info.get("hasNextPage"):
                return
            cursor = info.get("endCursor")
            if not isinstance(cursor, str) or not cursor:
                raise self._response_error(operation, "pageInfo.hasNextPage is true but endCursor is missing")
            if cursor == after:
                raise self._response_error(operation, "pageInfo.endCursor repeats the cursor just requested")
            after = cursor

    def _records(self, query: StreamQuery, nodes: list[Any]) -> list[Any]:
        """Return the stream's records in a page of nodes: the nodes, or the refunds or transactions of each order."""
        if query.records_field is None:
            return list(nodes)
        records = []
        for node in nodes:
            items = node.get(query.records_field) if isinstance(node, dict) else None
            if not isinstance(items, list):
                order_id = node.get("id") if isinstance(node, dict) else node
                raise self._response_error(query.operation, f"order {order_id} has invalid {query.records_field}: "
                                           f"expected a list, got {type(items).__name__}")
            records.extend(items)
        return records

    def _remember_orders(self, nodes: list[Any]) -> None:
        for node in nodes:
            if not isinstance(node, dict):
                continue
            order_id = numeric_id(node.get("legacyResourceId")) or numeric_id(node.get("id"))
            updated_at = parse_cursor(node.get("updatedAt"))
            if order_id is not None and updated_at is not None:
                self._order_updated_at[order_id] = updated_at

    def _complete_nested(self, query: StreamQuery, record: Any) -> None:
        """Read the rest of the record's nested connection and keep all its nodes as `{"nodes": [...]}`."""
        nested = query.nested
        if nested is None or not isinstance(record, dict):
            return
        connection = record.get(nested.field)
        if not isinstance(connection, dict) or not isinstance(connection.get("nodes"), list):
            raise self._response_error(query.operation, f"{record.get('id')} has no {nested.field} connection "
                                       "with a nodes list")
        nodes = list(connection["nodes"])
        info = connection.get("pageInfo")
        if isinstance(info, dict) and info.get("hasNextPage"):
            cursor = info.get("endCursor")
            if not isinstance(cursor, str) or not cursor:
                raise self._response_error(query.operation, f"{nested.field} of {record.get('id')} has more pages "
                                           "but no endCursor")
            variables = {"id": record.get("id"), "first": self.nested_page_size}
            for page_nodes, _ in self._connection_pages(nested.operation, nested.page_query(), ("node", nested.field),
                                                        variables, after=cursor):
                nodes.extend(page_nodes)
        record[nested.field] = {"nodes": nodes}

    def _query_pages(self, stream: str, window: Window) -> Iterator[SourceBatch]:
        query = STREAM_QUERIES[stream]
        self._order_updated_at = {}
        variables: dict[str, Any] = {
            "first": self.parent_page_size if query.large_nodes else self.page_size,
            "search": search_window(window),
        }
        if query.nested:
            variables["nestedFirst"] = self.nested_page_size
        for nodes, page in self._connection_pages(query.operation, query.page_query(), (query.root,), variables):
            if query.root == "orders":
                self._remember_orders(nodes)
            records = self._records(query, nodes)
            for record in records:
                self._complete_nested(query, record)
            yield self._batch(f"POST {self.path()} {query.operation} page {page}", records)

    def _inventory_level_pages(self, window: Window) -> Iterator[SourceBatch]:
        """Yield the inventory levels at every location, updated since the window's start.

        Levels are listed per location, as REST lists them; there is no upper time bound, so
        `fetch()` drops the levels updated after the window.
        """
        location_ids = []
        for nodes, _ in self._connection_pages("Locations", LOCATIONS_QUERY, ("locations",), {"first": self.page_size}):
            for node in nodes:
                location_id = node.get("id") if isinstance(node, dict) else None
                if not isinstance(location_id, str):
                    raise self._response_error("Locations", "a location is missing its id")
                location_ids.append(location_id)

        # NOTE: the `updated_at` filter of inventoryLevels follows Shopify's inventory level search
        # fields and was not tried against a live shop. Shopify lists only the current level of each
        # item and location, so an older window reads every level changed since it began.
        search = f"updated_at:>='{iso_utc(window.since)}'"
        for location_id in location_ids:
            variables = {"id": location_id, "first": self.page_size, "search": search}
            for levels, page in self._connection_pages("LocationInventoryLevels", INVENTORY_LEVELS_QUERY,
                                                       ("location", "inventoryLevels"), variables):
                yield self._batch(f"POST {self.path()} LocationInventoryLevels {location_id} page {page}", levels)

    # Bulk operations

    def _bulk_pages(self, stream: str, window: Window) -> Iterator[SourceBatch]:
        query = STREAM_QUERIES[stream]
        self._order_updated_at = {}
        operation = self._run_bulk_query(stream, query.bulk_query(search_window(window)))
        roots = self._bulk_results(operation, query)
        if query.root == "orders":
            self._remember_orders(roots)
        records = self._records(query, roots)
        if not records:
            yield self._batch(f"bulk operation {operation['id']} {stream}: no records", [])
        for start in range(0, len(records), BULK_BATCH_SIZE):
            part = records[start:start + BULK_BATCH_SIZE]
            origin = f"bulk operation {operation['id']} {stream} records {start + 1}-{start + len(part)}"
            yield self._batch(origin, part)

    def _bulk_error(self, reason: str, fix: str, error: type[BulkOperationFailed] = BulkOperationFailed):
        return error(system=self.system, account=self.account, method="POST", endpoint=self.path(), status=200,
                     reason=reason, fix=fix)

    def _run_bulk_query(self, stream: str, document: str) -> dict:
        """Start a bulk query and poll it until it completes; return the completed operation.

        Raises BulkOperationInProgress when a bulk query of this app is already running for the
        shop, and BulkOperationFailed when the operation fails, is cancelled, expires or runs
        longer than `bulk_timeout_seconds`.
        """
        current = self.execute("CurrentBulkQuery", CURRENT_BULK_QUERY, {}).get("currentBulkOperation")
        if isinstance(current, dict) and current.get("status") in BULK_ACTIVE_STATUSES:
            raise self._already_running(f"{current.get('id')} ({current.get('status')}, created "
                                        f"{current.get('createdAt')})")

        started = self.execute("RunBulkQuery", RUN_BULK_QUERY, {"query": document}).get("bulkOperationRunQuery")
        if not isinstance(started, dict):
            raise self._response_error("RunBulkQuery", "expected data.bulkOperationRunQuery")
        user_errors = [error for error in started.get("userErrors") or [] if isinstance(error, dict)]
        if any(error.get("code") == "OPERATION_IN_PROGRESS" for error in user_errors):
            raise self._already_running(f"reported by Shopify: {user_errors[0].get('message')}")
        if user_errors:
            messages = "; ".join(f"{error.get('message')} (field {error.get('field')}, code {error.get('code')})"
                                 for error in user_errors)
            raise ApiRequestError(system=self.system, account=self.account, method="POST", endpoint=self.path(),
                                  status=200, reason=f"bulkOperationRunQuery for {stream} was rejected: {messages}",
                                  fix=f"check api_version {self.api_version}: the bulk query's fields must exist in "
                                  "that version, with at most five connections nested two deep")
        operation_id = _dig(started, "bulkOperation", "id")
        if not isinstance(operation_id, str):
            raise self._response_error("RunBulkQuery", "the started bulk operation has no id")
        log.info("shopify account %r: bulk operation %s started for %s", self.account, operation_id, stream)

        waited = 0.0
        while True:
            operation = self.execute("BulkOperationStatus", BULK_OPERATION_STATUS, {"id": operation_id}).get("node")
            status = operation.get("status") if isinstance(operation, dict) else None
            if status == "COMPLETED":
                log.info("shopify account %r: bulk operation %s completed with %s objects", self.account,
                         operation_id, operation.get("objectCount"))
                return operation
            if status in BULK_FAILED_STATUSES:
                raise self._bulk_error(
                    f"bulk operation {operation_id} for {stream} ended {status} with errorCode "
                    f"{operation.get('errorCode')}; partial data is "
                    f"{'available at its partialDataUrl' if operation.get('partialDataUrl') else 'not available'}",
                    _failure_fix(operation.get("errorCode")))
            if status not in BULK_ACTIVE_STATUSES:
                raise self._response_error("BulkOperationStatus", f"bulk operation {operation_id} has unknown "
                                           f"status {status!r}")
            if waited >= self.bulk_timeout_seconds:
                raise self._bulk_error(
                    f"bulk operation {operation_id} for {stream} is still {status} after {waited:g} s",
                    "raise bulk_timeout_seconds, or run again later: the operation keeps running at Shopify, and a "
                    "new run fails until it ends or is cancelled with bulkOperationCancel")
            log.debug("shopify account %r: bulk operation %s is %s with %s objects so far", self.account,
                      operation_id, status, operation.get("objectCount"))
            self.session().sleep(self.bulk_poll_seconds)
            waited += self.bulk_poll_seconds

    def _already_running(self, detail: str) -> BulkOperationInProgress:
        return self._bulk_error(
            f"a bulk query of this app is already running for the shop: {detail}",
            "wait until it ends and run again; MeshLine runs one bulk query per shop at a time. If no MeshLine "
            "run started it, cancel it with the bulkOperationCancel mutation",
            BulkOperationInProgress)

    def _bulk_results(self, operation: dict, query: StreamQuery) -> list[dict]:
        """Download the operation's JSONL file and rebuild its records; raise when its lines do not match objectCount."""
        operation_id = operation.get("id")
        try:
            expected = int(operation.get("objectCount"))
        except (TypeError, ValueError):
            raise self._response_error("BulkOperationStatus", f"bulk operation {operation_id} has an invalid "
                                       f"objectCount {operation.get('objectCount')!r}") from None
        url = operation.get("url")
        if not url:
            # A completed operation without a file matched nothing, so any other count is an error.
            if expected != 0:
                raise self._bulk_error(f"bulk operation {operation_id} counted {expected} objects but has no url",
                                       "run again; if it persists, check Shopify's status page")
            return []

        text = self._download(url, operation_id)
        connections = {query.nested.node_type: query.nested} if query.nested else {}
        try:
            roots, lines = rebuild_bulk_records(text, connections)
        except ValueError as exc:
            raise self._bulk_error(f"the file of bulk operation {operation_id} is invalid: {exc}",
                                   "run again; the file may have been cut short in transfer") from None
        # Shopify counts every object of the query in objectCount, parents and nested nodes alike,
        # and writes each one as a line.
        if lines != expected:
            raise self._bulk_error(
                f"bulk operation {operation_id} counted {expected} objects but its file has {lines} lines",
                "run again; the file may have been cut short in transfer, and no record of it was passed on")
        return roots

    def _download(self, url: str, operation_id: Any) -> str:
        """Download a bulk operation's file from its pre-signed URL, without the Shopify access token."""
        target = httpx.URL(url)
        link = f"the url of bulk operation {operation_id}"
        extra = {"sleep": self._sleep} if self._sleep else {}
        session = ApiSession(
            system=self.system, account=self.account, base_url=f"{target.scheme}://{target.netloc.decode()}",
            base_url_setting=link, credential_settings=(f"{link}, a pre-signed link that expires seven days after "
                                                        "the operation completes",),
            timeout=self.timeout_seconds, retry=RetryPolicy(max_attempts=self.max_attempts),
            transport=self._transport, **extra,
        )
        try:
            return session.request("GET", url).text
        finally:
            session.close()


def _failure_fix(error_code: Any) -> str:
    if error_code == "ACCESS_DENIED":
        return "check SHOPIFY_ACCESS_TOKEN: the app lacks a read scope that the bulk query needs"
    if error_code == "TIMEOUT":
        return "lower bulk_after_days or request a shorter window, so each bulk query reads fewer records"
    return "run again later; if it persists, check Shopify's status page"
