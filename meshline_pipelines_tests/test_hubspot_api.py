"""The HubSpot client against a double that responds in HubSpot's wire format: search paging, rate limits, upserts."""

import json
from datetime import datetime, timedelta, timezone

import httpx
import pandas as pd
import pytest

from meshline_pipelines.clients import SettingError
from meshline_pipelines.delivery.base import DELIVERED, REJECTED, RETRY, OutboundRecord
from meshline_pipelines.hubspot import api
from meshline_pipelines.hubspot.api import HubSpotClient, SearchLimitError
from meshline_pipelines.hubspot.assets import STREAMS
from meshline_pipelines.hubspot.outbound import contact_payload
from meshline_pipelines.ingest import run_stream
from meshline_pipelines.ledger import Ledger
from meshline_pipelines.routing import load_routing
from meshline_pipelines.sources.http import ApiAuthError
from meshline_pipelines.sources.live import Window

PORTAL = "24681357"
TOKEN = "pat-na1-test-token"
NOV_2 = datetime(2026, 11, 2, tzinfo=timezone.utc)
NOV_3 = NOV_2 + timedelta(days=1)
DAY = Window.for_day("2026-11-02")


def milliseconds(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def hubspot_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def contact(contact_id: int, modified: datetime, email: str | None = None, **properties) -> dict:
    """A contact as the search endpoint returns it: every property value is text or null."""
    created = modified - timedelta(days=30)
    values = {"email": email or f"person{contact_id}@example.com", "firstname": f"First{contact_id}",
              "lastname": f"Last{contact_id}", "phone": None, "createdate": hubspot_time(created),
              "lastmodifieddate": hubspot_time(modified), "hs_object_id": str(contact_id), **properties}
    return {"id": str(contact_id), "properties": values, "createdAt": hubspot_time(created),
            "updatedAt": hubspot_time(modified), "archived": False}


class HubSpotDouble:
    """Serves contact search and batch upsert as HubSpot does. Responses queued in `answers` are returned first."""

    def __init__(self):
        self.contacts: list[dict] = []
        self.requests: list[httpx.Request] = []
        self.answers: list[httpx.Response] = []
        self.rate_headers = {"X-HubSpot-RateLimit-Max": "100", "X-HubSpot-RateLimit-Remaining": "99",
                             "X-HubSpot-RateLimit-Interval-Milliseconds": "10000"}
        self.result_max = 10_000
        self.stored: dict[str, dict] = {}  # contacts written by upsert, by lower-cased email
        self.invalid_emails: set[str] = set()
        self.next_id = 9001

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def bodies(self, path: str) -> list[dict]:
        return [json.loads(request.content) for request in self.requests if request.url.path == path]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.answers:
            return self.answers.pop(0)
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return httpx.Response(401, json={"status": "error", "category": "INVALID_AUTHENTICATION",
                                             "message": "Authentication credentials not found."})
        body = json.loads(request.content)
        if request.url.path == api.SEARCH_PATH:
            return self.search(body)
        if request.url.path == api.UPSERT_PATH:
            return self.upsert(body)
        return httpx.Response(404, json={"status": "error", "message": "Not found"})

    def search(self, body: dict) -> httpx.Response:
        filters = {item["operator"]: int(item["value"]) for item in body["filterGroups"][0]["filters"]}
        matches = sorted(
            (item for item in self.contacts
             if filters["GTE"] <= milliseconds(datetime.fromisoformat(item["updatedAt"])) < filters["LT"]),
            key=lambda item: item["updatedAt"],
        )
        offset = int(body.get("after", 0))
        if offset >= self.result_max:
            return httpx.Response(400, json={"status": "error", "category": "VALIDATION_ERROR",
                                             "message": f"There was a problem with the request. after={offset}"})
        page = matches[offset:offset + body["limit"]]
        answer: dict = {"total": len(matches), "results": page}
        if offset + body["limit"] < len(matches):
            after = str(offset + body["limit"])
            answer["paging"] = {"next": {"after": after, "link": f"?after={after}"}}
        return httpx.Response(200, json=answer, headers=self.rate_headers)

    def upsert(self, body: dict) -> httpx.Response:
        inputs = body["inputs"]
        if len(inputs) > api.UPSERT_INPUTS_MAX:
            return httpx.Response(400, json={"status": "error", "category": "VALIDATION_ERROR",
                                             "message": "Batch input limit exceeded"})
        results, errors = [], []
        for item in inputs:
            assert item["idProperty"] == "email"
            email = item["id"].lower()
            if email in self.invalid_emails:
                errors.append({"status": "error", "category": "VALIDATION_ERROR",
                               "message": "Property values were not valid",
                               "context": {"objectWriteTraceId": [item["objectWriteTraceId"]]},
                               "errors": [{"message": f"Email address {item['id']} is invalid",
                                           "code": "INVALID_EMAIL"}]})
                continue
            created = email not in self.stored
            if created:
                self.stored[email] = {"id": str(self.next_id), "properties": {}}
                self.next_id += 1
            stored = self.stored[email]
            stored["properties"].update({**item["properties"], "email": email})
            results.append({"id": stored["id"], "properties": dict(stored["properties"]), "new": created,
                            "createdAt": "2026-11-02T10:00:00.000Z", "updatedAt": "2026-11-02T10:00:00.000Z",
                            "archived": False})
        answer = {"status": "COMPLETE", "results": results, "startedAt": "2026-11-02T10:00:00.000Z",
                  "completedAt": "2026-11-02T10:00:01.000Z"}
        if errors:
            answer.update(errors=errors, numErrors=len(errors))
        return httpx.Response(207 if errors else 200, json=answer, headers=self.rate_headers)


def client(double: HubSpotDouble, waits: list | None = None, **options) -> HubSpotClient:
    settings = {"portal_id": PORTAL, "access_token": TOKEN, "base_url": "https://api.hubapi.test", **options}
    return HubSpotClient(**settings).with_transport(double.transport(),
                                                    sleep=(waits if waits is not None else []).append)


def outbound(email: str, version: str = "1", **properties) -> OutboundRecord:
    return OutboundRecord(target="hubspot", entity="contact", record_key=email, version=version,
                          idempotency_key=f"hubspot:contact:{email.lower()}:{version}",
                          payload={"email": email, **properties})


def rate_limited(**headers) -> httpx.Response:
    return httpx.Response(429, headers=headers, json={
        "status": "error", "message": "You have reached your ten_secondly_rolling limit.",
        "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING",
        "correlationId": "c033cdaa-2c40-4a64-ae48-b4cec88dad24"})


# --- Reading contacts ----------------------------------------------------------------------------


def test_search_pages_follow_after_with_same_filters():
    double = HubSpotDouble()
    double.contacts = [contact(n, NOV_2 + timedelta(minutes=n)) for n in range(1, 251)]

    batches = list(client(double).fetch("contacts", DAY))

    assert [len(batch.records) for batch in batches] == [100, 100, 50]
    first, second, third = double.bodies(api.SEARCH_PATH)
    assert "after" not in first
    assert second["after"] == "100"
    assert third["after"] == "200"
    assert second["filterGroups"] == first["filterGroups"]
    assert second["sorts"] == [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}]
    assert second["properties"] == list(api.CONTACT_PROPERTIES)
    assert first["filterGroups"][0]["filters"] == [
        {"propertyName": "lastmodifieddate", "operator": "GTE", "value": str(milliseconds(NOV_2))},
        {"propertyName": "lastmodifieddate", "operator": "LT", "value": str(milliseconds(NOV_3))},
    ]
    assert len({record["id"] for batch in batches for record in batch.records}) == 250


