"""The interface every delivery target implements: send record versions, report each outcome.

A target client receives `OutboundRecord`s that the outbox built and returns one
`DeliveryResult` per record. It upserts by the key the target itself deduplicates on (NetSuite's
external ID, HubSpot's email, ShipStation's order key), so sending the same version twice leaves
one record in the target. The client's `ApiSession` retries transient failures (429, 5xx,
timeouts), and when they persist the result is `retry`. A 4xx validation response is `rejected`
with the target's own message, which becomes an exception for the decision owner.
"""

import hashlib
import re
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from meshline_pipelines.sources.live import LiveClient

DELIVERED, RETRY, REJECTED = "delivered", "retry", "rejected"
_KEY_DISALLOWED = re.compile(r"[^A-Za-z0-9_-]")


def record_key(system: str, account: str, source_id: str) -> str:
    """Build the key a target upserts a canonical record by: shopify-1a2b3c4d-820982911946154508.

    Targets accept few characters in their keys (NetSuite external IDs allow letters, digits, `_`
    and `-`), and an account (a shop domain, a seller and marketplace) seldom fits, so the account
    is a short hash. A source ID with other characters has them replaced by `_`, and a hash of the
    original keeps two such IDs apart.
    """
    account_hash = hashlib.sha256(account.encode()).hexdigest()[:8]
    cleaned = _KEY_DISALLOWED.sub("_", source_id)
    if cleaned != source_id:
        cleaned += "_" + hashlib.sha256(source_id.encode()).hexdigest()[:8]
    return f"{system}-{account_hash}-{cleaned}"


@dataclass(frozen=True)
class OutboundRecord:
    """One version of one record for one target, as the outbox stores it."""

    target: str  # netsuite, hubspot, shipstation, shopify
    entity: str  # sales_order, customer, contact, order, inventory_level
    record_key: str  # the key the target upserts by: external ID, email, order key, item and location
    version: str
    idempotency_key: str
    payload: dict[str, Any]


@dataclass
class DeliveryResult:
    """The target's response for one record."""

    idempotency_key: str
    status: str  # delivered, retry or rejected
    target_id: str | None = None  # the target's internal ID of the record, when it returned one
    http_status: int | None = None
    message: str | None = None  # the target's own words for a rejection or failure
    details: dict[str, Any] = field(default_factory=dict)


class TargetClient(LiveClient):
    """A live client that also delivers. Inbound streams, if any, use the `LiveClient` hooks."""

    entities: ClassVar[tuple[str, ...]]  # the entities this target accepts

    @abstractmethod
    def deliver(self, entity: str, records: list[OutboundRecord]) -> list[DeliveryResult]:
        """Upsert the records in the target; return one result per record, in any order."""
