"""The Amazon SP-API client against a double that responds in SP-API's wire format.

The double serves Login with Amazon tokens, getOrders and getOrderItems paged with NextToken, and
the Reports API with pre-signed document downloads. Orders and items are copies of the bundled
real responses with new IDs and dates; reports are the bundled real report files.
"""

import copy
import gzip
import itertools
import json
import logging
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs

import httpx
import pandas as pd
import pytest

from meshline_pipelines import settings
from meshline_pipelines.amazon.api import AmazonSpApiClient, LwaTokens
from meshline_pipelines.amazon.assets import STREAMS
from meshline_pipelines.extract import extract_stream
from meshline_pipelines.ingest import run_stream
from meshline_pipelines.ledger import Ledger
from meshline_pipelines.routing import load_routing
from meshline_pipelines.sources.http import (
    ApiAuthError, ApiRequestError, ApiResponseError, ApiSession, ApiUnavailable,
)
from meshline_pipelines.sources.live import Window, parse_cursor
from meshline_pipelines.sources.rate_limits import TokenBucket
from meshline_pipelines_tests.amazon_finances import (
    charges, fees, refund_event, refund_item, shipment_event, shipment_item,
)

SAMPLES = settings.bundled_samples_dir() / "amazon"
BASE_URL = "https://sellingpartnerapi-na.amazon.test"
LWA_URL = "https://api.amazon.test/auth/o2/token"
DOCUMENT_HOST = "tortuga-prod-na.s3-external-1.amazonaws.test"
SELLER = "A2TESTSELLER"
MARKETPLACE = "ATVPDKIKX0DER"
CLIENT_ID = "amzn1.application-oa2-client.test"
CLIENT_SECRET = "amzn1.oa2-cs.v1.client-secret-not-to-be-shown"
REFRESH_TOKEN = "Atzr|refresh-token-not-to-be-shown"
CREDENTIAL_SETTINGS = ("AMAZON_LWA_CLIENT_ID", "AMAZON_LWA_CLIENT_SECRET", "AMAZON_REFRESH_TOKEN")

DAY = "2026-11-24"
WINDOW = Window.for_day(DAY)
ORDERS_PATH = "/orders/v0/orders"
FINANCIAL_EVENTS_PATH = "/finances/v0/financialEvents"
REPORTS_PATH = "/reports/2021-06-30/reports"
GET_ORDERS_INTERVAL = 1 / 0.0167
STREAM = {stream.name: stream for stream in STREAMS}


def sample_order() -> dict:
    return json.loads((SAMPLES / "orders-getOrder.json").read_text(encoding="utf-8"))["payload"]


def sample_item() -> dict:
    return json.loads((SAMPLES / "orders-getOrderItems.json").read_text(encoding="utf-8"))["payload"]["OrderItems"][0]


def order(order_id: str, updated: str, *, amount: str = "149.99", status: str = "Unshipped") -> dict:
    body = copy.deepcopy(sample_order())
    purchased = parse_cursor(updated) - timedelta(hours=5)
    body.update(AmazonOrderId=order_id, SellerOrderId=f"SO-{order_id}", LastUpdateDate=updated,
                PurchaseDate=purchased.strftime("%Y-%m-%dT%H:%M:%SZ"), OrderStatus=status)
    body["OrderTotal"] = {"CurrencyCode": "USD", "Amount": amount}
    return body


def order_item(item_id: str, sku: str, price: str, quantity: int = 1) -> dict:
    body = copy.deepcopy(sample_item())
    body.update(OrderItemId=item_id, SellerSKU=sku, QuantityOrdered=quantity)
    body["ItemPrice"] = {"CurrencyCode": "BRL", "Amount": price}
    return body


def sp_api_error(status: int, code: str, message: str, details: str = "") -> httpx.Response:
    return httpx.Response(status, json={"errors": [{"code": code, "message": message, "details": details}]})