def test_search_sends_bearer_token():
    double = HubSpotDouble()

    list(client(double).fetch("contacts", DAY))

    assert double.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in repr(client(double))


def test_fetch_drops_contacts_outside_window():
    double = HubSpotDouble()
    double.contacts = [contact(1, NOV_2 - timedelta(milliseconds=1)), contact(2, NOV_2),
                       contact(3, NOV_3 - timedelta(milliseconds=1)), contact(4, NOV_3)]

    ids = [record["id"] for batch in client(double).fetch("contacts", DAY) for record in batch.records]

    assert ids == ["2", "3"]


def test_search_splits_window_above_result_maximum(monkeypatch):
    monkeypatch.setattr(api, "SEARCH_RESULTS_MAX", 10)
    double = HubSpotDouble()
    double.result_max = 10
    double.contacts = [contact(n, NOV_2 + timedelta(minutes=37 * n)) for n in range(1, 31)]

    batches = list(client(double, page_size=4).fetch("contacts", DAY))

    ids = [record["id"] for batch in batches for record in batch.records]
    assert sorted(ids, key=int) == [str(n) for n in range(1, 31)]
    assert len(ids) == 30
    # Contacts come in modification order, because the halves are read earliest first.
    assert ids == [str(n) for n in range(1, 31)]
    bodies = double.bodies(api.SEARCH_PATH)
    assert all(int(body.get("after", 0)) < 10 for body in bodies)
    starts = {body["filterGroups"][0]["filters"][0]["value"] for body in bodies}
    assert len(starts) > 2


