"""The Stripe API client: list endpoints paged with `has_more` and `starting_after`.

Stripe lists newest first and filters by `created` in Unix seconds. Its objects have no update
time. A window therefore reads the objects created in it, then the events of the window that
changed older objects, such as a refund that failed or a payout that was paid. Each such object
is requested as it is now. An object's cursor is its latest update event's time, else its
creation time.
"""

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, ClassVar

import httpx
from pydantic import Field, PrivateAttr

from meshline_pipelines.sources.base import SourceBatch
from meshline_pipelines.sources.live import LiveClient, Window, parse_cursor, unix_seconds_ceil, unix_seconds_floor

ENDPOINTS = {
    "charges": "/v1/charges",
    "refunds": "/v1/refunds",
    "payouts": "/v1/payouts",
    "balance_transactions": "/v1/balance_transactions",
}


# Events that mean an object created earlier has changed. Balance transactions never change.
# NOTE: Stripe keeps events for 30 days, so a window older than that finds no later changes.
UPDATE_EVENTS = {
    "charges": ("charge.captured", "charge.expired", "charge.refunded", "charge.updated"),
    "refunds": ("refund.updated", "refund.failed", "charge.refund.updated"),
    "payouts": ("payout.updated", "payout.paid", "payout.failed", "payout.canceled"),
}


def stripe_should_retry(response: httpx.Response) -> bool | None:
    """Stripe's own verdict: `Stripe-Should-Retry: true` or `false` overrules the status code."""
    verdict = response.headers.get("Stripe-Should-Retry")
    if verdict is None:
        return None
    return verdict.strip().lower() == "true"


