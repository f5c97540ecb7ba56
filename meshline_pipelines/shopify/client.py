"""Shopify clients. The file client reads Admin REST API response bodies dropped in the import folder."""

from typing import ClassVar

from pydantic import Field

from meshline_pipelines.sources.files import FilePattern, FileSnapshotClient, embedded_lists, json_list_at


class ShopifyFileClient(FileSnapshotClient):
    """Shopify Admin REST responses saved as files, e.g. the body of GET /admin/api/2026-07/orders.json."""

    shop: str = Field(description="The shop's myshopify.com domain; part of every record's identity.")

    system: ClassVar[str] = "shopify"
    files: ClassVar[dict[str, list[FilePattern]]] = {
        "orders": [FilePattern("orders*.json", json_list_at("orders"))],
        "products": [FilePattern("products*.json", json_list_at("products"))],
        # Orders carry their refunds, and GET /orders/{id}/refunds.json returns them on their own.
        "refunds": [
            FilePattern("refunds*.json", json_list_at("refunds")),
            FilePattern("orders*.json", embedded_lists("orders", "refunds")),
        ],
        "transactions": [FilePattern("transactions*.json", json_list_at("transactions"))],
        "customers": [FilePattern("customers*.json", json_list_at("customers"))],
        "inventory_levels": [FilePattern("inventory_levels*.json", json_list_at("inventory_levels"))],
        "payouts": [FilePattern("payouts*.json", json_list_at("payouts"))],
        "balance_transactions": [FilePattern("balance_transactions*.json", json_list_at("transactions"))],
    }

    @property
    def account(self) -> str:
        return self.shop
