"""HubSpot CRM contacts to canonical customers.

A search result is `{"id", "properties": {...}, "createdAt", "updatedAt", "archived"}`, with every
property value as text or null. The email is kept as HubSpot returns it, only trimmed, because the
canonical row records the source's value. Code that matches customers across systems by email
must compare lower-cased emails itself.

Marketing consent comes from `hs_email_optout` ("Unsubscribed from all email"). The lifetime
value comes from the number property that `HUBSPOT_LIFETIME_VALUE_PROPERTY` names, by default
`total_revenue`, the sum of the contact's closed won deals. HubSpot reports it in the account's
company currency without naming it, so `HUBSPOT_CURRENCY` states that currency. Without it the
lifetime value stays unmapped, and its property is kept in `extra`.
"""

import logging
import os
import re

import pandas as pd

from meshline_pipelines.clients import SettingError
from meshline_pipelines.ledger.store import canonical_json
from meshline_pipelines.money import UnknownCurrencyError, iso_exponent
from meshline_pipelines.normalize import (
    FieldReader, MapContext, Normalized, flatten, in_model_order, timestamp_versions, with_identity,
)

log = logging.getLogger(__name__)

OPT_OUT_PROPERTY = "hs_email_optout"
DEFAULT_LIFETIME_VALUE_PROPERTY = "total_revenue"
LIFETIME_VALUE_PROPERTY_ENV = "HUBSPOT_LIFETIME_VALUE_PROPERTY"
CURRENCY_ENV = "HUBSPOT_CURRENCY"
# An internal name has no whitespace, so a value with spaces is a label such as "Total revenue".
# NOTE: only that is checked. Whether HubSpot's search rejects an unknown property or leaves it
# out of the results was not verified.
PROPERTY_NAME = re.compile(r"^\S+$")

# Top-level fields and contact properties that canonical columns map; the rest go to `extra`.
MAPPED_FIELDS = frozenset({"id", "properties", "createdAt", "updatedAt"})
MAPPED_PROPERTIES = frozenset({"email", "firstname", "lastname", "phone", "createdate", "lastmodifieddate",
                               "hs_object_id", OPT_OUT_PROPERTY, DEFAULT_LIFETIME_VALUE_PROPERTY})

# `email_marketing_state` of a contact by its `hs_email_optout`. "true" means the contact
# unsubscribed from all email, which is the storefront's `unsubscribed`. "false" only means the
# contact has not done that. HubSpot keeps consent per subscription type, so "false" is not
# `subscribed` and gets a state of its own.
OPTED_OUT = "unsubscribed"
NOT_OPTED_OUT = "not_opted_out"
CONSENT_STATES = {"true": OPTED_OUT, "false": NOT_OPTED_OUT}


def lifetime_value_property() -> str:
    """Return the name of the lifetime value property: HUBSPOT_LIFETIME_VALUE_PROPERTY, or else total_revenue."""
    name = (os.environ.get(LIFETIME_VALUE_PROPERTY_ENV) or "").strip() or DEFAULT_LIFETIME_VALUE_PROPERTY
    if not PROPERTY_NAME.match(name):
        raise SettingError(
            f"{LIFETIME_VALUE_PROPERTY_ENV}={name!r} is not a property's internal name, because it contains spaces: "
            "set the internal name, such as total_revenue, not the label HubSpot shows")
    return name


def company_currency() -> str | None:
    """Return HUBSPOT_CURRENCY as an upper-case ISO 4217 code, or None when it is not set."""
    raw = os.environ.get(CURRENCY_ENV)
    if raw is None or not raw.strip():
        return None
    code = raw.strip().upper()
    try:
        iso_exponent(code)
    except UnknownCurrencyError:
        raise SettingError(
            f"{CURRENCY_ENV}={raw!r} is not an ISO 4217 currency code with a minor unit: set it to the company "
            "currency of the HubSpot account, such as USD, or unset it to leave the lifetime value unmapped"
        ) from None
    return code