def test_search_limit_within_one_millisecond_raises(monkeypatch):
    monkeypatch.setattr(api, "SEARCH_RESULTS_MAX", 10)
    double = HubSpotDouble()
    double.contacts = [contact(n, NOV_2 + timedelta(hours=5)) for n in range(1, 12)]

    with pytest.raises(SearchLimitError, match="11 contacts have lastmodifieddate 2026-11-02T05:00:00Z"):
        list(client(double).fetch("contacts", DAY))


def test_rate_limited_search_retries_and_pauses():
    double = HubSpotDouble()
    double.contacts = [contact(1, NOV_2 + timedelta(hours=1))]
    double.answers = [rate_limited()]
    double.rate_headers = {**double.rate_headers, "X-HubSpot-RateLimit-Remaining": "2"}
    waits = []

    ids = [record["id"] for batch in client(double, waits).fetch("contacts", DAY) for record in batch.records]

    assert ids == ["1"]
    assert len(double.requests) == 2
    # No Retry-After: one whole 10 s rolling window. Then 2 requests left of 100: one request's share, 0.1 s.
    assert waits == [10.0, 0.1]


def test_rate_limited_search_honours_retry_after():
    double = HubSpotDouble()
    double.answers = [rate_limited(**{"Retry-After": "3"})]
    waits = []

    list(client(double, waits).fetch("contacts", DAY))

    assert waits == [3.0]


@pytest.mark.parametrize("headers, expected_wait", [
    ({"X-HubSpot-RateLimit-Remaining": "50", "X-HubSpot-RateLimit-Max": "100"}, None),
    ({"X-HubSpot-RateLimit-Remaining": "5", "X-HubSpot-RateLimit-Max": "100"}, 0.1),
    ({"X-HubSpot-RateLimit-Remaining": "0", "X-HubSpot-RateLimit-Max": "100"}, 10.0),
    ({"X-HubSpot-RateLimit-Remaining": "0", "X-HubSpot-RateLimit-Max": "150",
      "X-HubSpot-RateLimit-Interval-Milliseconds": "2000"}, 2.0),
    ({"X-HubSpot-RateLimit-Secondly-Remaining": "0"}, 1.0),
    ({}, None),
])
def test_pace_reads_rate_limit_headers(headers, expected_wait):
    verdict = client(HubSpotDouble()).pace(httpx.Response(200, headers=headers))

    assert (verdict.wait if verdict else None) == expected_wait


def test_wrong_token_names_setting_hides_token():
    double = HubSpotDouble()

    with pytest.raises(ApiAuthError) as failure:
        list(client(double, access_token="pat-na1-wrong").fetch("contacts", DAY))

    assert "HUBSPOT_ACCESS_TOKEN" in str(failure.value)
    assert api.SEARCH_PATH in str(failure.value)
    assert "pat-na1-wrong" not in str(failure.value)


