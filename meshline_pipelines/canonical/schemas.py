"""The canonical model: one pandera DataFrameModel per ledger table.

Each model is the contract for its table: the column list, types, nullability and rules declared
here are what the ledger stores and what the asset checks enforce. Money is Int64 minor units with
the ISO currency code of its own money set; timestamps are UTC-aware. `extra` keeps, as JSON, the
source fields that no canonical column maps.
"""

from typing import Annotated

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from meshline_pipelines.money import ISO_EXPONENTS

SYSTEMS = ["shopify", "amazon", "stripe", "netsuite", "hubspot", "shipstation"]
CURRENCY_CODES = sorted(ISO_EXPONENTS)

UtcTimestamp = Annotated[pd.DatetimeTZDtype, "ns", "UTC"]
Text = pd.StringDtype
MinorUnits = pd.Int64Dtype


def _currency(nullable: bool = True):
    return pa.Field(nullable=nullable, isin=CURRENCY_CODES)


def _amount_has_currency(frame: pd.DataFrame, amount_columns: list[str]) -> pd.Series:
    """Check that each present amount has a currency: `<name>_amount` pairs with `<name>_currency`."""
    valid = pd.Series(True, index=frame.index)
    for amount_column in amount_columns:
        currency_column = amount_column.removesuffix("_amount") + "_currency"
        valid &= frame[amount_column].isna() | frame[currency_column].notna()
    return valid


class CanonicalRecord(pa.DataFrameModel):
    """Identity and version shared by every canonical row: (system, account, source_id)."""

    system: Series[Text] = pa.Field(isin=SYSTEMS)
    account: Series[Text] = pa.Field(str_length={"min_value": 1})
    source_id: Series[Text] = pa.Field(str_length={"min_value": 1})
    version: Series[Text] = pa.Field(str_length={"min_value": 1})
    extra: Series[Text] = pa.Field(nullable=True)

    class Config:
        strict = False  # bookkeeping columns such as the raw record position travel alongside


class Order(CanonicalRecord):
    order_number: Series[Text] = pa.Field(nullable=True)
    status: Series[Text] = pa.Field(nullable=True)
    fulfillment_status: Series[Text] = pa.Field(nullable=True)
    email: Series[Text] = pa.Field(nullable=True)
    customer_source_id: Series[Text] = pa.Field(nullable=True)
    marketplace_id: Series[Text] = pa.Field(nullable=True)
    created_at: Series[UtcTimestamp]
    updated_at: Series[UtcTimestamp]
    cancelled_at: Series[UtcTimestamp] = pa.Field(nullable=True)
    total_amount: Series[MinorUnits] = pa.Field(ge=0)
    total_currency: Series[Text] = _currency(nullable=False)
    total_presentment_amount: Series[MinorUnits] = pa.Field(nullable=True, ge=0)
    total_presentment_currency: Series[Text] = _currency()
    subtotal_amount: Series[MinorUnits] = pa.Field(nullable=True)
    subtotal_currency: Series[Text] = _currency()
    subtotal_presentment_amount: Series[MinorUnits] = pa.Field(nullable=True)
    subtotal_presentment_currency: Series[Text] = _currency()
    tax_amount: Series[MinorUnits] = pa.Field(nullable=True, ge=0)
    tax_currency: Series[Text] = _currency()
    tax_presentment_amount: Series[MinorUnits] = pa.Field(nullable=True, ge=0)
    tax_presentment_currency: Series[Text] = _currency()
    discounts_amount: Series[MinorUnits] = pa.Field(nullable=True, ge=0)
    discounts_currency: Series[Text] = _currency()
    discounts_presentment_amount: Series[MinorUnits] = pa.Field(nullable=True, ge=0)
    discounts_presentment_currency: Series[Text] = _currency()
    shipping_amount: Series[MinorUnits] = pa.Field(nullable=True, ge=0)
    shipping_currency: Series[Text] = _currency()
    shipping_presentment_amount: Series[MinorUnits] = pa.Field(nullable=True, ge=0)
    shipping_presentment_currency: Series[Text] = _currency()

    @pa.dataframe_check(name="amount_has_currency")
    def amounts_have_currencies(cls, frame: pd.DataFrame) -> pd.Series:
        return _amount_has_currency(frame, [c for c in frame.columns if c.endswith("_amount")])


class OrderLine(CanonicalRecord):
    order_source_id: Series[Text] = pa.Field(str_length={"min_value": 1})
    sku: Series[Text] = pa.Field(nullable=True)
    product_id: Series[Text] = pa.Field(nullable=True)
    variant_id: Series[Text] = pa.Field(nullable=True)
    title: Series[Text] = pa.Field(nullable=True)
    quantity: Series[pd.Int64Dtype] = pa.Field(ge=0)
    currency: Series[Text] = _currency(nullable=False)
    unit_price_amount: Series[MinorUnits] = pa.Field(nullable=True, ge=0)
    line_total_amount: Series[MinorUnits] = pa.Field(nullable=True, ge=0)
    discount_amount: Series[MinorUnits] = pa.Field(nullable=True, ge=0)
    tax_amount: Series[MinorUnits] = pa.Field(nullable=True, ge=0)


class Refund(CanonicalRecord):
    order_source_id: Series[Text] = pa.Field(nullable=True)
    payment_source_id: Series[Text] = pa.Field(nullable=True)
    amount: Series[MinorUnits] = pa.Field(ge=0)
    currency: Series[Text] = _currency(nullable=False)
    status: Series[Text] = pa.Field(nullable=True)
    reason: Series[Text] = pa.Field(nullable=True)
    created_at: Series[UtcTimestamp]
    processed_at: Series[UtcTimestamp] = pa.Field(nullable=True)


