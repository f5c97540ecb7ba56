"""Stripe API objects to canonical frames.

Stripe amounts are integers in Stripe's own minor units, which differ from ISO 4217 for a few
currencies (see `money.stripe_exponent`); times are Unix seconds. Stripe objects carry no update
time, so their version is their content hash.
"""

import pandas as pd

from meshline_pipelines.normalize import (
    FieldReader, MapContext, Normalized, extra_fields, flatten, in_model_order, record_hashes, with_identity,
)


# The payout a balance transaction was listed under: the live client's request names it
# (`GET /v1/balance_transactions?payout=po_...`), and a file saved from that request names it after
# a dash (`balance_transactions-po_....json`).
PAYOUT_IN_ORIGIN = r"(?:[?&]payout=|/balance_transactions[^/]*-)(po_[A-Za-z0-9]+)"


def _prepare(records: pd.DataFrame, table: str):
    issues: list[dict] = []
    payloads = records["payload"]
    flat = flatten(payloads)
    positions = pd.Series(records.index, index=records.index)
    return issues, payloads, flat, positions, FieldReader(flat, positions, table, issues)


def normalize_charges(records: pd.DataFrame, context: MapContext) -> Normalized:
    issues, payloads, flat, positions, read = _prepare(records, "payments")
    currency = read.currency("currency")

    payments = pd.DataFrame(index=flat.index)
    payments["version"] = record_hashes(payloads)
    payments["extra"] = extra_fields(payloads, {"id", "amount", "amount_refunded", "currency", "status", "captured",
                                                "created", "metadata"})
    payments["order_source_id"] = read.text("metadata.order_id")
    payments["kind"] = pd.Series("charge", index=flat.index, dtype="string")
    payments["status"] = read.text("status")
    payments["gateway"] = pd.Series("stripe", index=flat.index, dtype="string")
    payments["amount"] = read.api_minor_money("amount", currency, "amount")
    payments["currency"] = currency
    payments["refunded_amount"] = read.api_minor_money("amount_refunded", currency, "refunded_amount")
    payments["captured"] = read.boolean("captured")
    payments["created_at"] = read.timestamp("created", "created_at", unit="s")
    payments["processed_at"] = pd.Series(pd.NaT, index=flat.index, dtype="datetime64[ns, UTC]")
    payments = with_identity(payments, context, read.text("id"), positions)
    return Normalized(tables={"payments": in_model_order("payments", payments)}, issues=issues)


def normalize_refunds(records: pd.DataFrame, context: MapContext) -> Normalized:
    issues, payloads, flat, positions, read = _prepare(records, "refunds")
    currency = read.currency("currency")

    refunds = pd.DataFrame(index=flat.index)
    refunds["version"] = record_hashes(payloads)
    refunds["extra"] = extra_fields(payloads, {"id", "amount", "currency", "status", "reason", "charge", "created",
                                               "metadata"})
    refunds["order_source_id"] = read.text("metadata.order_id")
    refunds["payment_source_id"] = read.text("charge")
    refunds["amount"] = read.api_minor_money("amount", currency, "amount")
    refunds["currency"] = currency
    refunds["status"] = read.text("status")
    refunds["reason"] = read.text("reason")
    refunds["created_at"] = read.timestamp("created", "created_at", unit="s")
    refunds["processed_at"] = pd.Series(pd.NaT, index=flat.index, dtype="datetime64[ns, UTC]")
    refunds = with_identity(refunds, context, read.text("id"), positions)
    return Normalized(tables={"refunds": in_model_order("refunds", refunds)}, issues=issues)


def normalize_payouts(records: pd.DataFrame, context: MapContext) -> Normalized:
    issues, payloads, flat, positions, read = _prepare(records, "payouts")
    currency = read.currency("currency")

    payouts = pd.DataFrame(index=flat.index)
    payouts["version"] = record_hashes(payloads)
    payouts["extra"] = extra_fields(payloads, {"id", "amount", "currency", "status", "arrival_date", "created"})
    payouts["status"] = read.text("status")
    payouts["amount"] = read.api_minor_money("amount", currency, "amount")
    payouts["currency"] = currency
    payouts["payout_date"] = read.timestamp("arrival_date", "payout_date", unit="s")
    payouts["period_start"] = pd.Series(pd.NaT, index=flat.index, dtype="datetime64[ns, UTC]")
    payouts["period_end"] = pd.Series(pd.NaT, index=flat.index, dtype="datetime64[ns, UTC]")
    payouts["created_at"] = read.timestamp("created", "created_at", unit="s")
    payouts = with_identity(payouts, context, read.text("id"), positions)
    return Normalized(tables={"payouts": in_model_order("payouts", payouts)}, issues=issues)


def normalize_balance_transactions(records: pd.DataFrame, context: MapContext) -> Normalized:
    issues, payloads, flat, positions, read = _prepare(records, "payout_lines")
    currency = read.currency("currency")

    lines = pd.DataFrame(index=flat.index)
    lines["version"] = record_hashes(payloads)
    lines["extra"] = extra_fields(payloads, {"id", "amount", "fee", "net", "currency", "type", "source",
                                             "description", "created"})
    # A balance transaction does not name its payout. The live client lists them per payout, and the
    # request in the origin names it; so does the name of a file saved from such a request. Lines of
    # any other list file have no payout_source_id and are not attributed to a payout.
    origins = records["origin"] if "origin" in records else pd.Series(pd.NA, index=records.index, dtype="string")
    lines["payout_source_id"] = origins.astype("string").str.extract(PAYOUT_IN_ORIGIN, expand=False)
    lines["type"] = read.text("type")
    lines["amount"] = read.api_minor_money("amount", currency, "amount")
    lines["fee_amount"] = read.api_minor_money("fee", currency, "fee_amount")
    lines["net_amount"] = read.api_minor_money("net", currency, "net_amount")
    lines["currency"] = currency
    lines["source_object_id"] = read.text("source")
    lines["order_source_id"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    lines["sku"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    lines["description"] = read.text("description")
    lines["processed_at"] = read.timestamp("created", "processed_at", unit="s")
    lines = with_identity(lines, context, read.text("id"), positions)
    return Normalized(tables={"payout_lines": in_model_order("payout_lines", lines)}, issues=issues)
