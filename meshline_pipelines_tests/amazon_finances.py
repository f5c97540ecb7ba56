"""Amazon Finances API v0 events for tests, in the shape of the API model (`ShipmentEvent`, `ShipmentItem`).

The bundled financesV0 sandbox responses hold no shipment or refund events, so these are built
field by field from the model's definitions. Amounts are JSON numbers, as Amazon sends them.
"""

import json
from decimal import Decimal


def money(amount: str, currency: str = "USD") -> dict:
    return {"CurrencyCode": currency, "CurrencyAmount": float(Decimal(amount))}


def charges(**amounts: str) -> list[dict]:
    return [{"ChargeType": charge_type, "ChargeAmount": money(amount)} for charge_type, amount in amounts.items()]


def fees(**amounts: str) -> list[dict]:
    return [{"FeeType": fee_type, "FeeAmount": money(amount)} for fee_type, amount in amounts.items()]


def shipment_event(order_id: str, posted: str, items: list[dict]) -> dict:
    return {"AmazonOrderId": order_id, "SellerOrderId": f"SO-{order_id[-4:]}", "MarketplaceName": "Amazon.com",
            "PostedDate": posted, "ShipmentItemList": items}


def shipment_item(item_id: str, sku: str, quantity: int, item_charges: list[dict], item_fees: list[dict],
                  promotions: list[dict] | None = None) -> dict:
    return {"SellerSKU": sku, "OrderItemId": item_id, "QuantityShipped": quantity, "ItemChargeList": item_charges,
            "ItemFeeList": item_fees, "PromotionList": promotions or []}


def refund_event(order_id: str, posted: str, items: list[dict]) -> dict:
    return {"AmazonOrderId": order_id, "SellerOrderId": f"SO-{order_id[-4:]}", "MarketplaceName": "Amazon.com",
            "PostedDate": posted, "ShipmentItemAdjustmentList": items}


def refund_item(adjustment_id: str, sku: str, quantity: int, item_charges: list[dict], item_fees: list[dict]) -> dict:
    return {"SellerSKU": sku, "OrderAdjustmentItemId": adjustment_id, "QuantityShipped": quantity,
            "ItemChargeAdjustmentList": item_charges, "ItemFeeAdjustmentList": item_fees}


def financial_events_body(shipments: list[dict] = (), refunds: list[dict] = (), next_token: str | None = None) -> dict:
    """A listFinancialEvents response body."""
    payload = {"FinancialEvents": {"ShipmentEventList": list(shipments), "RefundEventList": list(refunds),
                                   "ChargebackEventList": [], "ServiceFeeEventList": []}}
    if next_token:
        payload["NextToken"] = next_token
    return {"payload": payload}


def financial_events_file(shipments: list[dict] = (), refunds: list[dict] = ()) -> bytes:
    return json.dumps(financial_events_body(shipments, refunds)).encode()