def _extra(payload, mapped_properties: frozenset[str]) -> str | None:
    """JSON of the unmapped top-level fields, and of the unmapped properties under `properties`."""
    if not isinstance(payload, dict):
        return None
    extra = {key: value for key, value in payload.items() if key not in MAPPED_FIELDS}
    properties = payload.get("properties")
    if isinstance(properties, dict):
        unmapped = {key: value for key, value in properties.items() if key not in mapped_properties}
        if unmapped:
            extra["properties"] = unmapped
    return canonical_json(extra)


def _blank_to_missing(values: pd.Series) -> pd.Series:
    """Trim text and treat an empty string as missing: HubSpot returns a cleared property as ""."""
    trimmed = values.str.strip()
    return trimmed.mask(trimmed == "")


def _consent_states(read: FieldReader) -> pd.Series:
    """Map `hs_email_optout` to `email_marketing_state`. A value other than true or false is an issue."""
    path = f"properties.{OPT_OUT_PROPERTY}"
    flags = _blank_to_missing(read.text(path)).str.lower()
    states = flags.map(CONSENT_STATES).astype("string")
    invalid = flags.notna() & states.isna()
    read._note(invalid, "email_marketing_state", path, "failed_validation", "type", read.text(path),
               "expected true or false")
    return states


def _lifetime_values(read: FieldReader, property_name: str, currency: str | None) -> tuple[pd.Series, pd.Series]:
    """Read the lifetime value in minor units of `currency`, and the currency. Both are missing when `currency` is None.

    A value with more decimals than the currency allows, or that is not a number, is an issue and
    is never rounded.
    """
    path = f"properties.{property_name}"
    if currency is None:
        if read.raw(path).notna().any():
            log.info("hubspot: %s is not set, so the lifetime value in %s is not mapped", CURRENCY_ENV, property_name)
        missing = pd.Series(pd.NA, index=read.flat.index, dtype="string")
        return pd.Series(pd.NA, index=read.flat.index, dtype="Int64"), missing
    currencies = pd.Series(currency, index=read.flat.index, dtype="string")
    amounts = read.money(path, currencies, "total_spent_amount")
    return amounts, currencies.where(amounts.notna())


def normalize_contacts(records: pd.DataFrame, context: MapContext) -> Normalized:
    issues: list[dict] = []
    payloads = records["payload"]
    flat = flatten(payloads)
    positions = pd.Series(records.index, index=records.index)
    read = FieldReader(flat, positions, "customers", issues)
    missing_text = pd.Series(pd.NA, index=flat.index, dtype="string")
    lifetime_property, currency = lifetime_value_property(), company_currency()
    mapped_properties = MAPPED_PROPERTIES - {DEFAULT_LIFETIME_VALUE_PROPERTY}
    if currency is not None:
        mapped_properties |= {lifetime_property}

    customers = pd.DataFrame(index=flat.index)
    customers["version"] = missing_text
    customers["extra"] = payloads.map(lambda payload: _extra(payload, mapped_properties)).astype("string")
    customers["email"] = _blank_to_missing(read.text("properties.email"))
    customers["phone"] = _blank_to_missing(read.text("properties.phone"))
    customers["first_name"] = _blank_to_missing(read.text("properties.firstname"))
    customers["last_name"] = _blank_to_missing(read.text("properties.lastname"))
    # HubSpot contacts have no account state or order count in these properties.
    customers["state"] = missing_text
    customers["email_marketing_state"] = _consent_states(read)
    customers["orders_count"] = pd.Series(pd.NA, index=flat.index, dtype="Int64")
    customers["total_spent_amount"], customers["total_spent_currency"] = _lifetime_values(
        read, lifetime_property, currency)
    # The object's own times first; the properties carry the same values and stand in when those are absent.
    customers["created_at"] = read.timestamp("createdAt", "created_at").fillna(
        read.timestamp("properties.createdate", "created_at"))
    customers["updated_at"] = read.timestamp("updatedAt", "updated_at").fillna(
        read.timestamp("properties.lastmodifieddate", "updated_at"))
    customers["version"] = timestamp_versions(customers["updated_at"])
    customers = with_identity(customers, context, read.text("id"), positions)
    return Normalized(tables={"customers": in_model_order("customers", customers)}, issues=issues)
