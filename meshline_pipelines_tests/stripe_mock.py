"""A Stripe API double for tests: list endpoints in Stripe's wire format, paged as Stripe pages them.

Objects are copies of the bundled real Stripe objects with new IDs and creation times. Lists come
newest first, filtered by `created[gte]` and `created[lt]`, cut at `limit`, and continued after
`starting_after`; objects created in the same second keep a stable order, as Stripe's do.
"""

import copy
import json
from collections.abc import Callable

import httpx

from meshline_pipelines import settings

SAMPLES = settings.bundled_samples_dir() / "stripe"
LIST_PATHS = {
    "/v1/charges": "charges",
    "/v1/refunds": "refunds",
    "/v1/payouts": "payouts",
    "/v1/balance_transactions": "balance_transactions",
}


def sample_object(stream: str) -> dict:
    return json.loads((SAMPLES / f"{stream}.json").read_text())["data"][0]


def charge(charge_id: str, created: int, *, amount: int = 1999, currency: str = "usd") -> dict:
    body = copy.deepcopy(sample_object("charges"))
    body.update(id=charge_id, created=created, amount=amount, amount_captured=amount, currency=currency,
                captured=True, metadata={"order_id": f"order_{charge_id}"})
    return body


class StripeDouble:
    """Serves the objects in `self.objects[stream]`; `answers` are served first, one per request."""

    def __init__(self):
        self.objects: dict[str, list[dict]] = {stream: [] for stream in LIST_PATHS.values()}
        self.requests: list[httpx.Request] = []
        self.answers: list[httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.answers:
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer(request) if callable(answer) else answer
        if request.headers.get("Authorization") != "Bearer sk_test_double":
            return httpx.Response(401, json={"error": {"type": "invalid_request_error",
                                                       "message": "Invalid API Key provided: sk_test_****"}})
        stream = LIST_PATHS.get(request.url.path)
        if stream is None:
            return httpx.Response(404, json={"error": {"type": "invalid_request_error",
                                                       "message": f"Unrecognized request URL (GET: {request.url.path})"}})
        return httpx.Response(200, json=self._list(stream, request.url.params))

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def _list(self, stream: str, params: httpx.QueryParams) -> dict:
        found = sorted(self.objects[stream], key=lambda obj: (-obj["created"], obj["id"]))
        if "created[gte]" in params:
            found = [obj for obj in found if obj["created"] >= int(params["created[gte]"])]
        if "created[lt]" in params:
            found = [obj for obj in found if obj["created"] < int(params["created[lt]"])]
        if "starting_after" in params:
            position = [obj["id"] for obj in found].index(params["starting_after"])
            found = found[position + 1:]
        limit = int(params.get("limit", 10))
        path = next(path for path, name in LIST_PATHS.items() if name == stream)
        return {"object": "list", "data": found[:limit], "has_more": len(found) > limit, "url": path}
