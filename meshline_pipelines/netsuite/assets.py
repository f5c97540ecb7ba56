"""NetSuite streams, declared once; each becomes a daily-partitioned asset in the `netsuite` group."""

from meshline_pipelines.netsuite import normalize
from meshline_pipelines.streams import Stream

SYSTEM = "netsuite"

STREAMS = [
    Stream(system=SYSTEM, name="inventory",
           description="NetSuite item availability per location, the source of truth for stock. "
                       "The partition is the day the available quantity last changed.",
           tables=("inventory_levels",), record_id=normalize.inventory_ids, normalize=normalize.normalize_inventory,
           source_fields={"inventory_levels.source_id": "item, location", "inventory_levels.sku": "itemid",
                          "inventory_levels.available": "quantityavailable",
                          "inventory_levels.updated_at": "lastmodifieddate"}),
]
