"""Payloads for HubSpot: canonical rows turned into the contact properties a batch upsert sends."""

from collections.abc import Mapping
from typing import Any

import pandas as pd

# Canonical customers column to HubSpot contact property.
CONTACT_PROPERTY_OF_COLUMN = {"email": "email", "first_name": "firstname", "last_name": "lastname", "phone": "phone"}


def _text(value: Any) -> str | None:
    """Return the value as trimmed text, or None when it is missing (None, NA, NaN) or blank."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    text = str(value).strip()
    return text or None


def contact_payload(customer: Mapping[str, Any]) -> dict[str, str]:
    """Build the HubSpot contact properties (email, firstname, lastname, phone) for a canonical customers row.

    A missing value is left out rather than sent as "", because HubSpot clears a property sent
    empty. So a name removed in the source system stays in HubSpot.
    Raises ValueError when the row has no email, because HubSpot contacts are upserted by email.
    """
    properties = {}
    for column, name in CONTACT_PROPERTY_OF_COLUMN.items():
        value = _text(customer.get(column))
        if value is not None:
            properties[name] = value
    email = properties.get("email")
    if email is None or "@" not in email:
        raise ValueError(f"customer {customer.get('source_id')!r} has no valid email ({customer.get('email')!r}); "
                         "HubSpot contacts are upserted by email, so this customer cannot be sent")
    return properties
