"""A Stripe API double for tests: list endpoints in Stripe's wire format, paged as Stripe pages them.

Objects are copies of the bundled real Stripe objects with new IDs and creation times. Lists
come newest first, filtered by `created[gte]` and `created[lt]`, cut at `limit` and continued
after `starting_after`. Objects created in the same second keep a stable order, as Stripe's do.
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


def refund(refund_id: str, created: int, *, charge_id: str = "ch_1", amount: int = 500, status: str = "pending") -> dict:
    body = copy.deepcopy(sample_object("refunds"))
    body.update(id=refund_id, created=created, amount=amount, charge=charge_id, status=status, currency="usd")
    return body


def payout(payout_id: str, created: int, *, amount: int = 10000) -> dict:
    body = copy.deepcopy(sample_object("payouts"))
    body.update(id=payout_id, created=created, amount=amount, currency="usd", status="paid")
    return body


def balance_transaction(transaction_id: str, created: int, *, amount: int = 2000, fee: int = 88) -> dict:
    body = copy.deepcopy(sample_object("balance_transactions"))
    body.update(id=transaction_id, created=created, amount=amount, fee=fee, net=amount - fee, currency="usd")
    return body


def charge(charge_id: str, created: int, *, amount: int = 1999, currency: str = "usd") -> dict:
    body = copy.deepcopy(sample_object("charges"))
    body.update(id=charge_id, created=created, amount=amount, amount_captured=amount, currency=currency,
                captured=True, metadata={"order_id": f"order_{charge_id}"})
    return body


class StripeDouble:
    """A Stripe API double serving `objects` and `events`. Scripted `answers` come first, one per request."""

    def __init__(self):
        self.objects: dict[str, list[dict]] = {stream: [] for stream in LIST_PATHS.values()}
        self.events: list[dict] = []
        self.payout_of: dict[str, str] = {}  # balance transaction ID to the payout that paid it out
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
        path = request.url.path
        if path == "/v1/events":
            return httpx.Response(200, json=self._events(request.url.params))
        if path in LIST_PATHS:
            return httpx.Response(200, json=self._list(LIST_PATHS[path], request.url.params))
        parent, _, object_id = path.rpartition("/")
        found = [obj for obj in self.objects.get(LIST_PATHS.get(parent, ""), []) if obj["id"] == object_id]
        if found:
            return httpx.Response(200, json=found[0])
        return httpx.Response(404, json={"error": {"type": "invalid_request_error",
                                                   "message": f"Unrecognized request URL (GET: {path})"}})

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def update(self, stream: str, object_id: str, event_type: str, created: int, **changes) -> None:
        """Change a stored object and record the event Stripe would send for the change."""
        changed = next(obj for obj in self.objects[stream] if obj["id"] == object_id)
        changed.update(changes)
        self.events.append({"id": f"evt_{len(self.events) + 1:04d}", "object": "event", "type": event_type,
                            "created": created, "data": {"object": copy.deepcopy(changed)}})

    def _events(self, params: httpx.QueryParams) -> dict:
        types = params.get_list("types[]")
        chosen = [event for event in self.events if not types or event["type"] in types]
        return self._page(chosen, params, "/v1/events")

    def _list(self, stream: str, params: httpx.QueryParams) -> dict:
        path = next(path for path, name in LIST_PATHS.items() if name == stream)
        return self._page(self.objects[stream], params, path)

    def _page(self, objects: list[dict], params: httpx.QueryParams, path: str) -> dict:
        found = sorted(objects, key=lambda obj: (-obj["created"], obj["id"]))
        if "payout" in params:
            found = [obj for obj in found if self.payout_of.get(obj["id"]) == params["payout"]]
        if "created[gte]" in params:
            found = [obj for obj in found if obj["created"] >= int(params["created[gte]"])]
        if "created[lt]" in params:
            found = [obj for obj in found if obj["created"] < int(params["created[lt]"])]
        if "starting_after" in params:
            position = [obj["id"] for obj in found].index(params["starting_after"])
            found = found[position + 1:]
        limit = int(params.get("limit", 10))
        return {"object": "list", "data": found[:limit], "has_more": len(found) > limit, "url": path}
