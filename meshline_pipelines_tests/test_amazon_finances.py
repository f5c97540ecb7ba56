"""Amazon financial events (listFinancialEvents bodies) mapped to payout lines and refunds."""

import pandas as pd

from meshline_pipelines_tests.amazon_finances import (
    charges, fees, financial_events_file, money, refund_event, refund_item, shipment_event, shipment_item,
)
from meshline_pipelines_tests.conftest import drop_file
from meshline_pipelines_tests.helpers import run

FILE_NAME = "finances-listFinancialEvents.json"
ORDER, REFUNDED_ORDER = "112-2222222-2222222", "111-1111111-1111111"


def _shipment() -> dict:
    item = shipment_item("22222222222201", "SKU-2", 2, charges(Principal="25.00", Tax="2.00"),
                         fees(Commission="-3.50", FBAPerUnitFulfillmentFee="-4.12"),
                         [{"PromotionType": "PromotionMetaDataDefinitionValue", "PromotionId": "PLM-1",
                           "PromotionAmount": money("-1.00")}])
    return shipment_event(ORDER, "2023-01-20T09:00:00Z", [item])


def _refund() -> dict:
    item = refund_item("33333333333301", "SKU-1", 1, charges(Principal="-5.00", Tax="-0.41"), fees(Commission="0.75"))
    return refund_event(REFUNDED_ORDER, "2023-01-22T11:30:00Z", [item])


def _load(import_dir, ledger, routing, content: bytes):
    drop_file(import_dir, "amazon", FILE_NAME, content=content)
    # Half of a two-event file may fail and the rest still be stored.
    return run("amazon", "financial_events", import_dir, ledger, routing, max_failure_rate=0.5)


def test_events_become_lines_and_refunds(ledger, routing, import_dir):
    result = _load(import_dir, ledger, routing, financial_events_file([_shipment()], [_refund()]))

    assert result.failed_records == 0
    lines = ledger.read_table("payout_lines", system="amazon").set_index("source_object_id")
    shipped = lines.loc["22222222222201"]
    # Gross 25.00 + 2.00 - 1.00 promotion; fees 3.50 + 4.12 as a positive cost.
    assert (shipped["amount"], shipped["fee_amount"], shipped["net_amount"]) == (2600, 762, 1838)
    assert shipped["type"] == "Order/financial event"
    assert pd.isna(shipped["payout_source_id"])
    assert (shipped["order_source_id"], shipped["sku"], shipped["currency"]) == (ORDER, "SKU-2", "USD")
    assert shipped["processed_at"] == pd.Timestamp("2023-01-20T09:00:00Z")
    refunded = lines.loc["33333333333301"]
    assert (refunded["amount"], refunded["fee_amount"], refunded["net_amount"]) == (-541, -75, -466)
    refunds = ledger.read_table("refunds", system="amazon")
    assert refunds[["order_source_id", "amount", "currency", "status"]].values.tolist() == [
        [REFUNDED_ORDER, 541, "USD", "posted"]]
    assert refunds.loc[0, "source_id"] == f"RefundEventList:{REFUNDED_ORDER}:2023-01-22T11:30:00Z:33333333333301"


def test_same_events_again_store_nothing_new(ledger, routing, import_dir):
    content = financial_events_file([_shipment()], [_refund()])
    _load(import_dir, ledger, routing, content)

    again = _load(import_dir, ledger, routing, content)

    assert again.failed_records == 0
    assert len(ledger.read_table("payout_lines", system="amazon")) == 2
    assert len(ledger.read_table("refunds", system="amazon")) == 1


def test_amount_that_is_not_a_number_is_named(ledger, routing, import_dir):
    broken = _shipment()
    broken["ShipmentItemList"][0]["ItemFeeList"][0]["FeeAmount"]["CurrencyAmount"] = "three fifty"

    result = _load(import_dir, ledger, routing, financial_events_file([broken], [_refund()]))

    assert result.failed_records == 1
    exception = ledger.read_exceptions().iloc[0]
    assert (exception["kind"], exception["value"]) == ("failed_validation", "three fifty")
    assert "FeeAmount.CurrencyAmount: invalid amount 'three fifty'" in exception["reason"]
    # The valid refund event is stored; the broken shipment event is held.
    assert ledger.read_table("payout_lines", system="amazon")["source_object_id"].tolist() == ["33333333333301"]


def test_item_in_two_currencies_is_named(ledger, routing, import_dir):
    mixed = _shipment()
    mixed["ShipmentItemList"][0]["ItemChargeList"][1]["ChargeAmount"]["CurrencyCode"] = "CAD"

    result = _load(import_dir, ledger, routing, financial_events_file([mixed], [_refund()]))

    assert result.failed_records == 1
    exception = ledger.read_exceptions().iloc[0]
    assert exception["rule"] == "payout_lines.amount:one_currency"
    assert exception["value"] == "CAD, USD"


def test_body_without_financial_events_is_unreadable(ledger, routing, import_dir):
    result = _load(import_dir, ledger, routing, b'{"payload": {"FinancialEventGroupList": []}}')

    assert result.unreadable_files == ["2026-11-24/amazon/finances-listFinancialEvents.json"]
    exception = ledger.read_exceptions().iloc[0]
    assert exception["kind"] == "connector_failure"
    assert "listFinancialEvents response body" in exception["reason"]


def test_withheld_facilitator_tax_counts_as_fee(ledger, routing, import_dir):
    item = shipment_item("55555555555501", "SKU-5", 1, charges(Principal="10.00", Tax="0.80"), fees(Commission="-1.50"))
    item["ItemTaxWithheldList"] = [{"TaxCollectionModel": "MarketplaceFacilitator", "TaxesWithheld": [
        {"ChargeType": "MarketplaceFacilitatorTax-Principal", "ChargeAmount": money("-0.80")}]}]

    result = _load(import_dir, ledger, routing,
                   financial_events_file([shipment_event(ORDER, "2023-01-20T09:00:00Z", [item])]))

    assert result.failed_records == 0
    line = ledger.read_table("payout_lines", system="amazon").iloc[0]
    assert (line["amount"], line["fee_amount"], line["net_amount"]) == (1080, 230, 850)
