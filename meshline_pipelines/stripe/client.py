"""Stripe clients. The file client reads Stripe list responses (`{"object": "list", "data": [...]}`)."""

from typing import ClassVar

from pydantic import Field

from meshline_pipelines.sources.files import FilePattern, FileSnapshotClient, json_list_at


class StripeFileClient(FileSnapshotClient):
    """Bodies of GET /v1/charges, /v1/refunds, /v1/payouts and /v1/balance_transactions saved as files."""

    account_id: str = Field(description="The Stripe account ID (acct_...); part of every record's identity.")

    system: ClassVar[str] = "stripe"
    files: ClassVar[dict[str, list[FilePattern]]] = {
        "charges": [FilePattern("charges*.json", json_list_at("data"))],
        "refunds": [FilePattern("refunds*.json", json_list_at("data"))],
        "payouts": [FilePattern("payouts*.json", json_list_at("data"))],
        "balance_transactions": [FilePattern("balance_transactions*.json", json_list_at("data"))],
    }

    @property
    def account(self) -> str:
        return self.account_id
