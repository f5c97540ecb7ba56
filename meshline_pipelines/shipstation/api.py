"""The ShipStation API v1 client: shipments in, orders out.

Requests use HTTP Basic auth with the API key as user name and the API secret as password.
ShipStation v1 limits each API key to a number of requests per minute (about 40 by default) and
reports the limit, the requests left and the seconds until the window resets in the
`X-Rate-Limit-Limit`, `X-Rate-Limit-Remaining` and `X-Rate-Limit-Reset` headers. The client pauses
until the window resets once few requests are left.

Shipments are listed by creation date, then by void date for labels created earlier and voided in
the window, 500 a page. Orders are created or updated in batches of up to 100 with
POST /orders/createorders. ShipStation updates the order that already has the same `orderKey`, so
sending an order again never creates a second one.
"""

import logging
from collections import defaultdict, deque
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import httpx
from pydantic import Field, PrivateAttr

from meshline_pipelines.delivery.base import (
    DELIVERED, REJECTED, RETRY, DeliveryResult, OutboundRecord, TargetClient,
)
from meshline_pipelines.sources.base import SourceBatch
from meshline_pipelines.sources.http import ApiRequestError, ApiSession, ApiUnavailable, Throttle
from meshline_pipelines.sources.live import Window

log = logging.getLogger(__name__)

# NOTE: ShipStation v1 sends and reads dates as local times without a UTC offset. This client takes
# them as US Pacific time (PST/PDT) for every account, which is untested against a live account. If
# ShipStation keeps an account's dates in another zone, they are read shifted by the difference.
SHIPSTATION_TIME_ZONE = ZoneInfo("America/Los_Angeles")
QUERY_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

SHIPMENTS_ENDPOINT = "/shipments"
CREATE_ORDERS_ENDPOINT = "/orders/createorders"
MAX_PAGE_SIZE = 500
MAX_ORDERS_PER_REQUEST = 100
# ShipStation's rate-limit window is one minute, so no wait for it is ever longer than this.
RATE_LIMIT_WINDOW_SECONDS = 60.0
# `X-Rate-Limit-Reset` counts whole seconds, so one more second makes sure the new window has begun.
RESET_MARGIN_SECONDS = 1.0
MAX_MESSAGE_LENGTH = 1000
KEYS_LOGGED = 10  # order keys named in one log line; the delivery results list them all


def parse_shipstation_time(value: Any) -> datetime | None:
    """Parse a ShipStation date or time ("2026-11-02T06:51:33.6270000", "2026-11-02") into UTC.

    A value without an offset is a Pacific local time. In the hour that repeats when daylight
    saving time ends, the earlier instant (PDT) is taken, because the text cannot tell them apart.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=SHIPSTATION_TIME_ZONE)
    return moment.astimezone(timezone.utc)


def shipstation_local_time(moment: datetime, time_format: str = QUERY_TIME_FORMAT) -> str:
    """Format an aware time as the Pacific local time that ShipStation filters and order dates expect."""
    return moment.astimezone(SHIPSTATION_TIME_ZONE).strftime(time_format)


def rejection_message(response: httpx.Response) -> str:
    """Return ShipStation's own words for a rejected request: its `Message` and each field error."""
    try:
        body = response.json()
    except ValueError:
        return (response.text.strip() or response.reason_phrase or "no reason given")[:MAX_MESSAGE_LENGTH]

    parts = []
    if isinstance(body, dict):
        message = body.get("Message") or body.get("message") or body.get("ExceptionMessage")
        if message:
            parts.append(str(message))
        field_errors = body.get("ModelState")
        if isinstance(field_errors, dict):
            for name, problems in field_errors.items():
                texts = problems if isinstance(problems, list) else [problems]
                parts.append(f"{name}: {' '.join(str(text) for text in texts)}")
    text = " ".join(parts) or response.reason_phrase or "no reason given"
    return text[:MAX_MESSAGE_LENGTH]


