"""The Stripe API client: list endpoints paged with `has_more` and `starting_after`.

Stripe lists newest first and filters by `created` in Unix seconds. Its objects have no update
time, so `created` is the cursor; a refund or payout that changes status later is read again
inside the look-back window, or by replaying its partition.
"""

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, ClassVar

import httpx
from pydantic import Field

from meshline_pipelines.sources.base import SourceBatch
from meshline_pipelines.sources.live import LiveClient, Window, parse_cursor, unix_seconds_ceil, unix_seconds_floor

ENDPOINTS = {
    "charges": "/v1/charges",
    "refunds": "/v1/refunds",
    "payouts": "/v1/payouts",
    "balance_transactions": "/v1/balance_transactions",
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
    api_version: str | None = Field(default=None, description="Stripe-Version header. Unset: the account's default version.")
    connected_account: bool = Field(
        default=False, description="Send Stripe-Account with account_id, to read a connected account through a platform key."
    )
    page_size: int = Field(default=100, ge=1, le=100, description="Objects per page; Stripe allows 1 to 100.")

    system: ClassVar[str] = "stripe"
    base_url_setting: ClassVar[str] = "STRIPE_API_BASE_URL"
    credential_settings: ClassVar[tuple[str, ...]] = ("STRIPE_API_KEY",)
    streams: ClassVar[tuple[str, ...]] = tuple(ENDPOINTS)

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
        return parse_cursor(payload.get("created")) if isinstance(payload, dict) else None

    def pages(self, stream: str, window: Window) -> Iterator[SourceBatch]:
        session = self.session()
        endpoint = ENDPOINTS[stream]
        params: dict[str, Any] = {
            "created[gte]": unix_seconds_floor(window.since),
            "created[lt]": unix_seconds_ceil(window.until),
            "limit": self.page_size,
        }

        page = 0
        while True:
            page += 1
            response = session.request("GET", endpoint, params=params)
            body = session.read_json(response, "GET")
            records, has_more = self._list_page(body, response)
            yield SourceBatch(origin=f"GET {endpoint} page {page}", records=records,
                              fetched_at=datetime.now(timezone.utc))

            if not has_more:
                return
            if not records or not isinstance(records[-1], dict) or not records[-1].get("id"):
                raise self.session().malformed("GET", response, "has_more is true but the last object has no id to continue after")
            params = {**params, "starting_after": records[-1]["id"]}

    def _list_page(self, body: Any, response: httpx.Response) -> tuple[list[Any], bool]:
        if not isinstance(body, dict) or body.get("object") != "list" or not isinstance(body.get("data"), list):
            raise self.session().malformed("GET", response, 'expected a list object {"object": "list", "data": [...]}')
        has_more = body.get("has_more")
        if not isinstance(has_more, bool):
            raise self.session().malformed("GET", response, f"has_more is {has_more!r}, expected true or false")
        return body["data"], has_more
