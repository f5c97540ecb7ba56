"""The Shopify Admin REST API client: list endpoints filtered by update time, paged with `Link` headers.

Orders, customers and products are requested by `updated_at_min` and `updated_at_max`. Both bounds
are inclusive, so `fetch()` drops a record updated exactly at the window's end. The next page is
the `page_info` token of the `Link` header's `rel="next"` URL, and Shopify rejects any filter sent
beside it, so follow-up requests carry only `page_info` and `limit`.

Refunds and transactions have no list endpoint filtered by time. They are read through the orders
updated in the window: the refunds embedded in each order, and GET orders/{id}/transactions.json
for each order. A new refund changes its order's update time, and so does a transaction that
changes the order's financial status. Their cursor is the update time of the order they were read
with, not their own `created_at`, and `meshline_pipelines.shopify.admin` explains why.

Payloads are passed on unchanged, in the shapes the file client reads, so the same mapper serves both.
"""

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import httpx
from pydantic import Field

from meshline_pipelines.shopify.admin import ShopifyAdminClient
from meshline_pipelines.sources.base import SourceBatch
from meshline_pipelines.sources.http import Throttle
from meshline_pipelines.sources.live import Window, iso_utc, parse_cursor

CALL_LIMIT_HEADER = "X-Shopify-Shop-Api-Call-Limit"
# Shopify accepts at most 50 IDs in the `location_ids` filter of inventory_levels.json.
LOCATIONS_PER_REQUEST = 50
# The payload field that gives each stream's cursor. Refunds and transactions use their order's
# update time when they were read through an order, and this field otherwise.
CURSOR_FIELDS = {
    "orders": "updated_at",
    "refunds": "created_at",
    "transactions": "created_at",
    "customers": "updated_at",
    "inventory_levels": "updated_at",
    "products": "updated_at",
}


def parse_call_limit(value: str | None) -> tuple[int, int] | None:
    """Parse a call-limit header such as `32/40` into requests used and bucket size; None when absent or unreadable."""
    if not value:
        return None
    used, separator, capacity = value.partition("/")
    try:
        used_count, capacity_count = int(used.strip()), int(capacity.strip())
    except ValueError:
        return None
    if not separator or capacity_count <= 0:
        return None
    return used_count, capacity_count


def next_page_info(response: httpx.Response) -> str | None:
    """Read the `page_info` token of the `Link` header's next page; return None on the last page.

    Raises ValueError when the next link is missing its `page_info` parameter.
    """
    for rel, link in response.links.items():
        if rel.lower() != "next":
            continue
        token = httpx.URL(link.get("url", "")).params.get("page_info")
        if not token:
            raise ValueError(f"the Link header's next URL is missing the page_info parameter: {link.get('url')!r}")
        return token
    return None


