"""HubSpot CRM contacts to canonical customers.

A search result is `{"id", "properties": {...}, "createdAt", "updatedAt", "archived"}`, with every
property value as text or null. The email is kept as HubSpot returns it, only trimmed, because the
canonical row records the source's value. Code that matches customers across systems by email
must compare lower-cased emails itself.
"""

import pandas as pd

from meshline_pipelines.ledger.store import canonical_json
from meshline_pipelines.normalize import (
    FieldReader, MapContext, Normalized, flatten, in_model_order, timestamp_versions, with_identity,
)

# Top-level fields and contact properties that canonical columns map; the rest go to `extra`.
MAPPED_FIELDS = frozenset({"id", "properties", "createdAt", "updatedAt"})
MAPPED_PROPERTIES = frozenset({"email", "firstname", "lastname", "phone", "createdate", "lastmodifieddate",
                               "hs_object_id"})


def _extra(payload) -> str | None:
    """JSON of the unmapped top-level fields, and of the unmapped properties under `properties`."""
    if not isinstance(payload, dict):
        return None
    extra = {key: value for key, value in payload.items() if key not in MAPPED_FIELDS}
    properties = payload.get("properties")
    if isinstance(properties, dict):
        unmapped = {key: value for key, value in properties.items() if key not in MAPPED_PROPERTIES}
        if unmapped:
            extra["properties"] = unmapped
    return canonical_json(extra)


def _blank_to_missing(values: pd.Series) -> pd.Series:
    """Trim text and treat an empty string as missing: HubSpot returns a cleared property as ""."""
    trimmed = values.str.strip()
    return trimmed.mask(trimmed == "")


def normalize_contacts(records: pd.DataFrame, context: MapContext) -> Normalized:
    issues: list[dict] = []
    payloads = records["payload"]
    flat = flatten(payloads)
    positions = pd.Series(records.index, index=records.index)
    read = FieldReader(flat, positions, "customers", issues)
    missing_text = pd.Series(pd.NA, index=flat.index, dtype="string")

    customers = pd.DataFrame(index=flat.index)
    customers["version"] = missing_text
    customers["extra"] = payloads.map(_extra).astype("string")
    customers["email"] = _blank_to_missing(read.text("properties.email"))
    customers["phone"] = _blank_to_missing(read.text("properties.phone"))
    customers["first_name"] = _blank_to_missing(read.text("properties.firstname"))
    customers["last_name"] = _blank_to_missing(read.text("properties.lastname"))
    # HubSpot contacts have no account state, marketing consent in these properties, orders or spend.
    customers["state"] = missing_text
    customers["email_marketing_state"] = missing_text
    customers["orders_count"] = pd.Series(pd.NA, index=flat.index, dtype="Int64")
    customers["total_spent_amount"] = pd.Series(pd.NA, index=flat.index, dtype="Int64")
    customers["total_spent_currency"] = missing_text
    # The object's own times first; the properties carry the same values and stand in when those are absent.
    customers["created_at"] = read.timestamp("createdAt", "created_at").fillna(
        read.timestamp("properties.createdate", "created_at"))
    customers["updated_at"] = read.timestamp("updatedAt", "updated_at").fillna(
        read.timestamp("properties.lastmodifieddate", "updated_at"))
    customers["version"] = timestamp_versions(customers["updated_at"])
    customers = with_identity(customers, context, read.text("id"), positions)
    return Normalized(tables={"customers": in_model_order("customers", customers)}, issues=issues)