def _header_number(response: httpx.Response, name: str) -> float | None:
    value = response.headers.get(name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


class ShipStationClient(TargetClient):
    """GET /shipments for one ShipStation account, and order upserts through POST /orders/createorders."""

    account_id: str = Field(description="A name for the ShipStation account, such as the company's. "
                            "It is part of every record's identity.")
    api_key: str = Field(description="The API key from ShipStation's API settings, set with SHIPSTATION_API_KEY.")
    api_secret: str = Field(description="The API secret from ShipStation's API settings, "
                            "set with SHIPSTATION_API_SECRET.")
    base_url: str = Field(default="https://ssapi.shipstation.com",
                          description="API base URL: the ShipStation v1 API, or a proxy in front of it.")
    page_size: int = Field(default=MAX_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE,
                           description="Shipments per page, from 1 to 500.")
    rate_limit_reserve: int = Field(
        default=2, ge=0,
        description="Requests left unused in each one-minute rate-limit window, for other integrations "
        "that share the API key. The client pauses until the window resets when no more than this many remain.",
    )

    system: ClassVar[str] = "shipstation"
    base_url_setting: ClassVar[str] = "SHIPSTATION_API_BASE_URL"
    credential_settings: ClassVar[tuple[str, ...]] = ("SHIPSTATION_API_KEY", "SHIPSTATION_API_SECRET")
    streams: ClassVar[tuple[str, ...]] = ("shipments",)
    entities: ClassVar[tuple[str, ...]] = ("order",)

    # The last non-2xx response. ApiSession's errors keep only a short reason, and a 400 from
    # createorders names the invalid fields in its body, which a rejection should pass on.
    _last_failure: httpx.Response | None = PrivateAttr(default=None)
    # Shipment ID to its void time, for shipments read because their label was voided in the window.
    _voided_at: dict[str, datetime] = PrivateAttr(default_factory=dict)

    @property
    def account(self) -> str:
        return self.account_id

    def session_options(self) -> dict[str, Any]:
        return {
            "auth": httpx.BasicAuth(self.api_key, self.api_secret),
            "headers": {"Accept": "application/json"},
            "throttle": self.pace,
            "should_retry": self._remember_failure,
        }

    def pace(self, response: httpx.Response) -> Throttle | None:
        """Pause until the rate-limit window resets once `rate_limit_reserve` or fewer requests remain in it.

        ApiSession calls this for 2xx responses only. A 429 waits for `Retry-After` when ShipStation
        sends one, else for a whole window (see `RATE_LIMIT_WINDOW_SECONDS`).
        """
        remaining = _header_number(response, "X-Rate-Limit-Remaining")
        if remaining is None or remaining > self.rate_limit_reserve:
            return None
        reset = _header_number(response, "X-Rate-Limit-Reset")
        wait = RATE_LIMIT_WINDOW_SECONDS if reset is None else min(max(reset, 0.0), RATE_LIMIT_WINDOW_SECONDS)
        limit = response.headers.get("X-Rate-Limit-Limit", "an unknown number of")
        return Throttle(wait=wait + RESET_MARGIN_SECONDS, retry=False,
                        reason=f"{remaining:g} of {limit} requests left in this minute, resets in {wait:g} s")

    def _remember_failure(self, response: httpx.Response) -> bool | None:
        self._last_failure = response
        return None  # keep ApiSession's decision by status code

    # Inbound: shipments.

    def cursor(self, stream: str, payload: Any) -> datetime | None:
        """Return the time the shipment's label was voided, if that is why it was read, else its creation time.

        ShipStation v1 shipments have no update time, and a void is the only later change this client reads.
        """
        if not isinstance(payload, dict):
            return None
        voided = self._voided_at.get(str(payload.get("shipmentId")))
        return voided or parse_shipstation_time(payload.get("createDate"))

    def pages(self, stream: str, window: Window) -> Iterator[SourceBatch]:
        """Request the shipments created in the window, then those created earlier and voided in it.

        Each listing is sorted by creation date, oldest first, so a shipment created during the
        paging lands on the last page and none moves to a page already read.
        """
        # A label voided while the voided listing is paged moves later pages by one, so a window
        # that is still open can miss a void. It is read when the window is read again.
        self._voided_at = {}
        listed: set[str] = set()
        for page, shipments in self._list_pages(window, "createDate"):
            listed.update(str(s.get("shipmentId")) for s in shipments if isinstance(s, dict))
            yield SourceBatch(origin=f"GET {SHIPMENTS_ENDPOINT} page {page}", records=shipments,
                              fetched_at=datetime.now(timezone.utc))

        for page, shipments in self._list_pages(window, "voidDate"):
            earlier = []
            for payload in shipments:
                shipment_id = str(payload.get("shipmentId")) if isinstance(payload, dict) else None
                voided = parse_shipstation_time(payload.get("voidDate")) if isinstance(payload, dict) else None
                if shipment_id is None or shipment_id in listed or voided is None:
                    continue
                self._voided_at[shipment_id] = voided
                earlier.append(payload)
            yield SourceBatch(origin=f"GET {SHIPMENTS_ENDPOINT} voided page {page}", records=earlier,
                              fetched_at=datetime.now(timezone.utc))

    def _list_pages(self, window: Window, date_filter: str) -> Iterator[tuple[int, list[Any]]]:
        """List the shipments whose `date_filter` (createDate or voidDate) falls in the window, page by page.

        The UTC window is sent as Pacific local times. Both bounds are inclusive and whole seconds,
        so the end is rounded up and `fetch` drops what lies outside the window.
        """
        session = self.session()
        until = window.until
        if until.microsecond:
            until = until.replace(microsecond=0) + timedelta(seconds=1)
        params: dict[str, Any] = {
            f"{date_filter}Start": shipstation_local_time(window.since),
            f"{date_filter}End": shipstation_local_time(until),
            "includeShipmentItems": "false",
            "sortBy": "CreateDate",
            "sortDir": "ASC",
            "pageSize": self.page_size,
        }
        page = 1
        while True:
            response = session.request("GET", SHIPMENTS_ENDPOINT, params={**params, "page": page},
                                       min_wait_on_429=RATE_LIMIT_WINDOW_SECONDS)
            shipments, pages = self._shipment_page(session, response)
            yield page, shipments
            # An empty page ends the paging too, so a wrong `pages` cannot loop forever.
            if page >= pages or not shipments:
                return
            page += 1

    def _shipment_page(self, session: ApiSession, response: httpx.Response) -> tuple[list[Any], int]:
        body = session.read_json(response, "GET")
        if not isinstance(body, dict) or not isinstance(body.get("shipments"), list):
            raise session.malformed("GET", response,
                                    'expected {"shipments": [...], "total": ..., "page": ..., "pages": ...}')
        pages = body.get("pages")
        if isinstance(pages, bool) or not isinstance(pages, int):
            raise session.malformed("GET", response, f"pages is {pages!r}, expected a whole number")
        return body["shipments"], pages

    # Outbound: orders.

    def deliver(self, entity: str, records: list[OutboundRecord]) -> list[DeliveryResult]:
        """Create or update the orders by order key, up to 100 a request, and return one result per record."""
        if entity not in self.entities:
            raise ValueError(f"unsupported ShipStation entity {entity!r}: expected one of {', '.join(self.entities)}")
        results: list[DeliveryResult] = []
        sendable: list[tuple[OutboundRecord, dict[str, Any]]] = []
        for record in records:
            order = dict(record.payload)
            if order.get("orderKey") in (None, ""):
                order["orderKey"] = record.record_key
            order_key = order["orderKey"]
            if order_key != record.record_key:
                results.append(DeliveryResult(
                    record.idempotency_key, REJECTED,
                    message=f"the payload's orderKey {order_key!r} differs from the record key "
                    f"{record.record_key!r}. Build the payload with the record key.",
                ))
                continue
            sendable.append((record, order))

        for start in range(0, len(sendable), MAX_ORDERS_PER_REQUEST):
            results += self._deliver_batch(sendable[start:start + MAX_ORDERS_PER_REQUEST])
        return results

    def _deliver_batch(self, batch: list[tuple[OutboundRecord, dict[str, Any]]]) -> list[DeliveryResult]:
        session = self.session()
        keys = [record.idempotency_key for record, _ in batch]
        order_keys = [record.record_key for record, _ in batch][:KEYS_LOGGED]
        self._last_failure = None
        try:
            response = session.request("POST", CREATE_ORDERS_ENDPOINT, json=[order for _, order in batch],
                                       min_wait_on_429=RATE_LIMIT_WINDOW_SECONDS)
        except ApiUnavailable as exc:
            # Upserts by order key make a later attempt safe even if ShipStation stored some orders.
            log.warning("shipstation account %r: %d orders left for a later attempt (order keys %s): %s",
                        self.account_id, len(batch), ", ".join(order_keys), exc)
            return [DeliveryResult(key, RETRY, http_status=exc.status, message=str(exc)) for key in keys]
        except ApiRequestError as exc:
            if exc.status != 400:
                raise
            # NOTE: a 400 rejects the whole request, so one invalid order rejects every order sent
            # with it, up to 99 valid ones. Sending them one a request would isolate it.
            message = rejection_message(self._last_failure) if self._last_failure is not None else exc.reason
            log.warning("shipstation account %r: POST %s rejected all %d orders of the request (order keys %s): %s",
                        self.account_id, CREATE_ORDERS_ENDPOINT, len(batch), ", ".join(order_keys), message)
            return [DeliveryResult(key, REJECTED, http_status=400, message=message) for key in keys]

        return self._batch_results(session, response, batch)

    def _batch_results(self, session: ApiSession, response: httpx.Response,
                       batch: list[tuple[OutboundRecord, dict[str, Any]]]) -> list[DeliveryResult]:
        """Match each result of a createorders response to its record by order key, in the order sent."""
        body = session.read_json(response, "POST")
        if not isinstance(body, dict) or not isinstance(body.get("results"), list):
            raise session.malformed("POST", response, 'expected {"hasErrors": ..., "results": [...]}')
        by_key: dict[str, deque] = defaultdict(deque)
        for result in body["results"]:
            if isinstance(result, dict) and result.get("orderKey") is not None:
                by_key[str(result["orderKey"])].append(result)

        results = []
        for record, _ in batch:
            matches = by_key.get(record.record_key)
            if not matches:
                results.append(DeliveryResult(
                    record.idempotency_key, RETRY, http_status=response.status_code,
                    message=f"ShipStation returned no result for order key {record.record_key!r}. "
                    "Sending it again updates the same order.",
                ))
                continue
            result = matches.popleft()
            details = {"orderNumber": result.get("orderNumber")}
            if result.get("success") is True:
                order_id = result.get("orderId")
                results.append(DeliveryResult(record.idempotency_key, DELIVERED,
                                              target_id=None if order_id is None else str(order_id),
                                              http_status=response.status_code, details=details))
            else:
                message = result.get("errorMessage") or "ShipStation reported success false without an errorMessage"
                results.append(DeliveryResult(record.idempotency_key, REJECTED, http_status=response.status_code,
                                              message=str(message)[:MAX_MESSAGE_LENGTH], details=details))

        failed = [record.record_key for (record, _), result in zip(batch, results) if result.status != DELIVERED]
        if failed:
            log.warning("shipstation account %r: %d of %d orders not delivered by POST %s (order keys %s)",
                        self.account_id, len(failed), len(results), CREATE_ORDERS_ENDPOINT,
                        ", ".join(failed[:KEYS_LOGGED]))
        return results
