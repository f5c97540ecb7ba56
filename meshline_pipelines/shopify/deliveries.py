"""Deliveries to Shopify: stock set from the source of truth for stock (NetSuite).

For each SKU whose NetSuite availability changed in the partition, the NetSuite total across its
locations is set as the available quantity of the Shopify inventory item with that SKU, at the
location SHOPIFY_INVENTORY_LOCATION_ID.
"""

import os

import dagster as dg
import pandas as pd

from meshline_pipelines.delivery.assets import Delivery
from meshline_pipelines.ledger import Ledger

LOCATION_ENV = "SHOPIFY_INVENTORY_LOCATION_ID"
SOURCE_OF_TRUTH = "netsuite"


def _stock_by_sku(ledger: Ledger, partition_key: str) -> pd.DataFrame:
    """Return one row per SKU with NetSuite changes in the partition: its total across locations."""
    levels = ledger.read_table("inventory_levels")
    truth = levels[(levels["system"] == SOURCE_OF_TRUTH) & levels["sku"].notna()]
    changed = set(truth.loc[truth["partition_key"] == partition_key, "sku"])
    totals = truth[truth["sku"].isin(changed)].groupby(["system", "account", "sku"]).agg(
        available=("available", "sum"), updated_at=("updated_at", "max")).reset_index()
    return totals.assign(source_id=totals["sku"], version=totals["updated_at"].map(lambda moment: moment.isoformat()),
                         partition_key=partition_key)


def _inventory_set(ledger: Ledger, stock: dict, related: dict[str, pd.DataFrame]) -> tuple[str, dict] | None:
    variants = related["product_variants"]
    items = variants.loc[(variants["system"] == "shopify") & (variants["sku"] == stock["sku"]), "inventory_item_id"]
    if items.dropna().empty:
        # Not sold in the storefront.
        return None
    location = os.environ.get(LOCATION_ENV)
    if not location or not location.isdigit():
        raise ValueError(f"{LOCATION_ENV} is {location!r}: set it to the numeric ID of the Shopify location whose "
                         "stock NetSuite sets")
    item = items.dropna().iloc[0]
    payload = {"location_id": int(location), "inventory_item_id": int(item), "available": int(stock["available"])}
    return f"{item}@{location}", payload


DELIVERIES = [
    Delivery(target="shopify", entity="inventory_level", name="inventory_sets",
             description="Shopify stock set per SKU from NetSuite, the source of truth for stock, through the outbox; "
                         "dry run unless MESHLINE_DELIVERY_MODE=live. Defined when NetSuite is read "
                         "(NETSUITE_MODE=api).",
             source_table="inventory_levels", source_systems=(SOURCE_OF_TRUTH,),
             upstream=(dg.AssetKey(["netsuite", "inventory"]),), build=_inventory_set, needs=("product_variants",),
             rows=_stock_by_sku),
]
