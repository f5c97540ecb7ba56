"""Canonical orders to ShipStation API v1 order payloads for POST /orders/createorders.

Money leaves the ledger as integer minor units and goes to ShipStation as decimal numbers in the
order's currency. ShipStation v1 orders carry no currency field, so the amounts are read in the
currency of the ShipStation store, and every line must share the order's currency.

Addresses: the canonical order has no address columns. Shopify REST orders keep
`shipping_address` and `billing_address` in `extra`, and those are used when present. Otherwise
the address objects are sent with every field empty, never with invented values: the order then
shows in ShipStation with a missing address, which must be completed before a label is bought.
"""

import json
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pandas as pd

from meshline_pipelines.money import format_minor
from meshline_pipelines.shipstation.api import shipstation_local_time

ORDER_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
ADDRESS_FIELDS = ("name", "company", "street1", "street2", "street3", "city", "state", "postalCode", "country",
                  "phone", "residential")
# ShipStation address field -> Shopify address fields, REST name first, then the GraphQL name.
SHOPIFY_ADDRESS_FIELDS = {
    "company": ("company",),
    "street1": ("address1",),
    "street2": ("address2",),
    "city": ("city",),
    "state": ("province_code", "provinceCode", "province"),
    "postalCode": ("zip",),
    "country": ("country_code", "countryCodeV2", "countryCode"),
    "phone": ("phone",),
}


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (str, dict, list)):
        return False
    return bool(pd.isna(value))


def _text(value: Any) -> str | None:
    if _missing(value):
        return None
    text = str(value).strip()
    return text or None


def _utc(value: Any) -> datetime | None:
    """Read a canonical timestamp (pandas Timestamp, datetime or ISO 8601 text), taking a naive one as UTC."""
    if _missing(value):
        return None
    moment = pd.Timestamp(value)
    if moment.tzinfo is None:
        moment = moment.tz_localize(timezone.utc)
    return moment.to_pydatetime()


def _amount(amount: Any, currency: str | None, column: str) -> float | None:
    """Convert minor units to a JSON number. The float's shortest repr is the exact decimal, such as 598.94."""
    if _missing(amount):
        return None
    if currency is None:
        raise ValueError(f"{column} is {amount} but its currency is missing")
    return float(Decimal(format_minor(int(amount), currency)))


def _order_amount(order: dict, name: str, currency: str) -> float | None:
    """Convert the order's `<name>_amount`, which must be in the order total's currency."""
    own_currency = _text(order.get(f"{name}_currency"))
    if own_currency is not None and own_currency.upper() != currency:
        raise ValueError(f"order {order.get('source_id')}: {name}_amount is in {own_currency} but the total is in "
                         f"{currency}. ShipStation orders have a single currency.")
    return _amount(order.get(f"{name}_amount"), currency, f"{name}_amount")


def _extra(order: dict) -> dict:
    raw = order.get("extra")
    if isinstance(raw, dict):
        return raw
    if _missing(raw):
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _address(source: Any) -> dict[str, Any] | None:
    """Map a Shopify address (REST or GraphQL field names) to a ShipStation address, or None when absent."""
    if not isinstance(source, dict) or not source:
        return None
    address: dict[str, Any] = dict.fromkeys(ADDRESS_FIELDS)
    full_name = " ".join(part for part in (_text(source.get("first_name")), _text(source.get("last_name"))) if part)
    address["name"] = _text(source.get("name")) or full_name or None
    for field, names in SHOPIFY_ADDRESS_FIELDS.items():
        address[field] = next((_text(source.get(name)) for name in names if _text(source.get(name))), None)
    return address


def _empty_address(name: str | None) -> dict[str, Any]:
    # NOTE: ShipStation requires billTo and shipTo. Whether it accepts them with every field empty
    # is untested against the live API, and a rejection there would name the field.
    return {**dict.fromkeys(ADDRESS_FIELDS), "name": name}


def _item(line: dict, currency: str) -> dict[str, Any]:
    line_currency = _text(line.get("currency"))
    if line_currency is not None and line_currency.upper() != currency:
        raise ValueError(f"order line {line.get('source_id')} is in {line_currency} but the order is in {currency}. "
                         "ShipStation orders have a single currency.")
    quantity = line.get("quantity")
    return {
        "lineItemKey": _text(line.get("source_id")),  # lets ShipStation keep the same item across updates
        "sku": _text(line.get("sku")),
        "name": _text(line.get("title")) or _text(line.get("sku")),
        "quantity": None if _missing(quantity) else int(quantity),
        "unitPrice": _amount(line.get("unit_price_amount"), currency, "unit_price_amount"),
        "taxAmount": _amount(line.get("tax_amount"), currency, "tax_amount"),
    }


def order_payload(order: dict, lines: list[dict], order_key: str) -> dict[str, Any]:
    """Build the createorders payload of one canonical order and its lines, upserted by `order_key`.

    The status is `cancelled` when the order has a cancellation time, else `awaiting_shipment`.
    `amountPaid` is the order total.
    """
    if not order_key:
        raise ValueError("an order key is required: ShipStation updates the order with the same key")
    created_at = _utc(order.get("created_at"))
    if created_at is None:
        raise ValueError(f"order {order.get('source_id')} has no created_at, which becomes ShipStation's orderDate")
    currency = _text(order.get("total_currency"))
    if currency is None:
        raise ValueError(f"order {order.get('source_id')} has no total_currency")
    currency = currency.upper()

    extra = _extra(order)
    ship_to = _address(extra.get("shipping_address") or extra.get("shippingAddress"))
    bill_to = _address(extra.get("billing_address") or extra.get("billingAddress"))
    if ship_to is None:
        ship_to = _empty_address(bill_to["name"] if bill_to else None)
    if bill_to is None:
        bill_to = _empty_address(ship_to["name"])

    cancelled = _utc(order.get("cancelled_at")) is not None
    return {
        "orderNumber": _text(order.get("order_number")) or _text(order.get("source_id")),
        "orderKey": order_key,
        "orderDate": shipstation_local_time(created_at, ORDER_DATE_FORMAT),
        "orderStatus": "cancelled" if cancelled else "awaiting_shipment",
        "customerEmail": _text(order.get("email")),
        "billTo": bill_to,
        "shipTo": ship_to,
        "items": [_item(line, currency) for line in lines],
        "amountPaid": _order_amount(order, "total", currency),
        "taxAmount": _order_amount(order, "tax", currency),
        "shippingAmount": _order_amount(order, "shipping", currency),
    }
