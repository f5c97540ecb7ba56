"""Stripe streams, declared once; each becomes a daily-partitioned asset in the `stripe` group."""

from meshline_pipelines.streams import Stream, id_at
from meshline_pipelines.stripe import normalize

SYSTEM = "stripe"
_COMMON_FIELDS = {"source_id": "id", "amount": "amount", "currency": "currency", "created_at": "created"}


def _fields(table: str, **more: str) -> dict[str, str]:
    return {f"{table}.{column}": source for column, source in {**_COMMON_FIELDS, **more}.items()}


STREAMS = [
    Stream(system=SYSTEM, name="charges", description="Stripe charges as payments; amounts converted from Stripe's minor units to ISO 4217 ones.",
           tables=("payments",), record_id=id_at("id"), normalize=normalize.normalize_charges,
           source_fields=_fields("payments")),
    Stream(system=SYSTEM, name="refunds", description="Stripe refunds, linked to the charge they return.",
           tables=("refunds",), record_id=id_at("id"), normalize=normalize.normalize_refunds,
           source_fields=_fields("refunds")),
    Stream(system=SYSTEM, name="payouts", description="Stripe payouts to the merchant's bank account.",
           tables=("payouts",), record_id=id_at("id"), normalize=normalize.normalize_payouts,
           source_fields=_fields("payouts", payout_date="arrival_date")),
    Stream(system=SYSTEM, name="balance_transactions",
           description="Stripe balance transactions: every movement of the balance, with its fee and net.",
           tables=("payout_lines",), record_id=id_at("id"), normalize=normalize.normalize_balance_transactions,
           source_fields=_fields("payout_lines", processed_at="created", type="type")),
]
