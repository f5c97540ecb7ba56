"""HubSpot streams, declared once; each becomes a daily-partitioned asset in the `hubspot` group."""

from meshline_pipelines.hubspot import normalize
from meshline_pipelines.streams import Stream, id_at

SYSTEM = "hubspot"

STREAMS = [
    Stream(
        system=SYSTEM,
        name="contacts",
        description="HubSpot contacts as customers, read through the CRM search API by last modification time.",
        tables=("customers",),
        record_id=id_at("id"),
        normalize=normalize.normalize_contacts,
        source_fields={"customers.source_id": "id", "customers.email": "properties.email",
                       "customers.phone": "properties.phone", "customers.first_name": "properties.firstname",
                       "customers.last_name": "properties.lastname", "customers.created_at": "createdAt",
                       "customers.updated_at": "updatedAt"},
    ),
]
