"""The ShipStation API v1 client against a double that responds in ShipStation's wire format.

The double pages shipments by creation date, compared as Pacific local times the way ShipStation
stores them, sends the X-Rate-Limit-* headers on every response, and upserts orders by orderKey.
"""

import base64
import json
import math
from datetime import datetime, timezone

import httpx
import pandas as pd
import pytest

from meshline_pipelines.delivery.base import DELIVERED, REJECTED, RETRY, OutboundRecord
from meshline_pipelines.ingest import run_stream
from meshline_pipelines.ledger import Ledger
from meshline_pipelines.normalize import MapContext
from meshline_pipelines.routing import load_routing
from meshline_pipelines.settings import bundled_samples_dir
from meshline_pipelines.shipstation.api import ShipStationClient, parse_shipstation_time
from meshline_pipelines.shipstation.assets import STREAMS
from meshline_pipelines.shipstation.outbound import order_payload
from meshline_pipelines.shopify.normalize import normalize_orders
from meshline_pipelines.sources.http import ApiAuthError
from meshline_pipelines.sources.live import Window

API_KEY = "ss-key-double"
API_SECRET = "ss-secret-double"
PARTITION = "2026-11-24"
SHIPMENTS = next(stream for stream in STREAMS if stream.name == "shipments")


def shipment(shipment_id: int, create_date: str, **fields) -> dict:
    """A shipment as GET /shipments lists it with includeShipmentItems=false."""
    return {
        "shipmentId": shipment_id, "orderId": 700000 + shipment_id, "orderKey": f"order-key-{shipment_id}",
        "userId": "c9f06d74-95de-4263-9b04-e87095cababf", "customerEmail": "bob.norman@mail.example.com",
        "orderNumber": f"#{1000 + shipment_id}", "createDate": create_date, "shipDate": "2026-11-24",
        "shipmentCost": 4.35, "insuranceCost": 0.0, "trackingNumber": f"9400111899561704{shipment_id:06d}",
        "isReturnLabel": False, "batchNumber": None, "carrierCode": "stamps_com",
        "serviceCode": "usps_ground_advantage", "packageCode": "package", "confirmation": "none",
        "warehouseId": 16079, "voided": False, "voidDate": None, "marketplaceNotified": True,
        "notifyErrorMessage": None,
        "shipTo": {"name": "Bob Norman", "company": None, "street1": "Chestnut Street 92", "street2": "",
                   "street3": None, "city": "Louisville", "state": "KY", "postalCode": "40202", "country": "US",
                   "phone": "+1(502)-459-2181", "residential": True, "addressVerified": None},
        "weight": {"value": 12.0, "units": "ounces", "WeightUnits": 1}, "dimensions": None,
        "insuranceOptions": {"provider": None, "insureShipment": False, "insuredValue": 0.0},
        "advancedOptions": None, "shipmentItems": None, "labelData": None, "formData": None,
        **fields,
    }


