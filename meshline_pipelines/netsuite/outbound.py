"""Canonical rows to NetSuite REST record bodies for upserts by external ID.

Inputs are rows of the canonical `orders`, `order_lines` and `customers` tables as dicts. Money
is integer minor units with its ISO currency and goes out as an exact decimal string, so 59894
USD is sent as "598.94". The external ID that NetSuite upserts by is built from the row's
identity (system, account, source_id) by `external_id`, and the outbox sends the same value as
the record key.
"""

from collections.abc import Mapping
from typing import Any

import pandas as pd

from meshline_pipelines.delivery.base import record_key
from meshline_pipelines.money import format_minor

def external_id(system: str, account: str, source_id: str) -> str:
    """Build the NetSuite external ID of a canonical record, the key every target upserts by."""
    return record_key(system, account, source_id)


def _present(value: Any) -> bool:
    """Return whether a canonical value is set, because rows read from frames mark missing values as NA, NaT or NaN."""
    return value is not None and not (pd.api.types.is_scalar(value) and pd.isna(value))


def _date(value: Any) -> str:
    """Return the UTC calendar date of a canonical timestamp as NetSuite dates are written: 2026-11-24."""
    return pd.Timestamp(value).tz_convert("UTC").strftime("%Y-%m-%d")


def sales_order_payload(order: Mapping[str, Any], lines: list[Mapping[str, Any]], customer_external_id: str | None,
                        *, currency_ids: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Build a salesOrder body from a canonical order and its lines.

    `currency_ids` maps ISO codes to the internal IDs of the account's currency records, which is
    how NetSuite documents setting a reference ({"id": "1"}). Without it the currency goes as
    {"refName": "USD"}.
    NOTE: NetSuite documents refName as the name it returns for a reference. Whether it also
    accepts refName on a write has not been checked against a live account.
    Raises ValueError for a line without SKU or quantity, because the order would arrive incomplete.
    """
    currency = order["total_currency"]
    body: dict[str, Any] = {
        "externalId": external_id(order["system"], order["account"], order["source_id"]),
        # NOTE: tranDate is the order's UTC date, which can differ by a day from the date in the
        # NetSuite account's own time zone.
        "tranDate": _date(order["created_at"]),
        "currency": {"id": currency_ids[currency]} if currency_ids is not None else {"refName": currency},
        "memo": f"{order['system']} order {order.get('order_number') or order['source_id']} "
                f"(account {order['account']}, ID {order['source_id']})",
        "item": {"items": [_line_item(line, currency) for line in lines]},
    }
    if customer_external_id:
        body["entity"] = {"externalId": customer_external_id}
    # NOTE: without a customer NetSuite rejects the order, which reaches the exception queue with
    # NetSuite's message. No default customer for guest orders exists yet.
    if _present(order.get("order_number")):
        body["otherRefNum"] = str(order["order_number"])
    return body


def _line_item(line: Mapping[str, Any], order_currency: str) -> dict[str, Any]:
    sku = line.get("sku")
    if not _present(sku) or not str(sku).strip():
        raise ValueError(f"order line {line.get('source_id')!r} of order {line.get('order_source_id')!r} has no SKU: "
                         "NetSuite items are matched by external ID = SKU, so the line cannot be sent")
    if not _present(line.get("quantity")):
        raise ValueError(f"order line {line.get('source_id')!r} has no quantity")
    if line["currency"] != order_currency:
        raise ValueError(f"order line {line.get('source_id')!r} is in {line['currency']}, "
                         f"its order in {order_currency}: NetSuite takes one currency per order")
    # NOTE: items are matched by external ID, so the NetSuite catalogue must carry each SKU as its
    # items' external IDs. Line discounts, tax and shipping are not sent: NetSuite applies its own
    # tax setup, and the rate is the unit price before discounts.
    item: dict[str, Any] = {"item": {"externalId": str(sku)}, "quantity": int(line["quantity"])}
    if _present(line.get("unit_price_amount")):
        item["rate"] = format_minor(int(line["unit_price_amount"]), line["currency"])
    return item


def customer_payload(customer: Mapping[str, Any]) -> dict[str, Any]:
    """Build a customer body for an individual from a canonical customer, leaving out absent fields.

    NOTE: a OneWorld account also requires `subsidiary`, which the canonical customer does not have,
    so NetSuite rejects the customer there until a default subsidiary is added.
    """
    body: dict[str, Any] = {
        "externalId": external_id(customer["system"], customer["account"], customer["source_id"]),
        "isPerson": True,
    }
    for field, column in (("firstName", "first_name"), ("lastName", "last_name"), ("email", "email"),
                          ("phone", "phone")):
        if _present(customer.get(column)):
            body[field] = str(customer[column])
    return body
