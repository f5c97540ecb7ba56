"""ShipStation API v1 shipments to canonical frames.

ShipStation gives dates as Pacific local times without an offset (see `api.SHIPSTATION_TIME_ZONE`),
so they are converted here with the same rule the client uses for its cursor. A shipment has no
update time, and voiding a label changes it in place, so its version is its content hash.
"""

import pandas as pd

from meshline_pipelines.normalize import (
    FieldReader, MapContext, Normalized, extra_fields, flatten, in_model_order, record_hashes, with_identity,
)
from meshline_pipelines.shipstation.api import parse_shipstation_time

SHIPMENT_FIELDS = {
    "shipmentId", "orderId", "orderKey", "orderNumber", "trackingNumber", "carrierCode", "serviceCode", "shipDate",
    "voided", "createDate",
}


def _local_times(read: FieldReader, path: str, column: str) -> pd.Series:
    """Convert ShipStation's Pacific local times to UTC, noting each value that is not a date or time."""
    values = read.raw(path)
    parsed = values.map(parse_shipstation_time)
    present = values.map(lambda value: value is not None and str(value).strip() != "").astype(bool)
    invalid = present & parsed.isna()
    read._note(invalid, column, path, "failed_validation", "timestamp", values.astype("string"),
               "expected a ShipStation date or time such as 2026-11-02T06:51:33.6270000 (Pacific time)")
    return pd.to_datetime(parsed.where(~invalid, None), utc=True).astype("datetime64[ns, UTC]")


def normalize_shipments(records: pd.DataFrame, context: MapContext) -> Normalized:
    issues: list[dict] = []
    payloads = records["payload"]
    flat = flatten(payloads)
    positions = pd.Series(records.index, index=records.index)
    read = FieldReader(flat, positions, "shipments", issues)

    shipments = pd.DataFrame(index=flat.index)
    shipments["version"] = record_hashes(payloads)
    shipments["extra"] = extra_fields(payloads, SHIPMENT_FIELDS)
    shipments["order_source_id"] = read.text("orderId")
    shipments["order_key"] = read.text("orderKey")
    shipments["order_number"] = read.text("orderNumber")
    shipments["tracking_number"] = read.text("trackingNumber")
    shipments["carrier"] = read.text("carrierCode")
    shipments["service"] = read.text("serviceCode")
    # A ship date is a calendar day, stored as the UTC time of midnight Pacific time on that day.
    shipments["ship_date"] = _local_times(read, "shipDate", "ship_date")
    shipments["voided"] = read.boolean("voided")
    shipments["created_at"] = _local_times(read, "createDate", "created_at")
    shipments = with_identity(shipments, context, read.text("shipmentId"), positions)
    return Normalized(tables={"shipments": in_model_order("shipments", shipments)}, issues=issues)