def test_contacts_land_as_customers(tmp_path):
    double = HubSpotDouble()
    double.contacts = [
        contact(101, NOV_2 + timedelta(hours=9, milliseconds=250), email="Ana.Lima@Example.com ", phone="+1 555 0100",
                hs_lead_status="NEW"),
        contact(102, NOV_2 + timedelta(hours=10), firstname=""),
        contact(103, NOV_3 + timedelta(hours=1)),
    ]
    ledger = Ledger.connect("sqlite:///" + str(tmp_path / "l.db"))

    run = run_stream(STREAMS[0], client(double), ledger, load_routing(), partition_key="2026-11-02", run_id="test")

    assert run.failed_records == 0
    customers = ledger.read_table("customers", system="hubspot")
    assert customers["source_id"].tolist() == ["101", "102"]
    assert set(customers["account"]) == {PORTAL}
    ana = customers.iloc[0]
    assert ana["email"] == "Ana.Lima@Example.com"
    assert ana["first_name"] == "First101"
    assert ana["last_name"] == "Last101"
    assert ana["phone"] == "+1 555 0100"
    assert ana["updated_at"] == pd.Timestamp("2026-11-02T09:00:00.250Z")
    assert ana["created_at"] == pd.Timestamp("2026-10-03T09:00:00.250Z")
    assert ana["version"] == "2026-11-02T09:00:00.250000Z"
    assert json.loads(ana["extra"]) == {"archived": False, "properties": {"hs_lead_status": "NEW"}}
    assert pd.isna(customers.iloc[1]["first_name"])
    ledger.dispose()


@pytest.fixture
def sqlite_ledger(tmp_path):
    ledger = Ledger.connect("sqlite:///" + str(tmp_path / "l.db"))
    yield ledger
    ledger.dispose()


def _land(ledger: Ledger, contacts: list[dict], **options):
    """Read `contacts` through the search double into the ledger, and return the run."""
    double = HubSpotDouble()
    double.contacts = contacts
    return run_stream(STREAMS[0], client(double), ledger, load_routing(), partition_key="2026-11-02", run_id="test",
                      **options)


def test_search_requests_consent_and_lifetime_value():
    double = HubSpotDouble()

    list(client(double).fetch("contacts", DAY))

    properties = double.bodies(api.SEARCH_PATH)[0]["properties"]
    assert "hs_email_optout" in properties
    assert "total_revenue" in properties


def test_search_requests_configured_lifetime_property(monkeypatch):
    monkeypatch.setenv("HUBSPOT_LIFETIME_VALUE_PROPERTY", "lifetime_value_usd")
    double = HubSpotDouble()

    list(client(double).fetch("contacts", DAY))

    properties = double.bodies(api.SEARCH_PATH)[0]["properties"]
    assert properties[-1] == "lifetime_value_usd"
    assert "total_revenue" not in properties


def test_invalid_lifetime_property_setting_raises(monkeypatch):
    monkeypatch.setenv("HUBSPOT_LIFETIME_VALUE_PROPERTY", "Total Revenue")

    with pytest.raises(SettingError, match="HUBSPOT_LIFETIME_VALUE_PROPERTY='Total Revenue' is not a property's"):
        list(client(HubSpotDouble()).fetch("contacts", DAY))


def test_consent_and_lifetime_value_map(sqlite_ledger, monkeypatch):
    monkeypatch.setenv("HUBSPOT_CURRENCY", " usd ")
    hour = NOV_2 + timedelta(hours=1)
    run = _land(sqlite_ledger, [
        contact(101, hour, hs_email_optout="true", total_revenue="98.00", hs_lead_status="NEW"),
        contact(102, hour + timedelta(minutes=1), hs_email_optout="false", total_revenue="1250"),
        contact(103, hour + timedelta(minutes=2), hs_email_optout=None, total_revenue=None),
        contact(104, hour + timedelta(minutes=3), hs_email_optout="", total_revenue=""),
    ])

    assert run.failed_records == 0
    customers = sqlite_ledger.read_table("customers", system="hubspot").set_index("source_id")
    assert customers.loc["101", "email_marketing_state"] == "unsubscribed"
    assert customers.loc["102", "email_marketing_state"] == "not_opted_out"
    assert pd.isna(customers.loc["103", "email_marketing_state"])
    assert pd.isna(customers.loc["104", "email_marketing_state"])
    assert customers.loc["101", "total_spent_amount"] == 9800
    assert customers.loc["102", "total_spent_amount"] == 125000
    assert customers.loc["101", "total_spent_currency"] == "USD"
    assert pd.isna(customers.loc["103", "total_spent_amount"])
    assert pd.isna(customers.loc["104", "total_spent_amount"])
    assert pd.isna(customers.loc["104", "total_spent_currency"])
    assert json.loads(customers.loc["101", "extra"]) == {"archived": False, "properties": {"hs_lead_status": "NEW"}}


