"""Deliveries to HubSpot: the storefront's customers as contacts, upserted by email."""

import dagster as dg

from meshline_pipelines.delivery.assets import Delivery
from meshline_pipelines.hubspot.api import email_key
from meshline_pipelines.hubspot.outbound import contact_payload


def _contact(ledger, customer: dict, related) -> tuple[str, dict] | None:
    key = email_key(customer.get("email"))
    if key is None:
        # A customer without an email cannot be a HubSpot contact, whose identity is the email.
        return None
    return key, contact_payload(customer)


DELIVERIES = [
    Delivery(target="hubspot", entity="contact", name="contact_upserts",
             description="HubSpot contacts upserted by email from the storefront's customers of the partition, "
                         "through the outbox; dry run unless MESHLINE_DELIVERY_MODE=live.",
             source_table="customers", source_systems=("shopify",), upstream=(dg.AssetKey(["shopify", "customers"]),),
             build=_contact),
]
