"""The Amazon Selling Partner API (SP-API) client: orders, order items, settlement and FBA inventory reports.

Every SP-API request carries a Login with Amazon (LWA) access token in `x-amz-access-token`. The
client gets it by exchanging the refresh token and reuses it until a minute before it expires.
Requests are paced per operation with the usage plans Amazon documents, and the
`x-amzn-RateLimit-Limit` response header, when Amazon sends it, replaces the documented rate.

Cursors: an order's cursor is its LastUpdateDate. A getOrderItems payload has no time of its own,
so an order_items record takes the LastUpdateDate of its order, as getOrders listed it in the same
fetch. Report rows have no cursor: a settlement report belongs to the window Amazon created it in,
and an FBA inventory report to the window that requested it.
"""

import gzip
import logging
import platform
import time
import zlib
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from pydantic import Field, PrivateAttr

from meshline_pipelines.amazon import finances
from meshline_pipelines.amazon.client import FBA_INVENTORY_COLUMNS, SETTLEMENT_COLUMNS
from meshline_pipelines.sources.base import SourceBatch
from meshline_pipelines.sources.files import UnreadableFile, tab_separated
from meshline_pipelines.sources.http import (
    ApiAuthError, ApiError, ApiRequestError, ApiResponseError, ApiSession, ApiUnavailable, RetryPolicy,
)
from meshline_pipelines.sources.live import LiveClient, Window, iso_utc, parse_cursor
from meshline_pipelines.sources.rate_limits import TokenBucket

log = logging.getLogger(__name__)

ACCESS_TOKEN_HEADER = "x-amz-access-token"
RATE_LIMIT_HEADER = "x-amzn-RateLimit-Limit"

ORDERS_PATH = "/orders/v0/orders"
REPORTS_PATH = "/reports/2021-06-30/reports"
DOCUMENTS_PATH = "/reports/2021-06-30/documents"
FINANCIAL_EVENTS_PATH = "/finances/v0/financialEvents"

SETTLEMENT_REPORT = "GET_V2_SETTLEMENT_REPORT_DATA_FLAT_FILE"
INVENTORY_REPORT = "GET_AFN_INVENTORY_DATA"

# Default rate (requests per second) and burst of each operation, from the usage plan tables in
# Amazon's ordersV0, reports 2021-06-30 and financesV0 API models. Amazon may grant a seller a higher rate,
# which the x-amzn-RateLimit-Limit header then reports.
USAGE_PLANS: dict[str, tuple[float, int]] = {
    "getOrders": (0.0167, 20),
    "getOrderItems": (0.5, 30),
    "getReports": (0.0222, 10),
    "createReport": (0.0167, 15),
    "getReport": (2.0, 15),
    "getReportDocument": (0.0167, 15),
    "listFinancialEvents": (0.5, 30),
}

# getOrders rejects a LastUpdatedBefore, and listFinancialEvents a PostedBefore, later than two minutes
# before the current time.
NEWEST_UPDATE_LAG = timedelta(minutes=2)
# An access token is exchanged again this many seconds before the expires_in of its token response runs out.
TOKEN_EXPIRY_MARGIN = 60.0
ORDERS_PER_PAGE = 100
FINANCIAL_EVENTS_PER_PAGE = 100
REPORTS_PER_PAGE = 100
REPORT_WAITING_STATUSES = frozenset({"IN_QUEUE", "IN_PROGRESS"})


