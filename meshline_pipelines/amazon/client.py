"""Amazon clients. The file client reads Selling Partner API responses and report files."""

from typing import ClassVar

from pydantic import Field

from meshline_pipelines.amazon import finances
from meshline_pipelines.sources.files import (
    FilePattern, FileSnapshotClient, json_list_at, json_object_at, tab_separated,
)

SETTLEMENT_COLUMNS = ("settlement-id", "total-amount", "currency", "transaction-type")
FBA_INVENTORY_COLUMNS = ("seller-sku", "fulfillment-channel-sku", "Warehouse-Condition-code", "Quantity Available")


# Top-level fields of the Orders API v0 `Order` and `OrderItemsList` models. The bundled samples
# show only some of them, and a field listed here is not schema drift.
DOCUMENTED_FIELDS = {
    "orders": frozenset({
        "AmazonOrderId", "AutomatedShippingSettings", "BuyerInfo", "BuyerInvoicePreference", "BuyerTaxInformation",
        "CbaDisplayableShippingLabel", "DefaultShipFromLocationAddress", "EarliestDeliveryDate", "EarliestShipDate",
        "EasyShipShipmentStatus", "ElectronicInvoiceStatus", "FulfillmentChannel", "FulfillmentInstruction",
        "HasRegulatedItems", "IsAccessPointOrder", "IsBusinessOrder", "IsEstimatedShipDateSet",
        "IsGlobalExpressEnabled", "IsIBA", "IsISPU", "IsPremiumOrder", "IsPrime", "IsReplacementOrder", "IsSoldByAB",
        "LastUpdateDate", "LatestDeliveryDate", "LatestShipDate", "MarketplaceId", "MarketplaceTaxInfo",
        "NumberOfItemsShipped", "NumberOfItemsUnshipped", "OrderChannel", "OrderStatus", "OrderTotal", "OrderType",
        "PaymentExecutionDetail", "PaymentMethod", "PaymentMethodDetails", "PromiseResponseDueDate", "PurchaseDate",
        "ReplacedOrderId", "SalesChannel", "SellerDisplayName", "SellerOrderId", "ShipServiceLevel",
        "ShipmentServiceLevelCategory", "ShippingAddress",
    }),
    "order_items": frozenset({"AmazonOrderId", "NextToken", "OrderItems"}),
    "financial_events": finances.DOCUMENTED_FIELDS,
}


class AmazonFileClient(FileSnapshotClient):
    """SP-API getOrders, getOrder, getOrderItems and listFinancialEvents bodies; settlement and FBA inventory reports.

    Reports are tab-separated whatever their file extension; SP-API delivers some in ISO-8859-1.
    """

    seller_id: str = Field(description="The Amazon selling partner (merchant) ID.")
    marketplace_id: str = Field(description="The marketplace the client reads, e.g. ATVPDKIKX0DER for amazon.com.")

    system: ClassVar[str] = "amazon"
    documented_fields: ClassVar[dict[str, frozenset[str]]] = DOCUMENTED_FIELDS
    files: ClassVar[dict[str, list[FilePattern]]] = {
        "orders": [
            FilePattern("orders-getOrders*.json", json_list_at("payload", "Orders")),
            FilePattern("orders-getOrder.json", json_object_at("payload")),
            FilePattern("orders-getOrder-*.json", json_object_at("payload")),
        ],
        "order_items": [FilePattern("orders-getOrderItems*.json", json_object_at("payload"))],
        "settlements": [FilePattern("*SETTLEMENT_REPORT_DATA_FLAT_FILE*", tab_separated(SETTLEMENT_COLUMNS))],
        "inventory": [FilePattern("*AFN_INVENTORY_DATA*", tab_separated(FBA_INVENTORY_COLUMNS))],
        "financial_events": [FilePattern("finances-listFinancialEvents*.json", finances.read_financial_events)],
    }

    @property
    def account(self) -> str:
        return f"{self.seller_id}/{self.marketplace_id}"
