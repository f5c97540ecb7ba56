"""Turn a signed webhook request (headers and raw body) into an inbox event, or reject it.

Both builders verify the signature before they read anything else, so a request without a valid
signature gets the same response whatever its headers or body contain.
"""

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from meshline_pipelines.webhooks.inbox import InboxEvent
from meshline_pipelines.shopify.shops import SHOP_DOMAIN
from meshline_pipelines.webhooks.signatures import (
    InvalidSignature, TimestampOutsideTolerance, verify_shopify, verify_stripe,
)

log = logging.getLogger(__name__)



class Rejected(Exception):
    """A webhook request the receiver does not store: the HTTP status, an error code and a sentence for the sender.

    The detail never contains a secret, a computed digest or body content.
    """

    def __init__(self, status_code: int, error: str, detail: str):
        super().__init__(detail)
        self.status_code = status_code
        self.error = error
        self.detail = detail


def _reject_constant(name: str):
    # Python's json module accepts NaN and Infinity, which are not JSON (RFC 8259) and which
    # other readers of the stored payload reject.
    raise ValueError(f"{name} is not valid JSON")


def parse_json_object(body: bytes) -> tuple[str, dict]:
    """Decode a body as UTF-8 JSON and return the text unchanged with the parsed object."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(400, "invalid_body", "the body is not UTF-8 text") from None
    try:
        parsed = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        raise Rejected(400, "invalid_body", "the body is not valid JSON") from None
    except RecursionError:
        raise Rejected(400, "invalid_body", "the body nests JSON too deeply to parse") from None
    if not isinstance(parsed, dict):
        raise Rejected(400, "invalid_body", f"the body is a JSON {type(parsed).__name__}, expected an object")
    return text, parsed


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _required_header(headers: Mapping[str, str], name: str) -> str:
    value = _header(headers, name)
    if value is None:
        raise Rejected(400, "missing_header", f"the {name} header is missing")
    return value


def _signature_rejection(error: InvalidSignature) -> Rejected:
    return Rejected(401, "invalid_signature", str(error))


# Shopify


def _shopify_triggered_at(value: str | None) -> datetime | None:
    """Parse X-Shopify-Triggered-At, an ISO 8601 time; Python 3.11 drops digits past microseconds."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        # The time is informational (the ledger orders records by their own versions), so a
        # signed event is stored without it instead of being rejected and redelivered forever.
        log.warning("X-Shopify-Triggered-At %r is not an ISO 8601 time; storing the event without it", value[:64])
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def shopify_event(headers: Mapping[str, str], body: bytes, secrets: Sequence[str]) -> InboxEvent:
    """Verify a Shopify webhook and build its inbox event; raise Rejected otherwise.

    The event ID is X-Shopify-Event-Id, which is the same for every subscription that receives
    the event, and X-Shopify-Webhook-Id when the event ID header is absent.
    """
    try:
        verify_shopify(body, headers.get("X-Shopify-Hmac-Sha256"), secrets)
    except InvalidSignature as error:
        raise _signature_rejection(error) from None

    topic = _required_header(headers, "X-Shopify-Topic")
    shop = _required_header(headers, "X-Shopify-Shop-Domain")
    if not SHOP_DOMAIN.fullmatch(shop):
        raise Rejected(400, "invalid_header", "X-Shopify-Shop-Domain is not a domain name")
    webhook_id = _header(headers, "X-Shopify-Webhook-Id")
    event_id = _header(headers, "X-Shopify-Event-Id") or webhook_id
    if event_id is None:
        raise Rejected(400, "missing_header", "both X-Shopify-Event-Id and X-Shopify-Webhook-Id are missing")
    triggered_at = _shopify_triggered_at(_header(headers, "X-Shopify-Triggered-At"))

    text, _ = parse_json_object(body)
    return InboxEvent(system="shopify", account=shop, event_id=event_id, topic=topic, payload=text,
                      webhook_id=webhook_id, triggered_at=triggered_at)


# Stripe


@dataclass(frozen=True)
class StripeOptions:
    """Settings of the Stripe route besides its secrets: the current time, the tolerance and our account ID."""

    tolerance_seconds: float
    account_id: str | None
    now: float


def _text_field(event: dict, name: str) -> str:
    value = event.get(name)
    if not isinstance(value, str) or not value.strip():
        raise Rejected(400, "invalid_event", f"the event's {name!r} field is missing or not a non-empty string")
    return value


def _created_at(event: dict) -> datetime:
    created = event.get("created")
    # bool is a subclass of int, and `true` is no timestamp.
    if not isinstance(created, int) or isinstance(created, bool):
        raise Rejected(400, "invalid_event", "the event's 'created' field is missing or not Unix seconds")
    try:
        return datetime.fromtimestamp(created, timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise Rejected(400, "invalid_event", "the event's 'created' field is out of range") from None


def stripe_event(headers: Mapping[str, str], body: bytes, secrets: Sequence[str],
                 options: StripeOptions) -> InboxEvent:
    """Verify a Stripe webhook and build its inbox event; raise Rejected otherwise.

    The account is the event's `account` field, which Stripe sets on events of connected
    accounts, or else the configured account ID. Without either, the response is 503, a server
    error, so Stripe retries the delivery instead of counting it as delivered.
    """
    try:
        verify_stripe(body, headers.get("Stripe-Signature"), secrets, now=options.now,
                      tolerance_seconds=options.tolerance_seconds)
    except InvalidSignature as error:
        raise _signature_rejection(error) from None
    except TimestampOutsideTolerance as error:
        raise Rejected(400, "stale_timestamp", str(error)) from None

    text, event = parse_json_object(body)
    # NOTE: only snapshot events (`"object": "event"`) are accepted. Thin events of Stripe's v2 API
    # (`"object": "v2.core.event"`) have another shape and are rejected here.
    if event.get("object", "event") != "event":
        raise Rejected(400, "invalid_event", "the body is not a Stripe event: its 'object' field is not 'event'")
    event_id = _text_field(event, "id")
    topic = _text_field(event, "type")
    triggered_at = _created_at(event)

    account = event.get("account")
    if account is not None and (not isinstance(account, str) or not account.strip()):
        raise Rejected(400, "invalid_event", "the event's 'account' field is not a non-empty string")
    account = account or options.account_id
    if not account:
        raise Rejected(503, "not_configured", "the event has no 'account' field and STRIPE_ACCOUNT_ID is not set")

    return InboxEvent(system="stripe", account=account, event_id=event_id, topic=topic, payload=text,
                      triggered_at=triggered_at)
