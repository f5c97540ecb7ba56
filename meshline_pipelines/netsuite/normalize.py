"""NetSuite SuiteQL availability rows to canonical `inventory_levels`.

A row is one item at one location, as the `inventory` query of `netsuite.api` selects it: `item`
(internal ID), `itemid` (the item name, used as SKU), `location` (internal ID),
`quantityavailable` and `lastmodifieddate` ("2026-11-24 15:04:05", read as UTC like the client's
cursor). SuiteQL returns numbers as JSON numbers or as text depending on the field, and the
readers accept both.
"""

import pandas as pd

from meshline_pipelines.normalize import (
    FieldReader, MapContext, Normalized, extra_fields, flatten, in_model_order, timestamp_versions, with_identity,
)

MAPPED_FIELDS = {"item", "itemid", "location", "quantityavailable", "lastmodifieddate", "links"}


def inventory_ids(payloads: pd.Series) -> pd.Series:
    """Identify an availability row by item and location internal IDs: "812@3"."""
    flat = flatten(payloads)
    item = flat.get("item").astype("string")
    location = flat.get("location").astype("string")
    return (item + "@" + location).astype("string")


def normalize_inventory(records: pd.DataFrame, context: MapContext) -> Normalized:
    issues: list[dict] = []
    payloads = records["payload"]
    flat = flatten(payloads)
    positions = pd.Series(records.index, index=records.index)
    read = FieldReader(flat, positions, "inventory_levels", issues)

    levels = pd.DataFrame(index=flat.index)
    # `links` is SuiteQL's empty HATEOAS list on every row, so it is not kept as an extra field.
    levels["extra"] = extra_fields(payloads, MAPPED_FIELDS)
    levels["sku"] = read.text("itemid")
    levels["inventory_item_id"] = read.text("item")
    levels["location_id"] = read.text("location")
    levels["condition"] = pd.Series(pd.NA, index=flat.index, dtype="string")
    # NOTE: NetSuite allows fractional quantities with units of measure, but the canonical
    # `available` is a whole number, so such a row fails validation with the value named.
    levels["available"] = read.integer("quantityavailable", "available")
    levels["updated_at"] = read.timestamp("lastmodifieddate", "updated_at")
    levels.insert(0, "version", timestamp_versions(levels["updated_at"]))
    levels = with_identity(levels, context, inventory_ids(payloads), positions)
    return Normalized(tables={"inventory_levels": in_model_order("inventory_levels", levels)}, issues=issues)
