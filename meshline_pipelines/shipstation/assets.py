"""ShipStation streams, declared once; each becomes a daily-partitioned asset in the `shipstation` group."""

from meshline_pipelines.shipstation import normalize
from meshline_pipelines.streams import Stream, id_at

SYSTEM = "shipstation"

STREAMS = [
    Stream(system=SYSTEM, name="shipments",
           description="ShipStation shipments (labels) with carrier, service, tracking number and ship date, "
           "linked to their order by ShipStation's order ID and the order key MeshLine sent.",
           tables=("shipments",), record_id=id_at("shipmentId"), normalize=normalize.normalize_shipments,
           source_fields={
               "shipments.source_id": "shipmentId", "shipments.order_source_id": "orderId",
               "shipments.order_key": "orderKey", "shipments.order_number": "orderNumber",
               "shipments.tracking_number": "trackingNumber", "shipments.carrier": "carrierCode",
               "shipments.service": "serviceCode", "shipments.ship_date": "shipDate",
               "shipments.voided": "voided", "shipments.created_at": "createDate",
           }),
]
