"""The webhook receiver: an ASGI app that verifies Shopify and Stripe webhooks and stores them in the inbox.

The receiver only verifies and stores before it responds, so senders get their 2xx quickly. The
inbox sensor does the rest. Routes:

- POST /webhooks/shopify and POST /webhooks/stripe: 200 for a stored event or a duplicate
  delivery, 400 for a malformed request or a stale Stripe timestamp, 401 for a missing or wrong
  signature, 413 for a body over the size limit, 503 when the route's secret is not configured.
- GET /healthz: 200 when the ledger answers a query, 503 otherwise.
"""

import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from meshline_pipelines.ledger import Ledger
from meshline_pipelines.webhooks.events import Rejected, StripeOptions, shopify_event, stripe_event
from meshline_pipelines.webhooks.inbox import InboxEvent, receive
from meshline_pipelines.webhooks.signatures import parse_secrets

log = logging.getLogger(__name__)

SHOPIFY_SECRET_ENV = "SHOPIFY_WEBHOOK_SECRET"
STRIPE_SECRET_ENV = "STRIPE_WEBHOOK_SECRET"
STRIPE_ACCOUNT_ENV = "STRIPE_ACCOUNT_ID"

# Shopify and Stripe event bodies are a few kilobytes to a few hundred; 1 MiB leaves room for
# large orders while bounding what one request makes the receiver hold in memory.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# Five minutes is the default tolerance of Stripe's own libraries (stripe-python DEFAULT_TOLERANCE).
DEFAULT_STRIPE_TOLERANCE_SECONDS = 300


@dataclass(frozen=True)
class WebhookRoute:
    """One webhook source: its path, the variable for its secrets, the secrets, and how to build its event."""

    system: str
    path: str
    secret_env: str
    signature_header: str
    secrets: tuple[str, ...]
    build_event: Callable[[Headers, bytes], InboxEvent]


def _rejection_response(request: Request, route: WebhookRoute, rejection: Rejected) -> JSONResponse:
    client = request.client.host if request.client else "unknown"
    # NOTE: one line per rejected request, with no rate limit, so a flood of bad requests floods the log.
    log.warning("rejected %s webhook from %s: %s %s: %s", route.system, client, rejection.status_code,
                rejection.error, rejection.detail)
    return JSONResponse({"error": rejection.error, "detail": rejection.detail}, status_code=rejection.status_code)