class ShopifyRestClient(ShopifyAdminClient):
    """The Admin REST API of one shop: orders, refunds, transactions, customers, inventory levels and products."""

    page_size: int = Field(default=250, ge=1, le=250,
                           description="Records per page, from 1 to Shopify's maximum of 250.")
    leak_rate: float = Field(
        default=2.0, gt=0,
        description="Requests per second that Shopify drains from the app's request bucket. Shopify's REST Admin "
        "API rate-limit page gives 2 for standard plans, 4 for Advanced and 20 for Shopify Plus.",
    )
    max_bucket_fill: float = Field(
        default=0.75, gt=0, le=1,
        description="Share of the request bucket the client may fill. Above it, the client pauses after "
        "each response until the bucket has drained back to this share.",
    )

    def pace(self, response: httpx.Response) -> Throttle | None:
        """Compute a pause that lets Shopify's request bucket drain when the call-limit header shows it nearly full.

        Parallel runs for the same shop and app share one bucket. When they fill it anyway,
        Shopify responds with 429 and Retry-After, and `ApiSession` waits and retries.
        """
        header = response.headers.get(CALL_LIMIT_HEADER)
        usage = parse_call_limit(header)
        if usage is None:
            return None
        used, capacity = usage
        allowed = capacity * self.max_bucket_fill
        if used <= allowed:
            return None
        return Throttle(wait=(used - allowed) / self.leak_rate, retry=False,
                        reason=f"{CALL_LIMIT_HEADER} is {header}")

    def time_field(self, stream: str) -> str:
        return CURSOR_FIELDS[stream]

    def order_id_of(self, payload: dict) -> str | None:
        return payload.get("order_id")

    def pages(self, stream: str, window: Window) -> Iterator[SourceBatch]:
        if stream == "refunds":
            return self._refund_pages(window)
        if stream == "transactions":
            return self._transaction_pages(window)
        if stream == "inventory_levels":
            return self._inventory_level_pages(window)
        return self._updated_pages(stream, window)

    def _path(self, resource: str) -> str:
        return f"/admin/api/{self.api_version}/{resource}.json"

    def _updated_params(self, window: Window) -> dict[str, Any]:
        return {"updated_at_min": iso_utc(window.since), "updated_at_max": iso_utc(window.until),
                "limit": self.page_size}

    def _order_params(self, window: Window) -> dict[str, Any]:
        # `status=any`, because the default lists open orders only.
        # NOTE: without the read_all_orders scope, Shopify lists only the last 60 days of orders,
        # so an older window comes back empty instead of failing.
        return {"status": "any", **self._updated_params(window), "order": "updated_at asc"}

    def _list_pages(self, resource: str, key: str,
                    params: dict[str, Any]) -> Iterator[tuple[list[Any], httpx.Response, int]]:
        """Request every page of a list endpoint; yield each page's records, its response and its number."""
        session = self.session()
        path = self._path(resource)
        page = 0
        while True:
            page += 1
            response = session.request("GET", path, params=params)
            body = session.read_json(response, "GET")
            if not isinstance(body, dict) or not isinstance(body.get(key), list):
                raise session.malformed("GET", response, f'expected a JSON object with a "{key}" list')
            yield body[key], response, page

            try:
                token = next_page_info(response)
            except ValueError as exc:
                raise session.malformed("GET", response, str(exc)) from None
            if token is None:
                return
            if token == params.get("page_info"):
                raise session.malformed("GET", response, "the Link header's next page repeats the current page_info")
            # The path stays the one requested: the link names Shopify's host, which may not be the
            # configured base URL (a proxy or a test server).
            params = {"page_info": token, "limit": self.page_size}

    def _batch(self, origin: str, records: list[Any]) -> SourceBatch:
        return SourceBatch(origin=origin, records=records, fetched_at=datetime.now(timezone.utc))

    def _updated_pages(self, stream: str, window: Window) -> Iterator[SourceBatch]:
        params = self._order_params(window) if stream == "orders" else self._updated_params(window)
        for records, _, page in self._list_pages(stream, stream, params):
            yield self._batch(f"GET {self._path(stream)} page {page}", records)

    def _updated_orders(self, window: Window) -> Iterator[tuple[list[Any], httpx.Response, int]]:
        """Yield the pages of the orders updated in the window, remembering each order's update time for `cursor()`."""
        self._order_updated_at = {}
        for orders, response, page in self._list_pages("orders", "orders", self._order_params(window)):
            for order in orders:
                if not isinstance(order, dict):
                    continue
                updated_at = parse_cursor(order.get("updated_at"))
                if updated_at is not None:
                    self._order_updated_at[str(order.get("id"))] = updated_at
            yield orders, response, page

    def _refund_pages(self, window: Window) -> Iterator[SourceBatch]:
        for orders, response, page in self._updated_orders(window):
            refunds = []
            for order in orders:
                embedded = order.get("refunds", []) if isinstance(order, dict) else []
                if not isinstance(embedded, list):
                    reason = (f"order {order.get('id')} has invalid refunds: "
                              f"expected a list, got {type(embedded).__name__}")
                    raise self.session().malformed("GET", response, reason)
                refunds.extend(embedded)
            yield self._batch(f"refunds in GET {self._path('orders')} page {page}", refunds)

    def _transaction_pages(self, window: Window) -> Iterator[SourceBatch]:
        # NOTE: a transaction that leaves its order's status as it was (a failed capture, say) may
        # not change the order's update time, and is then not read until the order changes again.
        for orders, response, _ in self._updated_orders(window):
            for order in orders:
                order_id = order.get("id") if isinstance(order, dict) else None
                updated_at = self._order_updated_at.get(str(order_id))
                if updated_at is not None and not window.contains(updated_at):
                    continue  # `fetch()` would drop its transactions, because they belong to the order's window
                # The ID goes into the path, so only a plain number is accepted.
                if isinstance(order_id, bool) or not str(order_id).isdigit():
                    raise self.session().malformed("GET", response, f"invalid order id {order_id!r}: expected a number")
                resource = f"orders/{order_id}/transactions"
                for transactions, _, page in self._list_pages(resource, "transactions", {}):
                    yield self._batch(f"GET {self._path(resource)} page {page}", transactions)

    def _inventory_level_pages(self, window: Window) -> Iterator[SourceBatch]:
        """Yield the inventory levels at every location, updated since the window's start.

        inventory_levels.json needs location IDs and has no upper time bound, so `fetch()` drops
        the levels updated after the window.
        """
        location_ids = []
        for locations, response, _ in self._list_pages("locations", "locations", {}):
            for location in locations:
                location_id = location.get("id") if isinstance(location, dict) else None
                if location_id is None:
                    raise self.session().malformed("GET", response, "a location is missing its id")
                location_ids.append(str(location_id))

        # NOTE: Shopify lists only the current level of each item and location, so an older window
        # reads every level changed since it began and keeps none that changed again later.
        for start in range(0, len(location_ids), LOCATIONS_PER_REQUEST):
            group = location_ids[start:start + LOCATIONS_PER_REQUEST]
            params = {"location_ids": ",".join(group), "updated_at_min": iso_utc(window.since),
                      "limit": self.page_size}
            for levels, _, page in self._list_pages("inventory_levels", "inventory_levels", params):
                origin = f"GET {self._path('inventory_levels')} locations {start + 1}-{start + len(group)} page {page}"
                yield self._batch(origin, levels)