def test_lifetime_value_unmapped_without_currency(sqlite_ledger, monkeypatch):
    monkeypatch.delenv("HUBSPOT_CURRENCY", raising=False)
    run = _land(sqlite_ledger, [contact(101, NOV_2 + timedelta(hours=1), hs_email_optout="false",
                                        total_revenue="98.00")])

    assert run.failed_records == 0
    customer = sqlite_ledger.read_table("customers", system="hubspot").iloc[0]
    assert pd.isna(customer["total_spent_amount"])
    assert pd.isna(customer["total_spent_currency"])
    assert customer["email_marketing_state"] == "not_opted_out"
    assert json.loads(customer["extra"]) == {"archived": False, "properties": {"total_revenue": "98.00"}}


def test_invalid_lifetime_value_and_consent_become_issues(sqlite_ledger, monkeypatch):
    monkeypatch.setenv("HUBSPOT_CURRENCY", "USD")
    hour = NOV_2 + timedelta(hours=1)
    run = _land(sqlite_ledger, [
        contact(101, hour, total_revenue="98.005"),
        contact(102, hour + timedelta(minutes=1), total_revenue="n/a"),
        contact(103, hour + timedelta(minutes=2), hs_email_optout="yes"),
        contact(104, hour + timedelta(minutes=3), total_revenue="98.00"),
    ], max_failure_rate=1.0)

    assert run.failed_records == 3
    assert not run.quarantined
    assert sqlite_ledger.read_table("customers", system="hubspot")["source_id"].tolist() == ["104"]
    found = sqlite_ledger.read_exceptions().set_index("record_id")
    assert found.loc["101", "rule"] == "customers.total_spent_amount:money"
    assert found.loc["101", "field"] == "properties.total_revenue"
    assert found.loc["101", "value"] == "98.005"
    assert "amount '98.005' has more decimals than USD allows (2)" in found.loc["101", "reason"]
    assert found.loc["102", "rule"] == "customers.total_spent_amount:money"
    assert "invalid amount 'n/a': expected a decimal number such as 12.50" in found.loc["102", "reason"]
    assert found.loc["103", "rule"] == "customers.email_marketing_state:type"
    assert found.loc["103", "field"] == "properties.hs_email_optout"
    assert "properties.hs_email_optout: expected true or false" in found.loc["103", "reason"]


def test_unknown_currency_setting_raises(sqlite_ledger, monkeypatch):
    monkeypatch.setenv("HUBSPOT_CURRENCY", "DOLLARS")

    with pytest.raises(SettingError) as failure:
        _land(sqlite_ledger, [contact(101, NOV_2 + timedelta(hours=1), total_revenue="98.00")])

    assert str(failure.value) == (
        "HUBSPOT_CURRENCY='DOLLARS' is not an ISO 4217 currency code with a minor unit: set it to the company "
        "currency of the HubSpot account, such as USD, or unset it to leave the lifetime value unmapped")


# --- Writing contacts ----------------------------------------------------------------------------


def test_upsert_150_contacts_in_two_requests():
    double = HubSpotDouble()
    records = [outbound(f"buyer{n}@example.com", firstname=f"Buyer{n}") for n in range(150)]

    results = client(double).deliver("contact", records)

    assert [len(body["inputs"]) for body in double.bodies(api.UPSERT_PATH)] == [100, 50]
    assert {result.status for result in results} == {DELIVERED}
    assert len(results) == 150
    by_key = {result.idempotency_key: result for result in results}
    for record in records:
        assert by_key[record.idempotency_key].target_id == double.stored[record.record_key]["id"]
    assert len({result.target_id for result in results}) == 150


def test_same_contact_twice_is_one_hubspot_contact():
    double = HubSpotDouble()
    first = outbound("Ana.Lima@example.com", version="1", firstname="Ana")
    second = outbound("ana.lima@EXAMPLE.com", version="2", firstname="Ana Maria")

    results = client(double).deliver("contact", [first, second])

    bodies = double.bodies(api.UPSERT_PATH)
    assert len(bodies) == 2
    assert [body["inputs"][0]["id"].lower() for body in bodies] == ["ana.lima@example.com"] * 2
    assert [result.status for result in results] == [DELIVERED, DELIVERED]
    assert results[0].target_id == results[1].target_id
    assert list(double.stored) == ["ana.lima@example.com"]
    assert double.stored["ana.lima@example.com"]["properties"]["firstname"] == "Ana Maria"
    assert results[0].details == {"created": True}
    assert results[1].details == {"created": False}