class Payment(CanonicalRecord):
    order_source_id: Series[Text] = pa.Field(nullable=True)
    kind: Series[Text]
    status: Series[Text] = pa.Field(nullable=True)
    gateway: Series[Text] = pa.Field(nullable=True)
    amount: Series[MinorUnits] = pa.Field(ge=0)
    currency: Series[Text] = _currency(nullable=False)
    refunded_amount: Series[MinorUnits] = pa.Field(nullable=True, ge=0)
    captured: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    created_at: Series[UtcTimestamp]
    processed_at: Series[UtcTimestamp] = pa.Field(nullable=True)


class Customer(CanonicalRecord):
    email: Series[Text] = pa.Field(nullable=True, str_matches=r"^[^@\s]+@[^@\s]+$")
    phone: Series[Text] = pa.Field(nullable=True)
    first_name: Series[Text] = pa.Field(nullable=True)
    last_name: Series[Text] = pa.Field(nullable=True)
    state: Series[Text] = pa.Field(nullable=True)
    email_marketing_state: Series[Text] = pa.Field(nullable=True)
    orders_count: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=0)
    total_spent_amount: Series[MinorUnits] = pa.Field(nullable=True, ge=0)
    total_spent_currency: Series[Text] = _currency()
    created_at: Series[UtcTimestamp]
    updated_at: Series[UtcTimestamp]

    @pa.dataframe_check(name="amount_has_currency")
    def amounts_have_currencies(cls, frame: pd.DataFrame) -> pd.Series:
        return _amount_has_currency(frame, ["total_spent_amount"])


class InventoryLevel(CanonicalRecord):
    sku: Series[Text] = pa.Field(nullable=True)
    inventory_item_id: Series[Text] = pa.Field(nullable=True)
    location_id: Series[Text] = pa.Field(nullable=True)
    condition: Series[Text] = pa.Field(nullable=True)
    available: Series[pd.Int64Dtype]
    updated_at: Series[UtcTimestamp] = pa.Field(nullable=True)

    @pa.dataframe_check(name="sku_or_inventory_item")
    def identifies_an_item(cls, frame: pd.DataFrame) -> pd.Series:
        return frame["sku"].notna() | frame["inventory_item_id"].notna()


class Payout(CanonicalRecord):
    status: Series[Text] = pa.Field(nullable=True)
    amount: Series[MinorUnits]
    currency: Series[Text] = _currency(nullable=False)
    payout_date: Series[UtcTimestamp] = pa.Field(nullable=True)
    period_start: Series[UtcTimestamp] = pa.Field(nullable=True)
    period_end: Series[UtcTimestamp] = pa.Field(nullable=True)
    created_at: Series[UtcTimestamp] = pa.Field(nullable=True)


class PayoutLine(CanonicalRecord):
    payout_source_id: Series[Text] = pa.Field(nullable=True)
    type: Series[Text]
    amount: Series[MinorUnits]
    fee_amount: Series[MinorUnits] = pa.Field(nullable=True)
    net_amount: Series[MinorUnits] = pa.Field(nullable=True)
    currency: Series[Text] = _currency(nullable=False)
    source_object_id: Series[Text] = pa.Field(nullable=True)
    order_source_id: Series[Text] = pa.Field(nullable=True)
    sku: Series[Text] = pa.Field(nullable=True)
    description: Series[Text] = pa.Field(nullable=True)
    processed_at: Series[UtcTimestamp] = pa.Field(nullable=True)


class ProductVariant(CanonicalRecord):
    product_id: Series[Text] = pa.Field(str_length={"min_value": 1})
    sku: Series[Text] = pa.Field(nullable=True)
    product_title: Series[Text] = pa.Field(nullable=True)
    variant_title: Series[Text] = pa.Field(nullable=True)
    inventory_item_id: Series[Text] = pa.Field(nullable=True)
    created_at: Series[UtcTimestamp] = pa.Field(nullable=True)
    updated_at: Series[UtcTimestamp]


class Shipment(CanonicalRecord):
    order_source_id: Series[Text] = pa.Field(nullable=True)  # the fulfillment system's own order ID
    order_key: Series[Text] = pa.Field(nullable=True)  # the key MeshLine sent the order under
    order_number: Series[Text] = pa.Field(nullable=True)
    tracking_number: Series[Text] = pa.Field(nullable=True)
    carrier: Series[Text] = pa.Field(nullable=True)
    service: Series[Text] = pa.Field(nullable=True)
    ship_date: Series[UtcTimestamp] = pa.Field(nullable=True)
    voided: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    created_at: Series[UtcTimestamp]


# Ledger table name -> model. The ledger's canonical tables are generated from these models.
CANONICAL_MODELS: dict[str, type[CanonicalRecord]] = {
    "orders": Order,
    "order_lines": OrderLine,
    "refunds": Refund,
    "payments": Payment,
    "customers": Customer,
    "inventory_levels": InventoryLevel,
    "payouts": Payout,
    "payout_lines": PayoutLine,
    "product_variants": ProductVariant,
    "shipments": Shipment,
}


def model_columns(model: type[CanonicalRecord]) -> list[str]:
    return list(model.to_schema().columns)


def empty_frame(model: type[CanonicalRecord]) -> pd.DataFrame:
    """Return a zero-row frame with the model's columns and dtypes."""
    schema = model.to_schema()
    return pd.DataFrame({name: pd.Series(dtype=column.dtype.type) for name, column in schema.columns.items()})
