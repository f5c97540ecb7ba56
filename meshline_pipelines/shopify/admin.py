"""The base of both Shopify Admin API clients, REST and GraphQL: the shop, its token, and cursors.

Refunds and transactions are read through the orders updated in the window, and their own
`created_at` can be much older, as when an order is edited weeks after its payment. With their
own time, `fetch()` would drop them from the window that read them, and an earlier window no
longer lists the order once its update time has moved on, so no partition would keep them. Their
cursor is therefore the update time of the order they were read with. That keeps them in the
window they were read in, and on the time axis of the request, so a watermark taken from them is
one the next request can continue from. The cost is that they are read again each time their
order changes, and the ledger keeps one copy of an unchanged version.
"""

from datetime import datetime
from typing import Any, ClassVar

import httpx
from pydantic import Field, PrivateAttr, field_validator

from meshline_pipelines.shopify.shops import SHOP_DOMAIN
from meshline_pipelines.delivery.base import DELIVERED, REJECTED, RETRY, DeliveryResult, OutboundRecord, TargetClient
from meshline_pipelines.sources.http import ApiRequestError, ApiUnavailable, Throttle
from meshline_pipelines.sources.live import parse_cursor

READ_THROUGH_ORDERS = ("refunds", "transactions")


class ShopifyAdminClient(TargetClient):
    """One shop's Admin API. One client reads one stream at a time, because the order update times
    that give refunds and transactions their cursors are kept from one `pages()` call to the
    `cursor()` calls after it."""

    shop: str = Field(
        description="The shop's myshopify.com domain, e.g. jsmith.myshopify.com. It is part of every record's identity."
    )
    access_token: str = Field(
        repr=False, description="An Admin API access token with read scopes for every stream. Set SHOPIFY_ACCESS_TOKEN."
    )
    api_version: str = Field(
        default="2026-07", pattern=r"^(\d{4}-\d{2}|unstable)$",
        description="Admin API version in the request path, e.g. 2026-07.",
    )

    system: ClassVar[str] = "shopify"
    base_url_setting: ClassVar[str] = "SHOPIFY_API_BASE_URL"
    credential_settings: ClassVar[tuple[str, ...]] = ("SHOPIFY_ACCESS_TOKEN",)
    # Shopify Payments payouts and balance transactions are read from files only, by ShopifyFileClient.
    streams: ClassVar[tuple[str, ...]] = ("orders", "refunds", "transactions", "customers", "inventory_levels",
                                          "products")
    entities: ClassVar[tuple[str, ...]] = ("inventory_level",)

    # Order ID to the update time of that order in the last orders read for refunds or transactions.
    _order_updated_at: dict[str, datetime] = PrivateAttr(default_factory=dict)

    @field_validator("shop")
    @classmethod
    def _check_shop(cls, value: str) -> str:
        if not SHOP_DOMAIN.fullmatch(value):
            raise ValueError(f"shop {value!r} is not a domain name: give the myshopify.com domain alone, "
                             "e.g. jsmith.myshopify.com, without https:// or a path")
        return value

    @property
    def account(self) -> str:
        return self.shop

    def session_options(self) -> dict[str, Any]:
        return {"headers": {"X-Shopify-Access-Token": self.access_token}, "throttle": self.pace}

    def pace(self, response: httpx.Response) -> Throttle | None:
        """Return the pause or retry this API's rate limit requires after a response, if any."""
        return None

    def time_field(self, stream: str) -> str:
        """Name the payload field with the record's own update time (creation time for refunds and transactions)."""
        raise NotImplementedError

    def order_id_of(self, payload: dict) -> str | None:
        """Return the ID of the order a refund or transaction belongs to."""
        raise NotImplementedError

    def cursor(self, stream: str, payload: Any) -> datetime | None:
        """Return the record's update time, or for a refund or transaction, the update time of its order.

        A refund or transaction that did not come through this client's last `pages()` call falls
        back to its own creation time.
        """
        if not isinstance(payload, dict):
            return None
        if stream in READ_THROUGH_ORDERS:
            order_updated_at = self._order_updated_at.get(str(self.order_id_of(payload)))
            if order_updated_at is not None:
                return order_updated_at
        return parse_cursor(payload.get(self.time_field(stream)))

    def deliver(self, entity: str, records: list[OutboundRecord]) -> list[DeliveryResult]:
        """Set stock with POST inventory_levels/set.json, one item and location per record.

        Setting an absolute quantity is idempotent, so sending a version twice leaves the same
        stock. Both Admin API clients deliver through this REST endpoint, which the same token
        may call.
        """
        if entity not in self.entities:
            raise ValueError(f"Shopify takes no {entity!r} deliveries: expected one of {', '.join(self.entities)}")
        path = f"/admin/api/{self.api_version}/inventory_levels/set.json"
        results = []
        for record in records:
            try:
                response = self.session().request("POST", path, json=record.payload)
            except ApiUnavailable as exc:
                results.append(DeliveryResult(record.idempotency_key, RETRY, http_status=exc.status, message=str(exc)))
                continue
            except ApiRequestError as exc:
                results.append(DeliveryResult(record.idempotency_key, REJECTED, http_status=exc.status,
                                              message=exc.reason))
                continue
            level = self.session().read_json(response, "POST").get("inventory_level") or {}
            results.append(DeliveryResult(record.idempotency_key, DELIVERED, http_status=response.status_code,
                                          target_id=f"{level.get('inventory_item_id')}@{level.get('location_id')}"))
        return results