class LwaTokens:
    """Access tokens from the Login with Amazon token endpoint, exchanged for the refresh token and cached."""

    def __init__(self, session: ApiSession, token_url: str, client_id: str, client_secret: str, refresh_token: str,
                 clock=time.monotonic):
        self._session = session
        self._token_url = token_url
        self._form = {"grant_type": "refresh_token", "refresh_token": refresh_token,
                      "client_id": client_id, "client_secret": client_secret}
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0

    def access_token(self) -> str:
        """Return the cached access token, exchanging the refresh token first when it is missing or about to expire."""
        if self._token is not None and self._clock() < self._expires_at - TOKEN_EXPIRY_MARGIN:
            return self._token
        self._token, lifetime = self._exchange()
        self._expires_at = self._clock() + lifetime
        log.info("%s account %r: exchanged the LWA refresh token for an access token valid %d s",
                 self._session.system, self._session.account, lifetime)
        return self._token

    def _exchange(self) -> tuple[str, float]:
        session = self._session
        try:
            response = session.request("POST", self._token_url, data=self._form)
        except ApiRequestError as exc:
            # LWA returns 400 invalid_grant for a wrong or revoked refresh token: a credential problem.
            if exc.status != 400:
                raise
            raise ApiAuthError(
                system=exc.system, account=exc.account, method=exc.method, endpoint=exc.endpoint, status=exc.status,
                reason=exc.reason, fix=f"check {', '.join(session.credential_settings)}: the refresh token must "
                "belong to this LWA client, and the seller may have revoked the app's authorization",
            ) from None
        body = session.read_json(response, "POST")
        token = body.get("access_token") if isinstance(body, dict) else None
        lifetime = body.get("expires_in") if isinstance(body, dict) else None
        # The reasons name the fields only, because the body contains the token and no error message may show it.
        if not isinstance(token, str) or not token:
            raise session.malformed("POST", response, "the body has no access_token string")
        if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)) or lifetime <= 0:
            raise session.malformed("POST", response, "expires_in is missing or not a positive number of seconds")
        return token, float(lifetime)


class LwaAuth(httpx.Auth):
    """Authentication that puts the current LWA access token on each request, including every retry."""

    def __init__(self, tokens: LwaTokens):
        self._tokens = tokens

    def auth_flow(self, request: httpx.Request):
        request.headers[ACCESS_TOKEN_HEADER] = self._tokens.access_token()
        yield request


