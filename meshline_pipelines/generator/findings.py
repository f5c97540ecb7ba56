"""Cases planted in a generated week, each next to the count of them that the ledger shows.

Each count comes from the ledger alone (canonical rows, raw payloads, the audit trail), scoped to
the partitions of the generated week, so the bundled samples imported on other days do not count.
"""

from datetime import date, datetime, timedelta, timezone

import pandas as pd
import sqlalchemy as sa

from meshline_pipelines.ledger import Ledger
from meshline_pipelines.ledger.tables import audit_events
from meshline_pipelines.money import iso_exponent

SHOP_TIMEZONE = "America/New_York"


def _week_partitions(manifest: dict) -> set[str]:
    start = date.fromisoformat(manifest["start"])
    return {(start + timedelta(days=offset)).isoformat() for offset in range(manifest["days"])}


def _offset_change_window(manifest: dict) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """UTC bounds of 01:00 to 03:00 shop time on the day the shop's UTC offset changes, if any."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(SHOP_TIMEZONE)
    start = date.fromisoformat(manifest["start"])
    for offset in range(manifest["days"]):
        day = start + timedelta(days=offset)
        midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
        if midnight.utcoffset() != (midnight + timedelta(days=1)).utcoffset():
            first = datetime(day.year, day.month, day.day, 1, tzinfo=zone, fold=0)
            last = datetime(day.year, day.month, day.day, 3, tzinfo=zone, fold=1)
            return pd.Timestamp(first.astimezone(timezone.utc)), pd.Timestamp(last.astimezone(timezone.utc))
    return None


def found_counts(ledger: Ledger, manifest: dict) -> dict[str, int | None]:
    """Count, per planted kind, the records the ledger shows with that case."""
    week = _week_partitions(manifest)
    orders = ledger.read_table("orders", system="shopify")
    orders = orders[orders["partition_key"].isin(week)]
    zero_decimal = orders["total_presentment_currency"].map(iso_exponent) == 0
    foreign = orders["total_presentment_currency"] != orders["total_currency"]

    refunds = ledger.read_table("refunds", system="shopify")
    refunded = refunds.groupby("order_source_id")["amount"].sum()
    order_refunds = orders.set_index("source_id")["total_presentment_amount"].to_frame().join(
        refunded.rename("refunded"), how="inner")
    partial = (order_refunds["refunded"] > 0) & (order_refunds["refunded"] < order_refunds["total_presentment_amount"])

    with ledger.engine.connect() as connection:
        redelivered = connection.execute(
            sa.select(sa.func.count(sa.distinct(audit_events.c.record_id))).where(
                audit_events.c.system == "shopify", audit_events.c.entity == "orders",
                audit_events.c.step == "redelivered")
        ).scalar()

    exceptions = ledger.read_exceptions()
    unmapped = exceptions[(exceptions["kind"] == "unmapped_reference") & (exceptions["system"] == "shopify")
                          & exceptions["partition_key"].isin(week)]["record_id"].nunique()

    window = _offset_change_window(manifest)
    in_window = orders["created_at"].between(*window, inclusive="left") if window else pd.Series(False)

    balance = ledger.read_raw(system="stripe", stream="balance_transactions")
    balance = balance[balance["partition_key"].isin(week)]
    versions = balance.groupby("record_id")["content_hash"].nunique()
    lines = ledger.read_table("payout_lines", system="stripe").set_index("source_id")
    refiled = versions[versions > 1].index
    late_fee = lines.loc[lines.index.intersection(refiled), "fee_amount"].gt(0).sum()

    return {
        "missing_email": int(orders["email"].isna().sum()),
        "duplicate_delivery": int(redelivered),
        "unknown_sku": int(unmapped),
        "zero_decimal_currency": int((zero_decimal & foreign).sum()),
        "presentment_currency_differs": int((foreign & ~zero_decimal).sum()),
        "partial_refund": int(partial.sum()),
        "dst_offset": int(in_window.sum()),
        "late_fee": int(late_fee),
    }


HOW_FOUND = {
    "missing_email": "Shopify orders stored without an email",
    "duplicate_delivery": "orders whose identical content arrived again on a later day (audit: redelivered)",
    "unknown_sku": "orders with a line whose variant is in no stored product (unmapped_reference)",
    "zero_decimal_currency": "orders presented in a currency without minor unit (JPY), in a shop of another",
    "presentment_currency_differs": "orders presented in another currency with minor units",
    "partial_refund": "orders whose refunds add up to less than their total",
    "dst_offset": "orders created 01:00 to 03:00 shop time on the day the UTC offset changes",
    "late_fee": "Stripe balance transactions delivered again with their fee filled in",
}


def planted_and_found(ledger: Ledger, manifest: dict) -> pd.DataFrame:
    found = found_counts(ledger, manifest)
    return pd.DataFrame([
        {"kind": kind, "planted": planted["count"], "found": found.get(kind), "how": HOW_FOUND.get(kind, "")}
        for kind, planted in manifest["defects"].items()
    ])