class ShipStationDouble:
    """Serve GET /shipments and POST /orders/createorders. Queued `answers` are sent first, in order."""

    def __init__(self):
        self.shipments: list[dict] = []
        self.orders: dict[str, dict] = {}  # orderKey -> the stored order, with its orderId
        self.invalid_keys: dict[str, str] = {}  # orderKey -> the errorMessage its result carries
        self.requests: list[httpx.Request] = []
        self.answers: list[httpx.Response] = []
        self.remaining = 39
        self.reset = 42
        self._next_order_id = 500001

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.answers:
            return self.answers.pop(0)
        expected = "Basic " + base64.b64encode(f"{API_KEY}:{API_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return httpx.Response(401, text="401 Unauthorized", headers=self._rate_headers())
        if request.method == "GET" and request.url.path == "/shipments":
            return self._list_shipments(request)
        if request.method == "POST" and request.url.path == "/orders/createorders":
            return self._create_orders(request)
        return httpx.Response(404, json={"Message": f"No HTTP resource was found that matches {request.url.path}"})

    def _rate_headers(self) -> dict[str, str]:
        return {"X-Rate-Limit-Limit": "40", "X-Rate-Limit-Remaining": str(self.remaining),
                "X-Rate-Limit-Reset": str(self.reset)}

    def _list_shipments(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        date_field = "createDate" if "createDateStart" in params else "voidDate"
        start = datetime.strptime(params[f"{date_field}Start"], "%Y-%m-%d %H:%M:%S")
        end = datetime.strptime(params[f"{date_field}End"], "%Y-%m-%d %H:%M:%S")
        matching = sorted(
            (s for s in self.shipments if s[date_field] and start <= datetime.fromisoformat(s[date_field]) <= end),
            key=lambda s: s["createDate"],
        )
        page, size = int(params.get("page", 1)), int(params.get("pageSize", 100))
        body = {"shipments": matching[(page - 1) * size:page * size], "total": len(matching), "page": page,
                "pages": math.ceil(len(matching) / size)}
        return httpx.Response(200, json=body, headers=self._rate_headers())

    def _create_orders(self, request: httpx.Request) -> httpx.Response:
        orders = json.loads(request.content)
        if not isinstance(orders, list) or len(orders) > 100:
            return httpx.Response(400, json={"Message": "The request is invalid."})
        results = []
        for order in orders:
            key = order["orderKey"]
            if key in self.invalid_keys:
                results.append({"orderId": 0, "orderNumber": order["orderNumber"], "orderKey": key,
                                "success": False, "errorMessage": self.invalid_keys[key]})
                continue
            stored = self.orders.get(key)
            order_id = stored["orderId"] if stored else self._next_order_id
            if not stored:
                self._next_order_id += 1
            self.orders[key] = {**order, "orderId": order_id}
            results.append({"orderId": order_id, "orderNumber": order["orderNumber"], "orderKey": key,
                            "success": True, "errorMessage": None})
        body = {"hasErrors": any(not result["success"] for result in results), "results": results}
        return httpx.Response(200, json=body, headers=self._rate_headers())


def client(double: ShipStationDouble, waits: list | None = None, **options) -> ShipStationClient:
    settings = {"account_id": "acme-shipping", "api_key": API_KEY, "api_secret": API_SECRET,
                "base_url": "https://ssapi.shipstation.test", **options}
    return ShipStationClient(**settings).with_transport(double.transport(),
                                                         sleep=(waits if waits is not None else []).append)


def order_record(number: int, **payload) -> OutboundRecord:
    key = f"meshline-order-{number}"
    body = {"orderNumber": f"#{number}", "orderKey": key, "orderDate": "2026-11-24T09:30:00",
            "orderStatus": "awaiting_shipment", "billTo": {"name": "Bob Norman"}, "shipTo": {"name": "Bob Norman"},
            "items": [], **payload}
    return OutboundRecord(target="shipstation", entity="order", record_key=key, version="v1",
                          idempotency_key=f"shipstation:order:{key}:v1", payload=body)


def fetched_ids(shipstation: ShipStationClient, partition: str = PARTITION) -> list[int]:
    return [s["shipmentId"] for batch in shipstation.fetch("shipments", Window.for_day(partition))
            for s in batch.records]


# Inbound: shipments.

def test_shipments_paging_requests_page_two():
    double = ShipStationDouble()
    double.shipments = [shipment(n, f"2026-11-24T{n // 60 % 12:02d}:{n % 60:02d}:00.0000000") for n in range(1, 502)]
    shipstation = client(double)

    batches = list(shipstation.fetch("shipments", Window.for_day(PARTITION)))

    assert [len(batch.records) for batch in batches] == [500, 1, 0]
    assert len(double.requests) == 3
    second = double.requests[1].url.params
    assert second["page"] == "2"
    assert second["pageSize"] == "500"
    assert second["includeShipmentItems"] == "false"
    assert (second["sortBy"], second["sortDir"]) == ("CreateDate", "ASC")
    assert len({s["shipmentId"] for batch in batches for s in batch.records}) == 501


def test_window_sent_in_pacific_time():
    double = ShipStationDouble()

    list(client(double).fetch("shipments", Window.for_day("2026-11-24")))
    list(client(double).fetch("shipments", Window.for_day("2026-07-01")))

    winter, winter_voids, summer, _ = (request.url.params for request in double.requests)
    assert (winter["createDateStart"], winter["createDateEnd"]) == ("2026-11-23 16:00:00", "2026-11-24 16:00:00")
    assert (winter_voids["voidDateStart"], winter_voids["voidDateEnd"]) == ("2026-11-23 16:00:00",
                                                                             "2026-11-24 16:00:00")
    assert (summer["createDateStart"], summer["createDateEnd"]) == ("2026-06-30 17:00:00", "2026-07-01 17:00:00")


def test_shipments_outside_utc_day_dropped():
    double = ShipStationDouble()
    double.shipments = [
        shipment(1, "2026-11-23T15:59:59.9000000"),  # 23:59:59.9 UTC on the 23rd
        shipment(2, "2026-11-23T16:00:00.0000000"),  # midnight UTC on the 24th
        shipment(3, "2026-11-24T15:59:59.9990000"),
        shipment(4, "2026-11-24T16:00:00.0000000"),  # midnight UTC on the 25th, inside the inclusive filter
    ]

    assert fetched_ids(client(double)) == [2, 3]


def test_earlier_shipment_voided_in_window_read():
    double = ShipStationDouble()
    double.shipments = [
        shipment(1, "2026-11-20T08:00:00.0000000", voided=True, voidDate="2026-11-24T09:00:00.0000000"),
        shipment(2, "2026-11-24T08:00:00.0000000", voided=True, voidDate="2026-11-24T08:30:00.0000000"),
        shipment(3, "2026-11-20T08:00:00.0000000", voided=True, voidDate="2026-11-25T09:00:00.0000000"),
        shipment(4, "2026-11-20T08:00:00.0000000"),
    ]
    shipstation = client(double)

    batches = list(shipstation.fetch("shipments", Window.for_day(PARTITION)))

    assert [[s["shipmentId"] for s in batch.records] for batch in batches] == [[2], [1]]
    assert batches[1].origin == "GET /shipments voided page 1"
    assert shipstation.cursor("shipments", batches[1].records[0]) == datetime(2026, 11, 24, 17, tzinfo=timezone.utc)


def test_pacific_times_parse_to_utc():
    assert parse_shipstation_time("2026-11-24T06:51:33.6270000") == datetime(2026, 11, 24, 14, 51, 33, 627000,
                                                                             tzinfo=timezone.utc)
    assert parse_shipstation_time("2026-07-01T06:00:00.0000000") == datetime(2026, 7, 1, 13, tzinfo=timezone.utc)
    assert parse_shipstation_time("2026-11-24") == datetime(2026, 11, 24, 8, tzinfo=timezone.utc)
    assert parse_shipstation_time("2026-11-24T06:00:00Z") == datetime(2026, 11, 24, 6, tzinfo=timezone.utc)
    assert parse_shipstation_time("yesterday") is None
    assert parse_shipstation_time(None) is None


def test_low_rate_limit_pauses_until_reset():
    double = ShipStationDouble()
    double.shipments = [shipment(n, f"2026-11-24T08:00:{n:02d}.0000000") for n in range(1, 4)]
    double.remaining, double.reset = 0, 42
    waits = []

    ids = fetched_ids(client(double, waits, page_size=2))

    assert ids == [1, 2, 3]
    assert waits == [43.0, 43.0, 43.0]  # two pages of created shipments, one of voided ones


def test_rate_limit_budget_left_no_pause():
    double = ShipStationDouble()
    double.shipments = [shipment(1, "2026-11-24T08:00:00.0000000")]
    double.remaining = 3
    waits = []

    assert fetched_ids(client(double, waits)) == [1]
    assert waits == []


def test_429_without_retry_after_waits_window():
    double = ShipStationDouble()
    double.shipments = [shipment(1, "2026-11-24T08:00:00.0000000")]
    double.answers = [httpx.Response(429, json={"Message": "Too Many Requests"},
                                     headers={"X-Rate-Limit-Limit": "40", "X-Rate-Limit-Remaining": "0",
                                              "X-Rate-Limit-Reset": "7"})]
    waits = []

    assert fetched_ids(client(double, waits)) == [1]
    assert waits == [60.0]
    assert len(double.requests) == 3


def test_429_with_retry_after_waits_that_long():
    double = ShipStationDouble()
    double.shipments = [shipment(1, "2026-11-24T08:00:00.0000000")]
    double.answers = [httpx.Response(429, headers={"Retry-After": "5"}, json={"Message": "Too Many Requests"})]
    waits = []

    assert fetched_ids(client(double, waits)) == [1]
    assert waits == [5.0]


def test_wrong_secret_names_settings_hides_secret():
    double = ShipStationDouble()

    with pytest.raises(ApiAuthError) as failure:
        fetched_ids(client(double, api_secret="ss-wrong-secret"))

    message = str(failure.value)
    assert "SHIPSTATION_API_KEY" in message
    assert "SHIPSTATION_API_SECRET" in message
    assert "/shipments" in message
    assert "ss-wrong-secret" not in message


def test_shipments_land_in_ledger(tmp_path):
    double = ShipStationDouble()
    double.shipments = [
        shipment(1, "2026-11-24T06:51:33.6270000"),
        shipment(2, "2026-11-24T10:00:00.0000000", voided=True, voidDate="2026-11-24T11:00:00.0000000",
                 shipDate="2026-11-25"),
        shipment(3, "2026-11-20T10:00:00.0000000", voided=True, voidDate="2026-11-24T12:00:00.0000000"),
    ]
    ledger = Ledger.connect("sqlite:///" + str(tmp_path / "l.db"))

    try:
        run = run_stream(SHIPMENTS, client(double), ledger, load_routing(), partition_key=PARTITION, run_id="test")
        stored = ledger.read_table("shipments", system="shipstation")
        raw = ledger.read_raw(system="shipstation")
    finally:
        ledger.dispose()

    assert run.records == 3
    assert run.failed_records == 0
    assert not run.quarantined
    assert stored["source_id"].tolist() == ["1", "2", "3"]
    assert set(stored["system"]) == {"shipstation"}
    assert set(stored["account"]) == {"acme-shipping"}
    first, second = stored.iloc[0], stored.iloc[1]
    assert first["order_source_id"] == "700001"
    assert first["order_key"] == "order-key-1"
    assert first["order_number"] == "#1001"
    assert first["tracking_number"] == "9400111899561704000001"
    assert (first["carrier"], first["service"]) == ("stamps_com", "usps_ground_advantage")
    assert pd.Timestamp(first["created_at"]) == pd.Timestamp("2026-11-24T14:51:33.627Z")
    assert pd.Timestamp(first["ship_date"]) == pd.Timestamp("2026-11-24T08:00:00Z")
    assert not first["voided"]
    assert second["voided"]
    assert pd.Timestamp(second["ship_date"]) == pd.Timestamp("2026-11-25T08:00:00Z")
    assert "voidDate" in json.loads(second["extra"])
    assert stored.iloc[2]["voided"]
    assert pd.Timestamp(stored.iloc[2]["created_at"]) == pd.Timestamp("2026-11-20T18:00:00Z")
    assert len(raw) == 3


def test_bad_ship_date_fails_validation(tmp_path):
    double = ShipStationDouble()
    double.shipments = [shipment(n, "2026-11-24T08:00:00.0000000") for n in range(1, 10)]
    double.shipments.append(shipment(10, "2026-11-24T09:00:00.0000000", shipDate="next week"))
    ledger = Ledger.connect("sqlite:///" + str(tmp_path / "l.db"))

    try:
        run = run_stream(SHIPMENTS, client(double), ledger, load_routing(), partition_key=PARTITION, run_id="test")
        stored = ledger.read_table("shipments", system="shipstation")
    finally:
        ledger.dispose()

    assert run.failed_records == 1
    assert "shipments.ship_date:timestamp" in run.failed_rules["shipments"]
    assert "10" not in stored["source_id"].tolist()
    assert len(stored) == 9


# Outbound: orders.

def test_createorders_sends_batches_of_100():
    double = ShipStationDouble()
    records = [order_record(n) for n in range(1, 121)]

    results = client(double).deliver("order", records)

    posts = [json.loads(request.content) for request in double.requests]
    assert [len(body) for body in posts] == [100, 20]
    assert [result.status for result in results] == [DELIVERED] * 120
    by_key = {result.idempotency_key: result for result in results}
    for record in records:
        assert by_key[record.idempotency_key].target_id == str(double.orders[record.record_key]["orderId"])
    assert len({result.target_id for result in results}) == 120


def test_same_order_key_twice_upserts():
    double = ShipStationDouble()
    shipstation = client(double)

    first = shipstation.deliver("order", [order_record(7, amountPaid=10.0)])
    second = shipstation.deliver("order", [order_record(7, amountPaid=12.5)])

    assert len(double.orders) == 1
    assert double.orders["meshline-order-7"]["amountPaid"] == 12.5
    assert first[0].status == second[0].status == DELIVERED
    assert first[0].target_id == second[0].target_id


def test_failed_result_rejected_with_message():
    double = ShipStationDouble()
    double.invalid_keys["meshline-order-2"] = "The order's shipTo country code 'XX' is not valid."
    records = [order_record(1), order_record(2), order_record(3)]

    results = {result.idempotency_key: result for result in client(double).deliver("order", records)}

    rejected = results[records[1].idempotency_key]
    assert rejected.status == REJECTED
    assert rejected.message == "The order's shipTo country code 'XX' is not valid."
    assert results[records[0].idempotency_key].status == DELIVERED
    assert results[records[2].idempotency_key].status == DELIVERED
    assert set(double.orders) == {"meshline-order-1", "meshline-order-3"}


def test_whole_request_400_rejects_batch():
    double = ShipStationDouble()
    double.answers = [httpx.Response(400, json={
        "Message": "The request is invalid.",
        "ModelState": {"apiOrders[1].orderDate": ["The orderDate field is required."]},
    })]
    records = [order_record(1), order_record(2)]

    results = client(double).deliver("order", records)

    assert [result.status for result in results] == [REJECTED, REJECTED]
    assert {result.http_status for result in results} == {400}
    assert results[0].message == ("The request is invalid. apiOrders[1].orderDate: "
                                  "The orderDate field is required.")


def test_persistent_500_returns_retry():
    double = ShipStationDouble()
    double.answers = [httpx.Response(500, json={"Message": "An error has occurred."}) for _ in range(5)]
    waits = []

    results = client(double, waits).deliver("order", [order_record(1), order_record(2)])

    assert [result.status for result in results] == [RETRY, RETRY]
    assert {result.http_status for result in results} == {500}
    assert len(double.requests) == 5
    assert len(waits) == 4
    assert API_SECRET not in results[0].message
    assert double.orders == {}


def test_missing_result_left_for_retry():
    double = ShipStationDouble()
    double.answers = [httpx.Response(200, json={"hasErrors": False, "results": [
        {"orderId": 91, "orderNumber": "#1", "orderKey": "meshline-order-1", "success": True, "errorMessage": None},
    ]})]

    results = client(double).deliver("order", [order_record(1), order_record(2)])

    assert [(result.status, result.target_id) for result in results] == [(DELIVERED, "91"), (RETRY, None)]
    assert "meshline-order-2" in results[1].message


def test_payload_key_mismatch_rejected_unsent():
    double = ShipStationDouble()
    record = order_record(1, orderKey="another-key")

    results = client(double).deliver("order", [record])

    assert results[0].status == REJECTED
    assert "another-key" in results[0].message
    assert double.requests == []


def test_deliver_rejects_unknown_entity():
    with pytest.raises(ValueError, match="customer"):
        client(ShipStationDouble()).deliver("customer", [])


# Outbound payloads from canonical rows.

def shopify_sample_order() -> tuple[dict, list[dict]]:
    """The first order of the bundled Shopify REST sample, mapped to canonical rows."""
    payloads = json.loads((bundled_samples_dir() / "shopify" / "orders.json").read_text())["orders"]
    records = pd.DataFrame({"payload": pd.Series(payloads[:1], dtype=object)})
    normalized = normalize_orders(records, MapContext(system="shopify", account="jsmith.myshopify.com",
                                                      partition_key=PARTITION))
    order = normalized.tables["orders"].iloc[0].to_dict()
    lines = [row.to_dict() for _, row in normalized.tables["order_lines"].iterrows()]
    return order, lines


def test_order_payload_from_shopify_sample():
    order, lines = shopify_sample_order()

    payload = order_payload(order, lines, "shopify:jsmith:" + order["source_id"])

    assert payload["orderKey"] == "shopify:jsmith:" + order["source_id"]
    assert payload["orderNumber"] == order["order_number"]
    assert payload["orderStatus"] == ("cancelled" if pd.notna(order["cancelled_at"]) else "awaiting_shipment")
    created_pacific = pd.Timestamp(order["created_at"]).tz_convert("America/Los_Angeles")
    assert payload["orderDate"] == created_pacific.strftime("%Y-%m-%dT%H:%M:%S")
    assert payload["shipTo"]["street1"] == "Chestnut Street 92"
    assert (payload["shipTo"]["state"], payload["shipTo"]["country"]) == ("KY", "US")
    assert payload["shipTo"]["name"] == "Bob Norman"
    assert payload["billTo"]["postalCode"] == "40202"
    assert len(payload["items"]) == len(lines)
    first = payload["items"][0]
    assert first["quantity"] == int(lines[0]["quantity"])
    assert first["unitPrice"] == int(lines[0]["unit_price_amount"]) / 100
    assert first["lineItemKey"] == lines[0]["source_id"]
    assert payload["amountPaid"] == int(order["total_amount"]) / 100
    json.dumps(payload)  # the body httpx sends must serialize


def test_order_payload_without_address_sends_empty_one():
    order = {"source_id": "112-3", "order_number": "112-3", "created_at": pd.Timestamp("2026-07-01T12:00:00Z"),
             "cancelled_at": pd.NaT, "email": None, "total_amount": 59894, "total_currency": "USD",
             "tax_amount": pd.NA, "tax_currency": pd.NA, "shipping_amount": 500, "shipping_currency": "USD",
             "extra": None}
    lines = [{"source_id": "L1", "sku": "SKU-1", "title": None, "quantity": 2, "currency": "USD",
              "unit_price_amount": 29947, "tax_amount": pd.NA}]

    payload = order_payload(order, lines, "amazon:112-3")

    assert payload["orderDate"] == "2026-07-01T05:00:00"
    assert payload["orderStatus"] == "awaiting_shipment"
    assert payload["shipTo"]["street1"] is None
    assert payload["shipTo"]["name"] is None
    assert payload["billTo"]["city"] is None
    assert payload["amountPaid"] == 598.94
    assert payload["taxAmount"] is None
    assert payload["shippingAmount"] == 5.0
    assert payload["items"] == [{"lineItemKey": "L1", "sku": "SKU-1", "name": "SKU-1", "quantity": 2,
                                 "unitPrice": 299.47, "taxAmount": None}]


def test_order_payload_cancelled_order():
    order = {"source_id": "9", "order_number": "#9", "created_at": "2026-11-24T10:00:00Z",
             "cancelled_at": "2026-11-24T11:00:00Z", "total_amount": 1000, "total_currency": "JPY"}

    payload = order_payload(order, [], "shopify:9")

    assert payload["orderStatus"] == "cancelled"
    assert payload["amountPaid"] == 1000.0


def test_order_payload_rejects_mixed_currency():
    order = {"source_id": "9", "order_number": "#9", "created_at": "2026-11-24T10:00:00Z",
             "total_amount": 1000, "total_currency": "USD"}
    lines = [{"source_id": "L1", "quantity": 1, "currency": "EUR", "unit_price_amount": 1000}]

    with pytest.raises(ValueError, match="EUR"):
        order_payload(order, lines, "shopify:9")