class AmazonSpApiClient(LiveClient):
    """getOrders, getOrderItems and the Reports API for one seller in one marketplace."""

    seller_id: str = Field(description="The Amazon selling partner (merchant) ID; part of every record's identity.")
    marketplace_id: str = Field(description="The marketplace the client reads, e.g. ATVPDKIKX0DER for amazon.com.")
    lwa_client_id: str = Field(description="The LWA client ID of the SP-API application; set AMAZON_LWA_CLIENT_ID.")
    lwa_client_secret: str = Field(description="The LWA client secret; set AMAZON_LWA_CLIENT_SECRET.")
    refresh_token: str = Field(
        description="The LWA refresh token the seller granted the application; set AMAZON_REFRESH_TOKEN."
    )
    lwa_token_url: str = Field(
        default="https://api.amazon.com/auth/o2/token",
        description="Login with Amazon token endpoint (AMAZON_LWA_TOKEN_URL); change it only for a proxy or a test.",
    )
    report_poll_seconds: float = Field(
        default=30.0, gt=0, description="Seconds between getReport requests while a requested report is processed."
    )
    report_timeout_seconds: float = Field(
        default=1800.0, gt=0, description="Seconds to wait for a requested report to finish before the run fails."
    )

    system: ClassVar[str] = "amazon"
    base_url_setting: ClassVar[str] = "AMAZON_SP_API_BASE_URL"
    lwa_token_url_setting: ClassVar[str] = "AMAZON_LWA_TOKEN_URL"
    credential_settings: ClassVar[tuple[str, ...]] = (
        "AMAZON_LWA_CLIENT_ID", "AMAZON_LWA_CLIENT_SECRET", "AMAZON_REFRESH_TOKEN",
    )
    streams: ClassVar[tuple[str, ...]] = ("orders", "order_items", "settlements", "inventory", "financial_events")

    _tokens: LwaTokens | None = PrivateAttr(default=None)
    _downloads: ApiSession | None = PrivateAttr(default=None)
    _buckets: dict[str, TokenBucket] = PrivateAttr(default_factory=dict)
    _order_updates: dict[str, datetime | None] = PrivateAttr(default_factory=dict)

    @property
    def account(self) -> str:
        return f"{self.seller_id}/{self.marketplace_id}"

    def with_transport(self, transport: httpx.BaseTransport, sleep=None) -> "AmazonSpApiClient":
        super().with_transport(transport, sleep)
        self._tokens = None
        self._downloads = None
        return self

    def session_options(self) -> dict[str, Any]:
        user_agent = f"MeshLine (Language=Python/{platform.python_version()})"
        return {"headers": {"User-Agent": user_agent}, "auth": LwaAuth(self._lwa_tokens())}

    def cursor(self, stream: str, payload: Any) -> datetime | None:
        if not isinstance(payload, dict):
            return None
        if stream == "orders":
            return parse_cursor(payload.get("LastUpdateDate"))
        if stream == "order_items":
            return self._order_updates.get(payload.get("AmazonOrderId"))
        if stream == "financial_events":
            return parse_cursor(payload.get("PostedDate"))
        return None

    def pages(self, stream: str, window: Window) -> Iterator[SourceBatch]:
        if stream == "orders":
            return self._order_pages(window)
        if stream == "order_items":
            return self._order_item_batches(window)
        if stream == "settlements":
            return self._settlement_batches(window)
        if stream == "financial_events":
            return self._financial_event_pages(window)
        return self._inventory_batches(window)

    # Orders and order items

    def _order_pages(self, window: Window) -> Iterator[SourceBatch]:
        """Page through getOrders for the orders last updated in the window, passing each order version on once."""
        newest_allowed = (datetime.now(timezone.utc) - NEWEST_UPDATE_LAG).replace(microsecond=0)
        before = min(window.until, newest_allowed)
        if before <= window.since:
            # NOTE: orders updated in the last two minutes are read when the partition runs again.
            log.info("%s account %r: no getOrders request; Amazon lists updates up to %s only", self.system,
                     self.account, iso_utc(newest_allowed))
            return
        params: dict[str, Any] = {
            "MarketplaceIds": self.marketplace_id,
            "LastUpdatedAfter": iso_utc(window.since),
            "LastUpdatedBefore": iso_utc(before),
            "MaxResultsPerPage": ORDERS_PER_PAGE,
        }

        seen: set[tuple[str, str]] = set()
        page = 0
        while True:
            page += 1
            payload, response = self._payload("getOrders", "GET", ORDERS_PATH, params=params)
            orders = payload.get("Orders")
            if not isinstance(orders, list):
                raise self.session().malformed("GET", response, 'expected {"payload": {"Orders": [...]}}')

            # An order version that a later page repeats is passed on once.
            fresh = []
            for order in orders:
                key = _order_version(order)
                if key is not None and key in seen:
                    continue
                if key is not None:
                    seen.add(key)
                fresh.append(order)
            yield SourceBatch(origin=f"GET {ORDERS_PATH} page {page}", records=fresh,
                              fetched_at=datetime.now(timezone.utc))

            token = payload.get("NextToken")
            if not token:
                return
            if not isinstance(token, str):
                raise self.session().malformed("GET", response, f"NextToken is {token!r}, expected a string")
            # Amazon's Orders guide states that NextToken overrides the other criteria, but the API model marks
            # MarketplaceIds as required on every getOrders request, so it goes along with the token.
            params = {"MarketplaceIds": self.marketplace_id, "NextToken": token}

    def _order_item_batches(self, window: Window) -> Iterator[SourceBatch]:
        """Yield one record per order updated in the window: its getOrderItems payload with every page's items."""
        self._order_updates = {}
        for page in self._order_pages(window):
            for order in page.records:
                order_id = order.get("AmazonOrderId") if isinstance(order, dict) else None
                if not isinstance(order_id, str) or not order_id:
                    raise ApiResponseError(
                        system=self.system, account=self.account, method="GET", endpoint=ORDERS_PATH, status=200,
                        reason=f"an order on {page.origin} has no AmazonOrderId, so its items cannot be requested",
                        fix="run the partition again; if it persists, report the order to Amazon developer support",
                    )
                if order_id in self._order_updates:
                    continue
                updated = parse_cursor(order.get("LastUpdateDate"))
                if updated is not None and not window.contains(updated):
                    # getOrders includes orders updated exactly at LastUpdatedBefore, but they belong to the
                    # next window.
                    continue
                self._order_updates[order_id] = updated
                # NOTE: a Pending order's items come without prices, so they fail validation like its total.
                yield SourceBatch(origin=f"GET {ORDERS_PATH}/{order_id}/orderItems",
                                  records=[self._order_items(order_id)], fetched_at=datetime.now(timezone.utc))

    def _order_items(self, order_id: str) -> dict:
        path = f"{ORDERS_PATH}/{quote(order_id, safe='')}/orderItems"
        params: dict[str, Any] | None = None
        merged: dict | None = None
        while True:
            payload, response = self._payload("getOrderItems", "GET", path, params=params)
            items = payload.get("OrderItems")
            if not isinstance(items, list):
                raise self.session().malformed("GET", response, 'expected {"payload": {"OrderItems": [...]}}')
            if payload.get("AmazonOrderId") != order_id:
                raise self.session().malformed(
                    "GET", response, f"AmazonOrderId is {payload.get('AmazonOrderId')!r}, expected {order_id!r}")

            if merged is None:
                merged = {key: value for key, value in payload.items() if key != "NextToken"}
                merged["OrderItems"] = list(items)
            else:
                merged["OrderItems"].extend(items)

            token = payload.get("NextToken")
            if not token:
                return merged
            if not isinstance(token, str):
                raise self.session().malformed("GET", response, f"NextToken is {token!r}, expected a string")
            params = {"NextToken": token}

    # Reports

    def _settlement_batches(self, window: Window) -> Iterator[SourceBatch]:
        """Yield one batch per settlement report Amazon created in the window, with one record per report row."""
        until = min(window.until, datetime.now(timezone.utc))
        if until <= window.since:
            return
        params: dict[str, Any] = {
            "reportTypes": SETTLEMENT_REPORT,
            "processingStatuses": "DONE",
            "marketplaceIds": self.marketplace_id,
            "createdSince": iso_utc(window.since),
            "createdUntil": iso_utc(until),
            "pageSize": REPORTS_PER_PAGE,
        }
        while True:
            body, response = self._json("getReports", "GET", REPORTS_PATH, params=params)
            reports = body.get("reports")
            if not isinstance(reports, list) or not all(isinstance(report, dict) for report in reports):
                raise self.session().malformed("GET", response, 'expected {"reports": [{...}, ...]}')

            for report in reports:
                if not self._settlement_in_window(report, window):
                    continue
                yield self._report_batch(report, SETTLEMENT_COLUMNS, response)

            token = body.get("nextToken")
            if not token:
                return
            if not isinstance(token, str):
                raise self.session().malformed("GET", response, f"nextToken is {token!r}, expected a string")
            # The Reports API fails a request that sends nextToken with any other parameter.
            params = {"nextToken": token}

    def _settlement_in_window(self, report: dict, window: Window) -> bool:
        created = parse_cursor(report.get("createdTime"))
        if created is not None and not window.contains(created):
            # createdUntil is inclusive, so a report created at the window's end belongs to the next window.
            return False
        marketplaces = report.get("marketplaceIds")
        # NOTE: Amazon has been reported to ignore the marketplaceIds filter for settlement reports, so the
        # report's own list is checked too. A report that lists no marketplaces is kept.
        if isinstance(marketplaces, list) and marketplaces and self.marketplace_id not in marketplaces:
            log.info("%s account %r: skipping settlement report %s of marketplaces %s", self.system, self.account,
                     report.get("reportId"), ", ".join(map(str, marketplaces)))
            return False
        return True

    def _inventory_batches(self, window: Window) -> Iterator[SourceBatch]:
        """Request a GET_AFN_INVENTORY_DATA report, wait until Amazon has built it, and read its rows."""
        now = datetime.now(timezone.utc)
        if window.until < now - timedelta(days=1):
            # NOTE: the report is a snapshot of the current FBA inventory, so a replayed old partition gets
            # today's levels.
            log.warning("%s account %r: the FBA inventory report shows current levels, not those of %s to %s",
                        self.system, self.account, iso_utc(window.since), iso_utc(window.until))
        body, response = self._json("createReport", "POST", REPORTS_PATH,
                                    json={"reportType": INVENTORY_REPORT, "marketplaceIds": [self.marketplace_id]})
        report_id = body.get("reportId")
        if not isinstance(report_id, str) or not report_id:
            raise self.session().malformed("POST", response, 'expected {"reportId": "..."}')
        log.info("%s account %r: requested %s report %s", self.system, self.account, INVENTORY_REPORT, report_id)

        report, response = self._finished_report(report_id)
        if report.get("processingStatus") == "CANCELLED":
            # Amazon cancels a requested report that has no data to return: no FBA inventory is an empty snapshot.
            log.info("%s account %r: Amazon cancelled report %s, which it does when there is no FBA inventory "
                     "to report; storing no inventory rows", self.system, self.account, report_id)
            return
        yield self._report_batch(report, FBA_INVENTORY_COLUMNS, response)

    def _finished_report(self, report_id: str) -> tuple[dict, httpx.Response]:
        """Poll getReport every report_poll_seconds until the report is DONE or CANCELLED. FATAL or a timeout raise."""
        path = f"{REPORTS_PATH}/{quote(report_id, safe='')}"
        waited = 0.0
        while True:
            self.session().sleep(self.report_poll_seconds)
            waited += self.report_poll_seconds
            report, response = self._json("getReport", "GET", path)
            status = report.get("processingStatus")
            if status in ("DONE", "CANCELLED"):
                return report, response
            if status == "FATAL":
                raise self._report_failure(report, status, path)
            if status not in REPORT_WAITING_STATUSES:
                raise self.session().malformed("GET", response, f"processingStatus is {status!r}, expected one of "
                                               "IN_QUEUE, IN_PROGRESS, DONE, CANCELLED, FATAL")
            if waited >= self.report_timeout_seconds:
                raise ApiUnavailable(
                    system=self.system, account=self.account, method="GET", endpoint=path, status=response.status_code,
                    reason=f"report {report_id} is still {status} after {waited:g} s",
                    fix="run the partition again later, or raise report_timeout_seconds",
                )
            log.info("%s account %r: report %s is %s; checking again in %g s", self.system, self.account,
                     report_id, status, self.report_poll_seconds)

    def _report_failure(self, report: dict, status: str, path: str) -> ApiError:
        report_id = report.get("reportId")
        reason = f"Amazon could not build report {report_id} ({status})"
        details = self._failure_details(report)
        if details:
            reason += f": {details}"
        fix = "run the partition again; if it keeps failing, open a case with Amazon developer support"
        return ApiRequestError(system=self.system, account=self.account, method="GET", endpoint=path, status=200,
                               reason=reason, fix=fix)

    def _failure_details(self, report: dict) -> str | None:
        """Return the start of the error document Amazon may attach to a FATAL report, or None without one."""
        document_id = report.get("reportDocumentId")
        if not isinstance(document_id, str) or not document_id:
            return None
        try:
            content = self._document_content(document_id)
        except ApiError as exc:
            log.warning("%s account %r: could not read the error document of report %s: %s", self.system,
                        self.account, report.get("reportId"), exc)
            return None
        return content.decode("utf-8", errors="replace").strip()[:200] or None

    def _report_batch(self, report: dict, columns: tuple[str, ...], response: httpx.Response) -> SourceBatch:
        """Build one batch of a DONE report's rows, or an error batch when the document is no tab-separated report."""
        document_id = report.get("reportDocumentId")
        if not isinstance(document_id, str) or not document_id:
            raise self.session().malformed("GET", response, f"report {report.get('reportId')!r} is DONE but has "
                                           "no reportDocumentId")
        content = self._document_content(document_id)
        name = f"{report.get('reportType')} report {report.get('reportId')}"
        origin = f"GET {DOCUMENTS_PATH}/{document_id}"
        fetched_at = datetime.now(timezone.utc)
        try:
            records = tab_separated(columns)(content, name)
        except UnreadableFile as exc:
            return SourceBatch(origin=origin, error=str(exc), raw_text=content.decode("utf-8", errors="replace"),
                               fetched_at=fetched_at)
        return SourceBatch(origin=origin, records=records, fetched_at=fetched_at)

    def _document_content(self, document_id: str) -> bytes:
        """Download a report document through its pre-signed URL, and decompress it when its compressionAlgorithm
        is GZIP."""
        path = f"{DOCUMENTS_PATH}/{quote(document_id, safe='')}"
        document, response = self._json("getReportDocument", "GET", path)
        url = document.get("url")
        if not isinstance(url, str) or not url:
            raise self.session().malformed("GET", response, 'expected {"reportDocumentId": "...", "url": "..."}')
        algorithm = document.get("compressionAlgorithm")
        if algorithm not in (None, "GZIP"):
            raise self.session().malformed("GET", response, f"compressionAlgorithm is {algorithm!r}; "
                                           "this client reads GZIP or uncompressed documents only")

        download = self._download(url, path)
        content = download.content
        # httpx already decompressed the body when the server sent Content-Encoding: gzip.
        if algorithm == "GZIP" and content[:2] == b"\x1f\x8b":
            try:
                content = gzip.decompress(content)
            except (OSError, EOFError, zlib.error) as exc:
                raise ApiResponseError(
                    system=self.system, account=self.account, method="GET", endpoint=download.request.url.path,
                    status=download.status_code, reason=f"report document {document_id} is not valid gzip: {exc}",
                    fix="run the partition again to download the document again",
                ) from None
        return content

    def _download(self, url: str, document_path: str) -> httpx.Response:
        # The URL is pre-signed: it must go without the SP-API token, and it expires five minutes after
        # getReportDocument returned it.
        try:
            return self._download_session().request("GET", url)
        except (ApiAuthError, ApiRequestError) as exc:
            raise ApiRequestError(
                system=self.system, account=self.account, method="GET", endpoint=exc.endpoint, status=exc.status,
                reason=f"downloading the document of {document_path} failed: {exc.reason}",
                fix="run the partition again: the pre-signed URL is valid for five minutes only",
            ) from None

    # Financial events

    def _financial_event_pages(self, window: Window) -> Iterator[SourceBatch]:
        """Page through listFinancialEvents for the shipment and refund events posted in the window."""
        newest_allowed = (datetime.now(timezone.utc) - NEWEST_UPDATE_LAG).replace(microsecond=0)
        before = min(window.until, newest_allowed)
        if before <= window.since:
            log.info("%s account %r: no listFinancialEvents request; Amazon lists events up to %s only",
                     self.system, self.account, iso_utc(newest_allowed))
            return
        # NOTE: Amazon states that orders of the last 48 hours might not be in financial events yet, and
        # deferred events appear only when released. A partition read too early misses them; the nightly
        # catch-up reads it again.
        params: dict[str, Any] = {"PostedAfter": iso_utc(window.since), "PostedBefore": iso_utc(before),
                                  "MaxResultsPerPage": FINANCIAL_EVENTS_PER_PAGE}
        page = 0
        while True:
            page += 1
            payload, response = self._payload("listFinancialEvents", "GET", FINANCIAL_EVENTS_PATH, params=params)
            events = payload.get("FinancialEvents")
            if not isinstance(events, dict):
                raise self.session().malformed("GET", response, 'expected {"payload": {"FinancialEvents": {...}}}')
            try:
                records = finances.tagged_events(events)
            except ValueError as exc:
                raise self.session().malformed("GET", response, str(exc)) from None
            yield SourceBatch(origin=f"GET {FINANCIAL_EVENTS_PATH} page {page}", records=records,
                              fetched_at=datetime.now(timezone.utc))

            token = payload.get("NextToken")
            if not token:
                return
            if not isinstance(token, str):
                raise self.session().malformed("GET", response, f"NextToken is {token!r}, expected a string")
            # The API model requires the same arguments as the call that produced the token, plus the token.
            params = {**params, "NextToken": token}

    # Requests, pacing and sessions

    def _payload(self, operation: str, method: str, path: str, *,
                 params: dict[str, Any] | None = None) -> tuple[dict, httpx.Response]:
        """Send one paced Orders API request and return the `payload` object of its response."""
        body, response = self._json(operation, method, path, params=params)
        payload = body.get("payload")
        if not isinstance(payload, dict):
            raise self.session().malformed(method, response, 'expected {"payload": {...}}')
        return payload, response

    def _json(self, operation: str, method: str, path: str, *, params: dict[str, Any] | None = None,
              json: Any = None) -> tuple[dict, httpx.Response]:
        """Send one paced request and return its JSON object. An `errors` list in a 2xx body raises ApiResponseError."""
        response = self._send(operation, method, path, params=params, json=json)
        session = self.session()
        body = session.read_json(response, method)
        if not isinstance(body, dict):
            raise session.malformed(method, response, f"expected a JSON object, got {type(body).__name__}")
        errors = body.get("errors")
        if isinstance(errors, list) and errors and "payload" not in body:
            first = errors[0] if isinstance(errors[0], dict) else {}
            raise session.malformed(method, response, f"Amazon returned {first.get('code') or 'an error'}: "
                                    f"{first.get('message') or first.get('details') or 'no message'}")
        return body, response

    def _send(self, operation: str, method: str, path: str, *, params: dict[str, Any] | None = None,
              json: Any = None) -> httpx.Response:
        session = self.session()
        bucket = self._bucket(operation)
        waited = bucket.acquire(session.sleep)
        if waited:
            log.info("%s account %r: waited %.1f s for the %s rate of %g requests/s", self.system, self.account,
                     waited, operation, bucket.rate)
        # Amazon's 429 usually has no Retry-After; waiting one request interval of the operation lets its bucket refill.
        response = session.request(method, path, params=params, json=json, min_wait_on_429=1 / bucket.rate)
        self._adopt_rate(operation, response)
        return response

    def _bucket(self, operation: str) -> TokenBucket:
        if operation not in self._buckets:
            rate, burst = USAGE_PLANS[operation]
            # NOTE: Amazon applies a usage plan to all callers of one seller and application, but this bucket
            # paces this client only. A second process reading the same seller can still get 429 responses.
            self._buckets[operation] = TokenBucket(rate, burst)
        return self._buckets[operation]

    def _adopt_rate(self, operation: str, response: httpx.Response) -> None:
        value = response.headers.get(RATE_LIMIT_HEADER)
        if value is None:
            return
        try:
            rate = float(value)
        except ValueError:
            log.debug("%s: ignoring %s %r of %s", self.system, RATE_LIMIT_HEADER, value, operation)
            return
        bucket = self._bucket(operation)
        if rate > 0 and rate != bucket.rate:
            log.info("%s account %r: %s allows %g requests/s", self.system, self.account, operation, rate)
            bucket.set_rate(rate)

    def _lwa_tokens(self) -> LwaTokens:
        if self._tokens is None:
            session = self._side_session(self.lwa_token_url, self.lwa_token_url_setting, self.credential_settings)
            self._tokens = LwaTokens(session, self.lwa_token_url, self.lwa_client_id, self.lwa_client_secret,
                                     self.refresh_token)
        return self._tokens

    def _download_session(self) -> ApiSession:
        if self._downloads is None:
            self._downloads = self._side_session(self.base_url, self.base_url_setting, ())
        return self._downloads

    def _side_session(self, base_url: str, base_url_setting: str, credential_settings: tuple[str, ...]) -> ApiSession:
        """A session without the SP-API token, with the same transport, waits and retries as the main one."""
        extra = {"sleep": self._sleep} if self._sleep else {}
        return ApiSession(
            system=self.system, account=self.account, base_url=base_url, base_url_setting=base_url_setting,
            credential_settings=credential_settings, timeout=self.timeout_seconds,
            retry=RetryPolicy(max_attempts=self.max_attempts), transport=self._transport, **extra,
        )


def _order_version(order: Any) -> tuple[str, str] | None:
    if not isinstance(order, dict) or not isinstance(order.get("AmazonOrderId"), str):
        return None
    return order["AmazonOrderId"], str(order.get("LastUpdateDate"))