def test_multi_status_rejects_named_contact():
    double = HubSpotDouble()
    double.invalid_emails = {"bad@example"}
    records = [outbound("one@example.com"), outbound("bad@example"), outbound("two@example.com")]

    results = client(double).deliver("contact", records)

    by_key = {result.idempotency_key: result for result in results}
    rejected = by_key[records[1].idempotency_key]
    assert rejected.status == REJECTED
    assert rejected.http_status == 207
    assert rejected.message == "Property values were not valid (Email address bad@example is invalid)"
    assert by_key[records[0].idempotency_key].status == DELIVERED
    assert by_key[records[2].idempotency_key].status == DELIVERED
    assert by_key[records[0].idempotency_key].target_id == double.stored["one@example.com"]["id"]


def test_whole_request_400_rejects_all():
    double = HubSpotDouble()
    double.answers = [httpx.Response(400, json={
        "status": "error", "category": "VALIDATION_ERROR", "correlationId": "aa11",
        "message": "Invalid input JSON on line 1, column 15: Cannot build BatchInputSimplePublicObjectBatchInputUpsert",
    })]
    records = [outbound("one@example.com"), outbound("two@example.com")]

    results = client(double).deliver("contact", records)

    assert [result.status for result in results] == [REJECTED, REJECTED]
    assert [result.http_status for result in results] == [400, 400]
    assert results[0].message.startswith("Invalid input JSON on line 1")


def test_400_naming_one_contact_retries_the_others():
    double = HubSpotDouble()
    double.answers = [httpx.Response(400, json={
        "status": "error", "category": "VALIDATION_ERROR", "message": "Property values were not valid",
        "errors": [{"message": "Property \"phone\" does not accept the value 'x'", "code": "INVALID_OPTION",
                    "context": {"id": ["two@example.com"]}}]})]
    records = [outbound("one@example.com"), outbound("two@example.com")]

    results = client(double).deliver("contact", records)

    assert [result.status for result in results] == [RETRY, REJECTED]
    assert "Property \"phone\" does not accept" in results[1].message
    assert results[0].message.startswith("not confirmed because HubSpot rejected another contact")


def test_persistent_502_leaves_contacts_for_retry():
    double = HubSpotDouble()
    double.answers = [httpx.Response(502, text="Bad Gateway") for _ in range(5)]
    waits = []

    results = client(double, waits).deliver("contact", [outbound("one@example.com"), outbound("two@example.com")])

    assert [result.status for result in results] == [RETRY, RETRY]
    assert [result.http_status for result in results] == [502, 502]
    assert "after 5 attempts" in results[0].message
    assert len(double.requests) == 5
    assert len(waits) == 4
    assert double.stored == {}


def test_records_without_email_rejected_unsent():
    double = HubSpotDouble()
    records = [outbound("not-an-email"),
               OutboundRecord(target="hubspot", entity="contact", record_key="a@example.com", version="1",
                              idempotency_key="k2", payload={"email": "b@example.com"})]

    results = client(double).deliver("contact", records)

    assert [result.status for result in results] == [REJECTED, REJECTED]
    assert "is not an email" in results[0].message
    assert "differs from the record key" in results[1].message
    assert double.requests == []


def test_deliver_unknown_entity_raises():
    with pytest.raises(ValueError, match="not 'deal'"):
        client(HubSpotDouble()).deliver("deal", [])


# --- Outbound payloads ---------------------------------------------------------------------------


def test_contact_payload_maps_customer_row():
    row = {"source_id": "7", "email": " Ana.Lima@example.com ", "first_name": "Ana", "last_name": pd.NA,
           "phone": float("nan"), "state": "enabled"}

    assert contact_payload(row) == {"email": "Ana.Lima@example.com", "firstname": "Ana"}


def test_contact_payload_without_email_raises():
    with pytest.raises(ValueError, match="customer '7' has no valid email"):
        contact_payload({"source_id": "7", "email": None, "first_name": "Ana"})
