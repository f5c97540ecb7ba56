"""Webhook signature schemes of Shopify and Stripe, computed and verified over the raw request body.

Shopify sends `X-Shopify-Hmac-Sha256`: the base64 HMAC-SHA256 of the raw body, keyed with the
app's client secret. Stripe sends `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]`,
where each v1 value is the hex HMAC-SHA256 of `<t>.<raw body>` keyed with an endpoint secret.
Stripe sends two v1 values while an endpoint secret is being rolled, and any one matching passes.

Each route accepts several of our own secrets too, given as a comma-separated list, so a secret
can be rotated without rejecting deliveries signed with the old one.
"""

import base64
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

STRIPE_SCHEME = "v1"


class InvalidSignature(Exception):
    """The signature header is missing or malformed, or no configured secret produces it.

    The message names the header and the failure only: never a secret or a computed digest.
    """


class TimestampOutsideTolerance(Exception):
    """A Stripe signature is valid, but its timestamp is too far from the receiver's clock."""


def parse_secrets(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Split a comma-separated secret list (or a sequence of secrets) into non-empty secrets."""
    if value is None:
        return ()
    parts = value.split(",") if isinstance(value, str) else list(value)
    return tuple(part.strip() for part in parts if part and part.strip())


def _hmac_sha256(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()


def _matches_any(expected: list[bytes], received: list[bytes]) -> bool:
    # Compare every pair without stopping early, so the time taken does not show which secret
    # or which received signature matched.
    matched = False
    for candidate in expected:
        for value in received:
            matched |= hmac.compare_digest(candidate, value)
    return matched


# Shopify


def shopify_signature(body: bytes, secret: str) -> str:
    """Compute the `X-Shopify-Hmac-Sha256` value for a raw body."""
    return base64.b64encode(_hmac_sha256(secret, body)).decode("ascii")


def verify_shopify(body: bytes, header: str | None, secrets: Iterable[str]) -> None:
    """Raise InvalidSignature unless `header` is the Shopify signature of `body` under one of `secrets`."""
    if not header or not header.strip():
        raise InvalidSignature("missing X-Shopify-Hmac-Sha256 header")
    received = header.strip().encode("ascii", errors="replace")
    expected = [shopify_signature(body, secret).encode("ascii") for secret in secrets]
    if not _matches_any(expected, [received]):
        raise InvalidSignature("X-Shopify-Hmac-Sha256 does not match the body under any configured secret")


# Stripe


@dataclass(frozen=True)
class StripeSignatureHeader:
    """A parsed `Stripe-Signature` header: the signed timestamp and every v1 signature."""

    timestamp: int
    signatures: tuple[str, ...]


def stripe_signature(timestamp: int, body: bytes, secret: str) -> str:
    """Compute one v1 signature of the `Stripe-Signature` header for a raw body."""
    signed_payload = str(timestamp).encode("ascii") + b"." + body
    return _hmac_sha256(secret, signed_payload).hex()


def parse_stripe_header(header: str | None) -> StripeSignatureHeader:
    """Parse `t=...,v1=...` pairs. Schemes other than v1 (such as Stripe's test-mode v0) are ignored."""
    if not header or not header.strip():
        raise InvalidSignature("missing Stripe-Signature header")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, separator, value = item.strip().partition("=")
        if not separator:
            raise InvalidSignature("malformed Stripe-Signature header: expected t=<timestamp>,v1=<signature>")
        if key == "t":
            if not value.isascii() or not value.isdigit():
                raise InvalidSignature("malformed Stripe-Signature header: t is not a Unix timestamp")
            timestamp = int(value)
        elif key == STRIPE_SCHEME:
            signatures.append(value)
    if timestamp is None:
        raise InvalidSignature("malformed Stripe-Signature header: no t=<timestamp>")
    if not signatures:
        raise InvalidSignature("Stripe-Signature header has no v1 signature")
    return StripeSignatureHeader(timestamp=timestamp, signatures=tuple(signatures))


def verify_stripe(body: bytes, header: str | None, secrets: Iterable[str], *, now: float,
                  tolerance_seconds: float) -> int:
    """Verify a `Stripe-Signature` header against `body` and return its timestamp.

    Raises InvalidSignature when no v1 signature matches under any secret, and then
    TimestampOutsideTolerance when the signed timestamp is more than `tolerance_seconds` away from
    `now` (Unix seconds). The signature is checked first, so an unsigned request learns nothing
    about the timestamp rule.
    """
    parsed = parse_stripe_header(header)
    expected = [stripe_signature(parsed.timestamp, body, secret).encode("ascii") for secret in secrets]
    received = [value.encode("ascii", errors="replace") for value in parsed.signatures]
    if not _matches_any(expected, received):
        raise InvalidSignature("no v1 signature in Stripe-Signature matches the body under any configured secret")

    # stripe-python's `WebhookSignature.verify_header` rejects only timestamps older than the
    # tolerance. This check also rejects timestamps that far in the future, because they mean that
    # one of the two clocks is wrong.
    if abs(now - parsed.timestamp) > tolerance_seconds:
        raise TimestampOutsideTolerance(
            f"Stripe-Signature timestamp {parsed.timestamp} is {abs(now - parsed.timestamp):.0f} s away from the "
            f"receiver's clock, more than the tolerance of {tolerance_seconds:g} s"
        )
    return parsed.timestamp