class StripeApiClient(LiveClient):
    """GET /v1/charges, /v1/refunds, /v1/payouts and /v1/balance_transactions for one Stripe account."""

    account_id: str = Field(description="The Stripe account ID (acct_...); part of every record's identity.")
    api_key: str = Field(description="A secret or restricted key with read access; set STRIPE_API_KEY.")
    api_version: str | None = Field(
        default=None, description="Stripe-Version header. Unset: the account's default version.")
    connected_account: bool = Field(
        default=False,
        description="Send Stripe-Account with account_id, to read a connected account through a platform key."
    )
    page_size: int = Field(default=100, ge=1, le=100, description="Objects per page; Stripe allows 1 to 100.")

    system: ClassVar[str] = "stripe"
    base_url_setting: ClassVar[str] = "STRIPE_API_BASE_URL"
    credential_settings: ClassVar[tuple[str, ...]] = ("STRIPE_API_KEY",)
    streams: ClassVar[tuple[str, ...]] = tuple(ENDPOINTS)

    # Object ID to its cursor when that is not its creation time: the time of its latest update
    # event, or for a balance transaction, its payout's creation time.
    _updated_at: dict[str, datetime] = PrivateAttr(default_factory=dict)

    @property
    def account(self) -> str:
        return self.account_id

    def session_options(self) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        if self.api_version:
            headers["Stripe-Version"] = self.api_version
        if self.connected_account:
            headers["Stripe-Account"] = self.account_id
        return {"headers": headers, "should_retry": stripe_should_retry}

    def cursor(self, stream: str, payload: Any) -> datetime | None:
        """Return the object's latest update event time, its payout's creation time, else its own creation time."""
        if not isinstance(payload, dict):
            return None
        updated = self._updated_at.get(str(payload.get("id")))
        return updated or parse_cursor(payload.get("created"))

    def pages(self, stream: str, window: Window) -> Iterator[SourceBatch]:
        self._updated_at = {}
        created_filter = {"created[gte]": unix_seconds_floor(window.since),
                          "created[lt]": unix_seconds_ceil(window.until)}
        if stream == "balance_transactions":
            yield from self._payout_pages(created_filter)
            return
        endpoint = ENDPOINTS[stream]

        listed: set[str] = set()
        for page, records in self._list_pages(endpoint, created_filter):
            listed.update(str(record.get("id")) for record in records if isinstance(record, dict))
            yield SourceBatch(origin=f"GET {endpoint} page {page}", records=records,
                              fetched_at=datetime.now(timezone.utc))

        if stream in UPDATE_EVENTS:
            yield from self._updated_pages(stream, created_filter, listed)

    def _payout_pages(self, created_filter: dict[str, int]) -> Iterator[SourceBatch]:
        """Yield the balance transactions of each payout created in the window, listed with ?payout=.

        Listed this way, each transaction is known to belong to its payout, which the mapper reads
        from the request in the origin. Its cursor is its payout's creation time.
        """
        # NOTE: Stripe lists transactions by payout for automatic payouts only, and a transaction
        # is read once its payout exists. Movements not yet paid out are not read in API mode.
        endpoint = ENDPOINTS["balance_transactions"]
        for _, payouts in self._list_pages(ENDPOINTS["payouts"], created_filter):
            for payout in payouts:
                payout_id = payout.get("id") if isinstance(payout, dict) else None
                created = parse_cursor(payout.get("created")) if isinstance(payout, dict) else None
                if not payout_id or created is None:
                    continue
                for page, records in self._list_pages(endpoint, {"payout": payout_id}):
                    for record in records:
                        if isinstance(record, dict) and record.get("id"):
                            self._updated_at[str(record["id"])] = created
                    yield SourceBatch(origin=f"GET {endpoint}?payout={payout_id} page {page}", records=records,
                                      fetched_at=datetime.now(timezone.utc))

    def _updated_pages(self, stream: str, created_filter: dict[str, int], listed: set[str]) -> Iterator[SourceBatch]:
        """Yield the current state of older objects whose update events fall in the window.

        An event carries the object as it was then, and a later event may have changed it again,
        so each object is requested once, as it is now.
        """
        session = self.session()
        endpoint = ENDPOINTS[stream]
        params = {**created_filter, "types[]": list(UPDATE_EVENTS[stream])}
        for _, events in self._list_pages("/v1/events", params):
            for event in events:
                changed = event.get("data", {}).get("object", {}) if isinstance(event, dict) else {}
                object_id = changed.get("id") if isinstance(changed, dict) else None
                moment = parse_cursor(event.get("created")) if isinstance(event, dict) else None
                if not object_id or moment is None or object_id in listed:
                    continue
                if object_id in self._updated_at:
                    # Events come newest first; the first one seen is the object's last change.
                    continue
                self._updated_at[object_id] = moment

                response = session.request("GET", f"{endpoint}/{object_id}")
                current = session.read_json(response, "GET")
                if not isinstance(current, dict) or current.get("id") != object_id:
                    raise session.malformed("GET", response, f"expected the object {object_id}")
                yield SourceBatch(origin=f"GET {endpoint}/{object_id} after event {event.get('id')}",
                                  records=[current], fetched_at=datetime.now(timezone.utc))

    def _list_pages(self, endpoint: str, filters: dict[str, Any]) -> Iterator[tuple[int, list[Any]]]:
        session = self.session()
        params: dict[str, Any] = {**filters, "limit": self.page_size}
        page = 0
        while True:
            page += 1
            response = session.request("GET", endpoint, params=params)
            records, has_more = self._list_page(session.read_json(response, "GET"), response)
            yield page, records

            if not has_more:
                return
            if not records or not isinstance(records[-1], dict) or not records[-1].get("id"):
                raise session.malformed("GET", response,
                                        "has_more is true but the last object has no id to continue after")
            params = {**params, "starting_after": records[-1]["id"]}

    def _list_page(self, body: Any, response: httpx.Response) -> tuple[list[Any], bool]:
        if not isinstance(body, dict) or body.get("object") != "list" or not isinstance(body.get("data"), list):
            raise self.session().malformed("GET", response, 'expected a list object {"object": "list", "data": [...]}')
        has_more = body.get("has_more")
        if not isinstance(has_more, bool):
            raise self.session().malformed("GET", response, f"has_more is {has_more!r}, expected true or false")
        return body["data"], has_more