class AmazonDouble:
    """Serves the orders, items, reports and documents put into it; `answers` go first, one per SP-API request.

    `order_pages`, when set, are getOrders payloads served in turn in place of pages cut from `orders`.
    """

    def __init__(self):
        self.orders: list[dict] = []
        self.orders_per_page = 100
        self.order_pages: list[dict] = []
        self.items: dict[str, list[dict]] = {}
        self.items_per_page = 100
        self.reports: list[dict] = []
        self.reports_per_page = 100
        self.documents: dict[str, tuple[bytes, str | None]] = {}
        self.report_statuses: list[str] = []
        self.inventory_document = "amzn1.spdoc.1.4.na.inventory-1"
        self.created_reports: list[dict] = []
        self.financial_events: list[tuple[str, dict]] = []  # (event list name, event)
        self.financial_events_per_page = 100
        self.rate_limit: str | None = None
        self.revoked = False
        self.answers: list = []
        self.requests: list[httpx.Request] = []
        self.issued_tokens: list[str] = []
        self._pages: dict[str, list] = {}
        self._token_numbers = itertools.count(1)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def sp_api_requests(self) -> list[httpx.Request]:
        return [request for request in self.requests if request.url.host == httpx.URL(BASE_URL).host]

    def requests_to(self, path: str) -> list[httpx.Request]:
        return [request for request in self.sp_api_requests() if request.url.path == path]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/auth/o2/token":
            return self._token(request)
        if request.url.host == DOCUMENT_HOST:
            content, _ = self.documents[request.url.path.lstrip("/")]
            return httpx.Response(200, content=content)

        if self.answers:
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer(request) if callable(answer) else answer
        if self.revoked or request.headers.get("x-amz-access-token") not in self.issued_tokens:
            return sp_api_error(403, "Unauthorized", "Access to requested resource is denied.",
                                "The access token you provided is revoked, malformed or invalid.")
        response = self._route(request)
        if self.rate_limit is not None:
            response.headers["x-amzn-RateLimit-Limit"] = self.rate_limit
        return response

    def _token(self, request: httpx.Request) -> httpx.Response:
        form = {key: values[0] for key, values in parse_qs(request.content.decode()).items()}
        expected = {"grant_type": "refresh_token", "refresh_token": REFRESH_TOKEN, "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET}
        if form != expected:
            return httpx.Response(400, json={"error_description": "The request has an invalid grant parameter : "
                                             "refresh_token", "error": "invalid_grant"})
        token = f"Atza|access-token-{next(self._token_numbers)}"
        self.issued_tokens.append(token)
        return httpx.Response(200, json={"access_token": token, "refresh_token": REFRESH_TOKEN,
                                         "token_type": "bearer", "expires_in": 3600})

    def _route(self, request: httpx.Request) -> httpx.Response:
        path, params = request.url.path, request.url.params
        if request.method == "GET" and path == ORDERS_PATH:
            return self._get_orders(params)
        if request.method == "GET" and path.startswith(ORDERS_PATH + "/") and path.endswith("/orderItems"):
            return self._get_order_items(path.split("/")[4], params)
        if request.method == "GET" and path == REPORTS_PATH:
            return self._get_reports(params)
        if request.method == "POST" and path == REPORTS_PATH:
            return self._create_report(json.loads(request.content))
        if request.method == "GET" and path.startswith(REPORTS_PATH + "/"):
            return self._get_report(path.rsplit("/", 1)[1])
        if request.method == "GET" and path.startswith("/reports/2021-06-30/documents/"):
            return self._get_report_document(path.rsplit("/", 1)[1])
        if request.method == "GET" and path == FINANCIAL_EVENTS_PATH:
            return self._list_financial_events(params)
        return sp_api_error(404, "NotFound", f"Resource {path} is not found.")

    def _page(self, found: list, size: int) -> tuple[list, str | None]:
        if len(found) <= size:
            return found, None
        # Real tokens are base64 and carry characters that must be escaped in a query string.
        token = f"{len(self._pages)}+Vp5s4HXCaJqJYLDm0ZAmQaz/rhw3CgLPzz=="
        self._pages[token] = found[size:]
        return found[:size], token

    def _get_orders(self, params: httpx.QueryParams) -> httpx.Response:
        if params.get("MarketplaceIds") != MARKETPLACE:
            return sp_api_error(400, "InvalidInput", "Missing required 'MarketplaceIds'.")
        if self.order_pages:
            return httpx.Response(200, json={"payload": self.order_pages.pop(0)})
        if "NextToken" in params:
            if params["NextToken"] not in self._pages:
                return sp_api_error(400, "InvalidInput", "Invalid NextToken.")
            found = self._pages.pop(params["NextToken"])
        else:
            after = parse_cursor(params.get("LastUpdatedAfter"))
            before = parse_cursor(params.get("LastUpdatedBefore"))
            if after is None or before is None:
                return sp_api_error(400, "InvalidInput", "Invalid Date-Time field(s).")
            if before > datetime.now(timezone.utc) - timedelta(minutes=2):
                return sp_api_error(400, "InvalidInput", "Date should be no later than 2 minutes from now.")
            found = sorted((body for body in self.orders if after <= parse_cursor(body["LastUpdateDate"]) <= before),
                           key=lambda body: (body["LastUpdateDate"], body["AmazonOrderId"]))
        page, token = self._page(found, min(int(params.get("MaxResultsPerPage", 100)), self.orders_per_page))
        payload = {"Orders": page, **({"NextToken": token} if token else {})}
        return httpx.Response(200, json={"payload": payload})

    def _list_financial_events(self, params: httpx.QueryParams) -> httpx.Response:
        after, before = parse_cursor(params.get("PostedAfter")), parse_cursor(params.get("PostedBefore"))
        if after is None or before is None:
            return sp_api_error(400, "InvalidInput", "Invalid Date-Time field(s).")
        if before > datetime.now(timezone.utc) - timedelta(minutes=2):
            return sp_api_error(400, "InvalidInput", "Date should be no later than 2 minutes from now.")
        if "NextToken" in params:
            found = self._pages.pop(params["NextToken"])
        else:
            found = [(name, event) for name, event in self.financial_events
                     if after <= parse_cursor(event["PostedDate"]) < before]
        size = min(int(params.get("MaxResultsPerPage", 100)), self.financial_events_per_page)
        page, token = self._page(found, size)
        lists = {"ShipmentEventList": [], "RefundEventList": [], "GuaranteeClaimEventList": []}
        for name, event in page:
            lists[name].append(event)
        return httpx.Response(200, json={"payload": {"FinancialEvents": lists, **({"NextToken": token} if token else {})}})

    def _get_order_items(self, order_id: str, params: httpx.QueryParams) -> httpx.Response:
        if order_id not in self.items:
            return sp_api_error(404, "InvalidInput", "Invalid Input")
        found = self._pages.pop(params["NextToken"]) if "NextToken" in params else self.items[order_id]
        page, token = self._page(found, self.items_per_page)
        payload = {"OrderItems": page, "AmazonOrderId": order_id, **({"NextToken": token} if token else {})}
        return httpx.Response(200, json={"payload": payload})

    def _get_reports(self, params: httpx.QueryParams) -> httpx.Response:
        if "nextToken" in params:
            if len(params) > 1:
                return sp_api_error(400, "InvalidInput", "nextToken must be the only parameter.")
            found = self._pages.pop(params["nextToken"])
        else:
            since, until = parse_cursor(params["createdSince"]), parse_cursor(params["createdUntil"])
            found = [report for report in self.reports
                     if report["reportType"] in params["reportTypes"].split(",")
                     and report["processingStatus"] in params["processingStatuses"].split(",")
                     and since <= parse_cursor(report["createdTime"]) <= until]
        page, token = self._page(found, min(int(params.get("pageSize", 10)), self.reports_per_page))
        return httpx.Response(200, json={"reports": page, **({"nextToken": token} if token else {})})

    def _create_report(self, specification: dict) -> httpx.Response:
        self.created_reports.append(specification)
        return httpx.Response(202, json={"reportId": f"5073{len(self.created_reports):08d}"})

    def _get_report(self, report_id: str) -> httpx.Response:
        status = self.report_statuses.pop(0) if len(self.report_statuses) > 1 else self.report_statuses[0]
        report = {"reportType": self.created_reports[-1]["reportType"], "processingStatus": status,
                  "marketplaceIds": [MARKETPLACE], "reportId": report_id, "createdTime": "2026-11-24T09:00:00+00:00"}
        if status in ("DONE", "FATAL") and self.inventory_document in self.documents:
            report["reportDocumentId"] = self.inventory_document
        return httpx.Response(200, json=report)

    def _get_report_document(self, document_id: str) -> httpx.Response:
        if document_id not in self.documents:
            return sp_api_error(404, "NotFound", "The requested report document was not found.")
        _, algorithm = self.documents[document_id]
        body = {"reportDocumentId": document_id,
                "url": f"https://{DOCUMENT_HOST}/{document_id}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=abc"}
        if algorithm:
            body["compressionAlgorithm"] = algorithm
        return httpx.Response(200, json=body)


def client(double: AmazonDouble, waits: list | None = None, **options) -> AmazonSpApiClient:
    config = {"seller_id": SELLER, "marketplace_id": MARKETPLACE, "lwa_client_id": CLIENT_ID,
              "lwa_client_secret": CLIENT_SECRET, "refresh_token": REFRESH_TOKEN, "base_url": BASE_URL,
              "lwa_token_url": LWA_URL, **options}
    sleep = (waits if waits is not None else []).append
    return AmazonSpApiClient(**config).with_transport(double.transport(), sleep=sleep)


def records(amazon: AmazonSpApiClient, stream: str, window: Window = WINDOW) -> list:
    return [record for batch in amazon.fetch(stream, window) for record in batch.records]


def orders_of_the_day(count: int, *, hour: int = 8) -> list[dict]:
    return [order(f"113-{hour:02d}{n:05d}-0000001", f"{DAY}T{hour:02d}:{n % 60:02d}:{n // 60:02d}Z")
            for n in range(count)]


def report(report_id: str, document_id: str, created: str, report_type: str = "GET_V2_SETTLEMENT_REPORT_DATA_FLAT_FILE",
           marketplaces: list[str] | None = None) -> dict:
    return {"reportType": report_type, "processingStatus": "DONE", "reportId": report_id,
            "reportDocumentId": document_id, "marketplaceIds": marketplaces or [MARKETPLACE],
            "dataStartTime": "2026-11-10T00:00:00+00:00", "dataEndTime": "2026-11-24T00:00:00+00:00",
            "createdTime": created, "processingStartTime": created, "processingEndTime": created}


def settlement_report(settlement_id: str, sku: str) -> bytes:
    """The bundled settlement report with a new settlement ID and SKU, encoded in ISO-8859-1 as Amazon sends it."""
    text = (SAMPLES / "GET_V2_SETTLEMENT_REPORT_DATA_FLAT_FILE.csv").read_text(encoding="utf-8")
    return text.replace("12345678901", settlement_id).replace("SKU-1", sku).encode("iso-8859-1")


# Login with Amazon


def test_lwa_token_is_exchanged_once_and_reused():
    double = AmazonDouble()
    double.orders = orders_of_the_day(5)
    double.orders_per_page = 2
    double.items = {body["AmazonOrderId"]: [order_item("1", "SKU-1", "10.00")] for body in double.orders}

    fetched = records(client(double), "order_items")

    token_requests = [request for request in double.requests if request.url.path == "/auth/o2/token"]
    assert len(fetched) == 5
    assert len(token_requests) == 1
    assert token_requests[0].method == "POST"
    assert token_requests[0].headers["content-type"] == "application/x-www-form-urlencoded"
    assert len(double.sp_api_requests()) == 3 + 5
    assert {request.headers["x-amz-access-token"] for request in double.sp_api_requests()} == {
        "Atza|access-token-1"}


def test_lwa_token_refreshed_before_expiry():
    double = AmazonDouble()
    now = [1000.0]
    session = ApiSession(system="amazon", account=f"{SELLER}/{MARKETPLACE}", base_url=LWA_URL,
                         base_url_setting="AMAZON_LWA_TOKEN_URL", credential_settings=CREDENTIAL_SETTINGS,
                         transport=double.transport(), sleep=lambda seconds: None)
    tokens = LwaTokens(session, LWA_URL, CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, clock=lambda: now[0])

    first = tokens.access_token()
    now[0] += 3600 - 61
    still_first = tokens.access_token()
    now[0] += 2
    second = tokens.access_token()

    assert first == still_first == "Atza|access-token-1"
    assert second == "Atza|access-token-2"
    assert len(double.requests) == 2


def test_lwa_invalid_grant_names_the_credential_settings():
    double = AmazonDouble()

    with pytest.raises(ApiAuthError) as failure:
        records(client(double, refresh_token="Atzr|revoked-refresh-token"), "orders")

    message = str(failure.value)
    assert "invalid_grant" in message
    assert "/auth/o2/token" in message
    for setting in CREDENTIAL_SETTINGS:
        assert setting in message
    assert "Atzr|revoked-refresh-token" not in message
    assert CLIENT_SECRET not in message


def test_403_names_settings_hides_secrets(caplog):
    double = AmazonDouble()
    double.revoked = True
    caplog.set_level(logging.DEBUG)

    with pytest.raises(ApiAuthError) as failure:
        records(client(double), "orders")

    message = str(failure.value)
    assert failure.value.status == 403
    assert "/orders/v0/orders" in message
    assert "Access to requested resource is denied." in message
    for setting in CREDENTIAL_SETTINGS:
        assert setting in message
    for secret in (CLIENT_SECRET, REFRESH_TOKEN, *double.issued_tokens):
        assert secret not in message
        assert secret not in caplog.text


# getOrders


def test_get_orders_next_page_query():
    double = AmazonDouble()
    double.orders = orders_of_the_day(250)

    batches = list(client(double).fetch("orders", WINDOW))

    assert [len(batch.records) for batch in batches] == [100, 100, 50]
    first, second, _ = double.requests_to(ORDERS_PATH)
    assert dict(first.url.params) == {"MarketplaceIds": MARKETPLACE, "LastUpdatedAfter": "2026-11-24T00:00:00Z",
                                      "LastUpdatedBefore": "2026-11-25T00:00:00Z", "MaxResultsPerPage": "100"}
    assert dict(second.url.params) == {"MarketplaceIds": MARKETPLACE,
                                       "NextToken": "0+Vp5s4HXCaJqJYLDm0ZAmQaz/rhw3CgLPzz=="}
    assert "NextToken=0%2BVp5s4HXCaJqJYLDm0ZAmQaz%2Frhw3CgLPzz%3D%3D" in str(second.url)
    ids = [body["AmazonOrderId"] for batch in batches for body in batch.records]
    assert len(set(ids)) == 250


def test_last_updated_before_is_two_minutes_before_now():
    double = AmazonDouble()
    now = datetime.now(timezone.utc)

    records(client(double), "orders", Window(now - timedelta(hours=1), now + timedelta(hours=1)))

    sent = parse_cursor(double.requests_to(ORDERS_PATH)[0].url.params["LastUpdatedBefore"])
    assert now - timedelta(minutes=2, seconds=5) <= sent <= now - timedelta(minutes=2)


def test_window_in_last_two_minutes_skipped():
    double = AmazonDouble()
    now = datetime.now(timezone.utc)

    fetched = records(client(double), "orders", Window(now - timedelta(seconds=30), now + timedelta(hours=1)))

    assert fetched == []
    assert double.sp_api_requests() == []


def test_ten_order_tie_across_page_boundary_arrives_once():
    double = AmazonDouble()
    double.orders = [order(f"114-0000{n:03d}-0000001", f"{DAY}T10:15:00Z") for n in range(10)]
    double.orders_per_page = 4

    batches = list(client(double).fetch("orders", WINDOW))

    ids = [body["AmazonOrderId"] for batch in batches for body in batch.records]
    assert [len(batch.records) for batch in batches] == [4, 4, 2]
    assert sorted(ids) == sorted(body["AmazonOrderId"] for body in double.orders)
    follow_ups = double.requests_to(ORDERS_PATH)[1:]
    assert all("LastUpdatedAfter" not in request.url.params for request in follow_ups)


def test_order_at_window_end_dropped():
    double = AmazonDouble()
    double.orders = [order("113-0000001-0000001", f"{DAY}T00:00:00Z"),
                     order("113-0000002-0000001", "2026-11-25T00:00:00Z")]

    fetched = records(client(double), "orders")

    assert [body["AmazonOrderId"] for body in fetched] == ["113-0000001-0000001"]


def test_429_honours_retry_after():
    double = AmazonDouble()
    double.orders = orders_of_the_day(3)
    double.answers = [httpx.Response(429, headers={"Retry-After": "7"},
                                     json={"errors": [{"code": "QuotaExceeded", "message": "You exceeded your quota "
                                                       "for the requested resource.", "details": ""}]})]
    waits = []

    fetched = records(client(double, waits), "orders")

    assert len(fetched) == 3
    assert waits == [7.0]


def test_429_without_retry_after_waits_one_request_interval():
    double = AmazonDouble()
    double.orders = orders_of_the_day(3)
    double.answers = [sp_api_error(429, "QuotaExceeded", "You exceeded your quota for the requested resource.")]
    waits = []

    fetched = records(client(double, waits), "orders")

    assert len(fetched) == 3
    # getOrders allows 0.0167 requests per second: about one a minute once the burst is spent.
    assert waits[0] >= 59.8


def test_503_is_retried_then_succeeds():
    double = AmazonDouble()
    double.orders = orders_of_the_day(3)
    double.answers = [sp_api_error(503, "ServiceUnavailable", "Service temporarily unavailable.")]
    waits = []

    fetched = records(client(double, waits), "orders")

    assert len(fetched) == 3
    assert len(waits) == 1
    assert 0.5 <= waits[0] <= 1.0
    assert len(double.requests_to(ORDERS_PATH)) == 2


def test_timeout_is_retried_then_succeeds():
    double = AmazonDouble()
    double.orders = orders_of_the_day(3)
    double.answers = [httpx.ReadTimeout("the read timed out")]
    waits = []

    fetched = records(client(double, waits), "orders")

    assert len(fetched) == 3
    assert len(waits) == 1


def test_html_body_raises_naming_the_base_url_setting():
    double = AmazonDouble()
    double.answers = [httpx.Response(200, text="<html><title>Amazon Sign-In</title></html>")]

    with pytest.raises(ApiResponseError) as failure:
        records(client(double), "orders")

    message = str(failure.value)
    assert "AMAZON_SP_API_BASE_URL" in message
    assert "/orders/v0/orders" in message
    assert "not JSON" in message


def test_orders_that_are_not_a_list_raise():
    double = AmazonDouble()
    double.answers = [httpx.Response(200, json={"payload": {"Orders": {"AmazonOrderId": "113-0000001-0000001"}}})]

    with pytest.raises(ApiResponseError, match=r'expected \{"payload": \{"Orders": \[...\]\}\}'):
        records(client(double), "orders")


def test_errors_in_200_body_raise():
    double = AmazonDouble()
    double.answers = [httpx.Response(200, json={"errors": [{"code": "InvalidInput",
                                                            "message": "Invalid MarketplaceIds.", "details": ""}]})]

    with pytest.raises(ApiResponseError, match="InvalidInput: Invalid MarketplaceIds."):
        records(client(double), "orders")


def test_400_raises_with_amazons_error_message():
    double = AmazonDouble()
    double.answers = [sp_api_error(400, "InvalidInput", "Invalid Date-Time field(s) [lastUpdatedAfter].")]

    with pytest.raises(ApiRequestError, match=r"Invalid Date-Time field\(s\) \[lastUpdatedAfter\]"):
        records(client(double), "orders")


# Rate limits


def test_get_orders_paced_after_burst():
    double = AmazonDouble()
    double.orders = orders_of_the_day(22)
    double.orders_per_page = 1
    waits = []

    fetched = records(client(double, waits), "orders")

    assert len(fetched) == 22
    assert waits == [pytest.approx(GET_ORDERS_INTERVAL, abs=0.5), pytest.approx(GET_ORDERS_INTERVAL, abs=0.5)]


def test_rate_limit_header_replaces_the_documented_rate():
    double = AmazonDouble()
    double.orders = orders_of_the_day(22)
    double.orders_per_page = 1
    double.rate_limit = "0.5"
    waits = []

    records(client(double, waits), "orders")

    assert waits == [pytest.approx(2.0, abs=0.1), pytest.approx(2.0, abs=0.1)]


def test_token_bucket_refills_with_time():
    now = [0.0]
    waits = []
    bucket = TokenBucket(rate=0.5, burst=2, clock=lambda: now[0])

    bucket.acquire(waits.append)
    bucket.acquire(waits.append)
    now[0] += 1.0
    bucket.acquire(waits.append)
    now[0] += 10.0
    bucket.acquire(waits.append)

    assert waits == [pytest.approx(1.0)]


# getOrderItems


def test_order_items_pages_merge_into_one_payload():
    double = AmazonDouble()
    double.orders = [order("701-3922379-0000001", f"{DAY}T12:00:00Z")]
    double.items = {"701-3922379-0000001": [order_item(f"14764542037496{n}", f"SKU-{n}", "1.00") for n in range(3)]}
    double.items_per_page = 2
    amazon = client(double)

    fetched = records(amazon, "order_items")

    assert len(fetched) == 1
    assert fetched[0]["AmazonOrderId"] == "701-3922379-0000001"
    assert [item["OrderItemId"] for item in fetched[0]["OrderItems"]] == [
        "147645420374960", "147645420374961", "147645420374962"]
    assert "NextToken" not in fetched[0]
    item_requests = double.requests_to(f"{ORDERS_PATH}/701-3922379-0000001/orderItems")
    assert "NextToken" not in item_requests[0].url.params
    assert dict(item_requests[1].url.params) == {"NextToken": "0+Vp5s4HXCaJqJYLDm0ZAmQaz/rhw3CgLPzz=="}
    assert amazon.cursor("order_items", fetched[0]) == datetime(2026, 11, 24, 12, tzinfo=timezone.utc)


def test_repeated_order_version_arrives_once():
    double = AmazonDouble()
    repeated = order("701-0000001-0000001", f"{DAY}T09:00:00Z")
    updated_later = order("701-0000001-0000001", f"{DAY}T09:45:00Z")
    double.order_pages = [{"Orders": [repeated], "NextToken": "page-2"}, {"Orders": [repeated, updated_later]}]

    fetched = records(client(double), "orders")

    assert [(body["AmazonOrderId"], body["LastUpdateDate"]) for body in fetched] == [
        ("701-0000001-0000001", f"{DAY}T09:00:00Z"), ("701-0000001-0000001", f"{DAY}T09:45:00Z")]


def test_repeated_order_items_requested_once():
    double = AmazonDouble()
    repeated = order("701-0000001-0000001", f"{DAY}T09:00:00Z")
    other = order("701-0000002-0000001", f"{DAY}T09:30:00Z")
    double.items = {body["AmazonOrderId"]: [order_item("1", "SKU-1", "1.00")] for body in (repeated, other)}
    double.order_pages = [{"Orders": [repeated], "NextToken": "page-2"}, {"Orders": [repeated, other]}]

    fetched = records(client(double), "order_items")

    assert [payload["AmazonOrderId"] for payload in fetched] == ["701-0000001-0000001", "701-0000002-0000001"]
    assert len(double.requests_to(f"{ORDERS_PATH}/701-0000001-0000001/orderItems")) == 1


def test_order_items_payload_for_another_order_raises():
    double = AmazonDouble()
    double.orders = [order("701-0000001-0000001", f"{DAY}T09:00:00Z")]
    double.answers = [httpx.Response(200, json={"payload": {"Orders": double.orders}}),
                      httpx.Response(200, json={"payload": {"OrderItems": [], "AmazonOrderId": "999-9999999-9999999"}})]

    with pytest.raises(ApiResponseError, match="expected '701-0000001-0000001'"):
        records(client(double), "order_items")


# Reports


def test_settlement_report_gzip_iso_8859_1_becomes_rows():
    double = AmazonDouble()
    double.reports = [report("50000001", "amzn1.spdoc.1.4.na.settlement-1", "2026-11-24T06:10:00+00:00")]
    double.documents["amzn1.spdoc.1.4.na.settlement-1"] = (gzip.compress(settlement_report("98765", "SKU-Größe")),
                                                           "GZIP")

    batches = list(client(double).fetch("settlements", WINDOW))

    assert [batch.error for batch in batches] == [None]
    rows = batches[0].records
    assert [row["settlement-id"] for row in rows] == ["98765", "98765"]
    assert rows[0]["total-amount"] == "1234.56"
    assert rows[1]["sku"] == "SKU-Größe"
    assert rows[1]["transaction-type"] == "Order"
    listing = double.requests_to(REPORTS_PATH)[0].url.params
    assert dict(listing) == {"reportTypes": "GET_V2_SETTLEMENT_REPORT_DATA_FLAT_FILE", "processingStatuses": "DONE",
                             "marketplaceIds": MARKETPLACE, "createdSince": "2026-11-24T00:00:00Z",
                             "createdUntil": "2026-11-25T00:00:00Z", "pageSize": "100"}
    download = next(request for request in double.requests if request.url.host == DOCUMENT_HOST)
    assert "x-amz-access-token" not in download.headers


def test_settlement_reports_page_with_next_token_alone():
    double = AmazonDouble()
    double.reports = [report(f"5000000{n}", f"amzn1.spdoc.1.4.na.settlement-{n}", f"{DAY}T0{n}:00:00+00:00")
                      for n in range(1, 4)]
    for n in range(1, 4):
        double.documents[f"amzn1.spdoc.1.4.na.settlement-{n}"] = (settlement_report(f"9000{n}", "SKU-1"), None)
    double.reports_per_page = 2

    batches = list(client(double).fetch("settlements", WINDOW))

    assert [batch.records[0]["settlement-id"] for batch in batches] == ["90001", "90002", "90003"]
    second = double.requests_to(REPORTS_PATH)[1]
    assert dict(second.url.params) == {"nextToken": "0+Vp5s4HXCaJqJYLDm0ZAmQaz/rhw3CgLPzz=="}


def test_settlement_report_of_another_marketplace_is_skipped():
    double = AmazonDouble()
    double.reports = [report("50000001", "amzn1.spdoc.1.4.na.settlement-1", f"{DAY}T06:00:00+00:00",
                             marketplaces=["A2EUQ1WTGCTBG2"])]
    double.documents["amzn1.spdoc.1.4.na.settlement-1"] = (settlement_report("90001", "SKU-1"), None)

    batches = list(client(double).fetch("settlements", WINDOW))

    assert batches == []


def test_unreadable_settlement_document_error_batch():
    double = AmazonDouble()
    double.reports = [report("50000001", "amzn1.spdoc.1.4.na.settlement-1", f"{DAY}T06:00:00+00:00")]
    double.documents["amzn1.spdoc.1.4.na.settlement-1"] = (b"<Error><Code>AccessDenied</Code></Error>", None)

    batches = list(client(double).fetch("settlements", WINDOW))

    assert len(batches) == 1
    assert batches[0].records == []
    assert "lacks the columns" in batches[0].error
    assert batches[0].raw_text == "<Error><Code>AccessDenied</Code></Error>"


def test_inventory_report_is_polled_until_done():
    double = AmazonDouble()
    double.report_statuses = ["IN_QUEUE", "IN_PROGRESS", "DONE"]
    double.documents[double.inventory_document] = ((SAMPLES / "GET_AFN_INVENTORY_DATA.csv").read_bytes(), None)
    waits = []

    fetched = records(client(double, waits, report_poll_seconds=45), "inventory")

    assert double.created_reports == [{"reportType": "GET_AFN_INVENTORY_DATA", "marketplaceIds": [MARKETPLACE]}]
    assert waits == [45.0, 45.0, 45.0]
    assert len(double.requests_to(f"{REPORTS_PATH}/507300000001")) == 3
    assert [row["fulfillment-channel-sku"] for row in fetched] == ["fulfillment-channel-sku-1",
                                                                  "fulfillment-channel-sku-2"]
    assert [row["Quantity Available"] for row in fetched] == ["11", "22"]


def test_inventory_report_fatal_raises():
    double = AmazonDouble()
    double.report_statuses = ["IN_PROGRESS", "FATAL"]

    with pytest.raises(ApiRequestError) as failure:
        records(client(double), "inventory")

    assert "could not build report 507300000001 (FATAL)" in str(failure.value)


def test_inventory_report_cancelled_is_empty():
    double = AmazonDouble()
    double.report_statuses = ["IN_PROGRESS", "CANCELLED"]

    assert records(client(double), "inventory") == []
    assert not [request for request in double.sp_api_requests() if "/documents/" in request.url.path]


def test_fatal_inventory_report_shows_amazons_error_document():
    double = AmazonDouble()
    double.report_statuses = ["FATAL"]
    double.documents[double.inventory_document] = (b'{"errorDetails": "The seller is not enrolled in FBA."}', None)

    with pytest.raises(ApiRequestError, match="The seller is not enrolled in FBA."):
        records(client(double), "inventory")


def test_inventory_report_still_in_progress_times_out():
    double = AmazonDouble()
    double.report_statuses = ["IN_PROGRESS"]
    waits = []

    with pytest.raises(ApiUnavailable, match="still IN_PROGRESS after 90 s"):
        records(client(double, waits, report_poll_seconds=30, report_timeout_seconds=90), "inventory")

    assert waits == [30.0, 30.0, 30.0]


# Through the mapper into the ledger


@pytest.fixture
def ledger(tmp_path):
    ledger = Ledger.connect("sqlite:///" + str(tmp_path / "l.db"))
    yield ledger
    ledger.dispose()


def test_extracted_orders_are_stored_by_the_mapper(ledger):
    double = AmazonDouble()
    double.orders = [order("113-0000001-0000001", f"{DAY}T08:00:00Z", amount="149.99"),
                     order("113-0000002-0000001", f"{DAY}T23:59:59Z", amount="20.00"),
                     order("113-0000003-0000001", "2026-11-23T23:59:59Z", amount="5.00")]

    result = run_stream(STREAM["orders"], client(double), ledger, load_routing(), partition_key=DAY, run_id="test")

    assert result.records == 2
    assert result.failed_records == 0
    stored = ledger.read_table("orders", system="amazon").set_index("source_id")
    assert sorted(stored.index) == ["113-0000001-0000001", "113-0000002-0000001"]
    assert stored.loc["113-0000001-0000001", "account"] == f"{SELLER}/{MARKETPLACE}"
    assert stored.loc["113-0000001-0000001", "total_amount"] == 14999
    assert stored.loc["113-0000002-0000001", "total_amount"] == 2000
    assert stored.loc["113-0000001-0000001", "total_currency"] == "USD"
    assert stored.loc["113-0000002-0000001", "updated_at"] == pd.Timestamp("2026-11-24T23:59:59Z")


def test_extracted_order_items_are_stored_as_order_lines(ledger):
    double = AmazonDouble()
    double.orders = [order("701-3922379-0000001", f"{DAY}T12:00:00Z")]
    double.items = {"701-3922379-0000001": [order_item("147645420374961", "gb-mg5-x116440", "1.00"),
                                            order_item("147645420374962", "gb-mg5-x116441", "7.50", quantity=3)]}
    double.items_per_page = 1

    result = run_stream(STREAM["order_items"], client(double), ledger, load_routing(), partition_key=DAY,
                        run_id="test")

    assert result.failed_records == 0
    lines = ledger.read_table("order_lines", system="amazon").set_index("source_id")
    assert sorted(lines.index) == ["147645420374961", "147645420374962"]
    assert lines.loc["147645420374962", "order_source_id"] == "701-3922379-0000001"
    assert lines.loc["147645420374962", "line_total_amount"] == 750
    assert lines.loc["147645420374962", "unit_price_amount"] == 250
    assert lines.loc["147645420374961", "currency"] == "BRL"


def test_order_lines_partitioned_by_order_update(ledger):
    double = AmazonDouble()
    double.orders = [order("701-0000001-0000001", "2026-11-23T22:00:00Z"),
                     order("701-0000002-0000001", f"{DAY}T03:00:00Z")]
    double.items = {"701-0000001-0000001": [order_item("1001", "SKU-1", "1.00")],
                    "701-0000002-0000001": [order_item("1002", "SKU-2", "2.00")]}

    extraction = extract_stream(STREAM["order_items"], client(double), ledger, load_routing(),
                                since=datetime(2026, 11, 23, tzinfo=timezone.utc),
                                until=datetime(2026, 11, 25, tzinfo=timezone.utc), run_id="test")

    assert [run.partition_key for run in extraction.runs] == ["2026-11-23", DAY]
    assert extraction.watermark_after.cursor == datetime(2026, 11, 24, 3, tzinfo=timezone.utc)
    lines = ledger.read_table("order_lines", system="amazon").set_index("source_id")
    assert lines.loc["1001", "partition_key"] == "2026-11-23"
    assert lines.loc["1002", "partition_key"] == DAY


def _financial_events_of_the_day() -> list[tuple[str, dict]]:
    shipped = [("ShipmentEventList", shipment_event(f"114-000000{n}-0000001", f"{DAY}T0{n}:00:00Z", [shipment_item(
        f"4400{n}", "SKU-4", 1, charges(Principal="30.00"), fees(Commission="-4.50"))])) for n in range(1, 4)]
    refunded = ("RefundEventList", refund_event("114-0000001-0000001", f"{DAY}T09:00:00Z", [refund_item(
        "44001-R", "SKU-4", 1, charges(Principal="-30.00"), fees(Commission="4.50"))]))
    yesterday = ("ShipmentEventList", shipment_event("114-0000009-0000001", "2026-11-23T23:59:59Z", [shipment_item(
        "44009", "SKU-4", 1, charges(Principal="9.00"), [])]))
    return shipped + [refunded, yesterday]


def test_financial_events_paged_with_same_arguments():
    double = AmazonDouble()
    double.financial_events = _financial_events_of_the_day()
    double.financial_events_per_page = 2

    found = records(client(double), "financial_events")

    assert [(event["EventList"], event["PostedDate"]) for event in found] == [
        ("ShipmentEventList", f"{DAY}T01:00:00Z"), ("ShipmentEventList", f"{DAY}T02:00:00Z"),
        ("ShipmentEventList", f"{DAY}T03:00:00Z"), ("RefundEventList", f"{DAY}T09:00:00Z")]
    first, second = double.requests_to(FINANCIAL_EVENTS_PATH)
    assert first.url.params["PostedAfter"] == f"{DAY}T00:00:00Z"
    assert first.url.params["PostedBefore"] == "2026-11-25T00:00:00Z"
    assert second.url.params["PostedAfter"] == first.url.params["PostedAfter"]
    assert "NextToken" in second.url.params


def test_extracted_financial_events_are_stored(ledger):
    double = AmazonDouble()
    double.financial_events = _financial_events_of_the_day()

    result = run_stream(STREAM["financial_events"], client(double), ledger, load_routing(), partition_key=DAY,
                        run_id="test")

    assert (result.records, result.failed_records) == (4, 0)
    lines = ledger.read_table("payout_lines", system="amazon").set_index("source_object_id")
    assert lines.loc["44001", ["amount", "fee_amount", "net_amount"]].tolist() == [3000, 450, 2550]
    assert lines.loc["44001-R", ["amount", "fee_amount", "net_amount"]].tolist() == [-3000, -450, -2550]
    refunds = ledger.read_table("refunds", system="amazon")
    assert refunds[["order_source_id", "amount"]].values.tolist() == [["114-0000001-0000001", 3000]]


def test_financial_events_malformed_list_raises():
    double = AmazonDouble()
    double.answers = [httpx.Response(200, json={"payload": {"FinancialEvents": {"ShipmentEventList": {}}}})]

    with pytest.raises(ApiResponseError, match="FinancialEvents.ShipmentEventList is a dict, expected a list"):
        records(client(double), "financial_events")