async def read_limited_body(request: Request, max_bytes: int) -> bytes:
    """Read the request body, raising Rejected (413) as soon as it is known to exceed `max_bytes`.

    A declared Content-Length over the limit is rejected before any body byte is read. A chunked
    body, or one longer than declared, is counted while it streams in.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise Rejected(400, "invalid_header", "Content-Length is not a number") from None
        if length > max_bytes:
            raise Rejected(413, "body_too_large", f"the body of {length} bytes exceeds the limit of {max_bytes} bytes")

    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise Rejected(413, "body_too_large", f"the body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _route_endpoint(route: WebhookRoute, ledger: Ledger, max_body_bytes: int) -> Callable[[Request], Awaitable]:
    async def endpoint(request: Request) -> JSONResponse:
        try:
            # Cheap checks come first, so an unconfigured route or an unsigned request gets its
            # response without the body being read.
            if not route.secrets:
                raise Rejected(503, "not_configured",
                               f"{route.secret_env} is not set, so this receiver cannot verify {route.system} webhooks")
            if not (request.headers.get(route.signature_header) or "").strip():
                raise Rejected(401, "invalid_signature", f"missing {route.signature_header} header")
            body = await read_limited_body(request, max_body_bytes)
            event = route.build_event(request.headers, body)
        except Rejected as rejection:
            return _rejection_response(request, route, rejection)

        try:
            inbox_id, duplicate = await run_in_threadpool(receive, ledger, event)
        except sa.exc.SQLAlchemyError:
            # A 5xx makes the sender retry. Shopify retries 8 times over 4 hours (developer
            # changelog of 2024-09-10); after the last retry only an API poll finds the change.
            log.exception("could not store %s event %s (topic %s) in the inbox", event.system, event.event_id,
                          event.topic)
            return JSONResponse({"error": "storage_failed", "detail": "the event could not be stored; retry later"},
                                status_code=500)

        log.info("stored %s event %s (topic %s, account %s) as inbox ID %s%s", event.system, event.event_id,
                 event.topic, event.account, inbox_id, ", a duplicate delivery" if duplicate else "")
        return JSONResponse({"status": "received", "inbox_id": inbox_id, "event_id": event.event_id,
                             "duplicate": duplicate})

    return endpoint


def _health_endpoint(ledger: Ledger) -> Callable[[Request], Awaitable]:
    def check_ledger() -> None:
        with ledger.engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))

    async def endpoint(request: Request) -> JSONResponse:
        try:
            await run_in_threadpool(check_ledger)
        except sa.exc.SQLAlchemyError as error:
            log.error("health check failed: the ledger query raised %s: %s", type(error).__name__, error)
            return JSONResponse({"status": "unavailable", "detail": "the ledger query failed"}, status_code=503)
        return JSONResponse({"status": "ok"})

    return endpoint


def _configured(value: str | Sequence[str] | None, env_name: str) -> tuple[str, ...]:
    return parse_secrets(os.environ.get(env_name) if value is None else value)


def create_app(
    ledger_url: str | None = None,
    *,
    shopify_secret: str | Sequence[str] | None = None,
    stripe_secret: str | Sequence[str] | None = None,
    stripe_account_id: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    stripe_tolerance_seconds: float = DEFAULT_STRIPE_TOLERANCE_SECONDS,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """Build the receiver on the ledger at `ledger_url` (default: MESHLINE_DATABASE_URL or the SQLite file).

    Secrets are comma-separated lists (or sequences), so old and new secrets both pass during a
    rotation. A secret left as None is read from SHOPIFY_WEBHOOK_SECRET or STRIPE_WEBHOOK_SECRET,
    and the Stripe account ID from STRIPE_ACCOUNT_ID. A route with an empty secret responds with
    503. `clock` returns Unix seconds and is compared with Stripe's signed timestamps.
    """
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes {max_body_bytes} is below 1: set the body size limit in bytes")
    if stripe_tolerance_seconds <= 0:
        raise ValueError(f"stripe_tolerance_seconds {stripe_tolerance_seconds} is not positive: "
                         f"set seconds, for example {DEFAULT_STRIPE_TOLERANCE_SECONDS}")

    ledger = Ledger.connect(ledger_url)
    shopify_secrets = _configured(shopify_secret, SHOPIFY_SECRET_ENV)
    stripe_secrets = _configured(stripe_secret, STRIPE_SECRET_ENV)
    account_id = stripe_account_id if stripe_account_id is not None else os.environ.get(STRIPE_ACCOUNT_ENV) or None

    def build_stripe_event(headers: Headers, body: bytes) -> InboxEvent:
        options = StripeOptions(tolerance_seconds=stripe_tolerance_seconds, account_id=account_id, now=clock())
        return stripe_event(headers, body, stripe_secrets, options)

    webhook_routes = [
        WebhookRoute("shopify", "/webhooks/shopify", SHOPIFY_SECRET_ENV, "X-Shopify-Hmac-Sha256", shopify_secrets,
                     lambda headers, body: shopify_event(headers, body, shopify_secrets)),
        WebhookRoute("stripe", "/webhooks/stripe", STRIPE_SECRET_ENV, "Stripe-Signature", stripe_secrets,
                     build_stripe_event),
    ]
    for route in webhook_routes:
        if not route.secrets:
            log.warning("%s is not set: POST %s responds with 503 until it is set", route.secret_env, route.path)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        ledger.dispose()

    routes = [
        Route(route.path, _route_endpoint(route, ledger, max_body_bytes), methods=["POST"])
        for route in webhook_routes
    ]
    routes.append(Route("/healthz", _health_endpoint(ledger), methods=["GET"]))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.ledger = ledger
    return app
