"""Tests of the week generator.

They check that the same seed writes the same bytes, read each planted case back from the files,
check that money adds up exactly, and read every file with the project's file clients.
"""

import hashlib
import inspect
import json
import re
from collections import defaultdict
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from meshline_pipelines.amazon.client import AmazonFileClient
from meshline_pipelines.generator.week import decimal_text, generate_week, iter_shopify_order_pages, main
from meshline_pipelines.ingest import run_stream
from meshline_pipelines.reconciliation.payouts import reconcile_payouts
from meshline_pipelines.money import format_minor, iso_exponent
from meshline_pipelines.shopify.client import ShopifyFileClient
from meshline_pipelines.stripe.client import StripeFileClient
from meshline_pipelines_tests.helpers import stream

SHOPIFY_ORDERS = 300
AMAZON_ORDERS = 60
# Planted counts for 300 Shopify orders and the 60 Stripe charges that come with them.
EXPECTED_COUNTS = {
    "missing_email": 3,
    "duplicate_delivery": 1,
    "unknown_sku": 1,
    "zero_decimal_currency": 3,
    "presentment_currency_differs": 12,
    "partial_refund": 9,
    "dst_offset": 2,
    "late_fee": 1,
}
MONEY_SETS = ("subtotal_price_set", "total_discounts_set", "total_shipping_price_set", "total_tax_set",
              "total_price_set")


@pytest.fixture(scope="module")
def week(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("week") / "imports"
    manifest = generate_week(root, shopify_orders=SHOPIFY_ORDERS, amazon_orders=AMAZON_ORDERS)
    return root, manifest


def file_hashes(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def json_files(root: Path, system: str, pattern: str) -> list[tuple[Path, object]]:
    """Return (path, parsed body) of every matching file, day by day."""
    return [(path, json.loads(path.read_bytes())) for path in sorted(root.glob(f"*/{system}/{pattern}"))]


def delivered_orders(root: Path) -> list[tuple[Path, dict]]:
    return [(path, order) for path, body in json_files(root, "shopify", "orders*.json") for order in body["orders"]]


def unique_orders(root: Path) -> dict[int, dict]:
    return {order["id"]: order for _, order in delivered_orders(root)}


def planted_ids(manifest: dict, kind: str) -> set[str]:
    return {record["source_id"] for record in manifest["defects"][kind]["records"]}


def minor_units(money: dict) -> int:
    """Parse a Shopify money object, asserting that it has exactly its currency's decimals."""
    exponent = iso_exponent(money["currency_code"])
    pattern = r"-?\d+" + (rf"\.\d{{{exponent}}}" if exponent else "")
    assert re.fullmatch(pattern, money["amount"]), f"{money} does not have {exponent} decimals"
    return int(Decimal(money["amount"]).scaleb(exponent))


def side_total(money_sets: list[dict], side: str) -> int:
    return sum(minor_units(money_set[side]) for money_set in money_sets)


def test_same_seed_writes_same_bytes(tmp_path):
    first = generate_week(tmp_path / "first", shopify_orders=150, amazon_orders=50)
    second = generate_week(tmp_path / "second", shopify_orders=150, amazon_orders=50)

    assert first == second
    hashes = file_hashes(tmp_path / "first")
    assert len(hashes) > 100
    assert hashes == file_hashes(tmp_path / "second")


def test_other_seed_writes_other_bytes(tmp_path):
    generate_week(tmp_path / "seven", shopify_orders=150, amazon_orders=50, seed=7)
    generate_week(tmp_path / "eight", shopify_orders=150, amazon_orders=50, seed=8)

    assert file_hashes(tmp_path / "seven") != file_hashes(tmp_path / "eight")


def test_manifest_counts_match_records(week):
    root, manifest = week

    assert manifest == json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["orders"] == {"shopify": SHOPIFY_ORDERS, "amazon": AMAZON_ORDERS}
    assert set(manifest["defects"]) == set(EXPECTED_COUNTS)
    for kind, expected in EXPECTED_COUNTS.items():
        planted = manifest["defects"][kind]
        assert planted["count"] == len(planted["records"]), kind
        assert planted["count"] == expected, kind
        assert len(planted_ids(manifest, kind)) == expected, f"{kind} lists a record twice"


def test_planted_kinds_are_disjoint(week):
    _, manifest = week
    seen: dict[str, str] = {}

    for kind in manifest["defects"]:
        for source_id in planted_ids(manifest, kind):
            assert source_id not in seen, f"{source_id} is planted as {seen.get(source_id)} and {kind}"
            seen[source_id] = kind


def test_missing_email_read_back(week):
    root, manifest = week

    without_email = {str(order_id) for order_id, order in unique_orders(root).items()
                     if not order.get("email") and not order.get("contact_email")
                     and not (order.get("customer") or {}).get("email")}

    assert without_email == planted_ids(manifest, "missing_email")


def test_duplicate_delivery_read_back(week):
    root, manifest = week
    deliveries = defaultdict(list)
    for path, order in delivered_orders(root):
        deliveries[str(order["id"])].append(path)

    delivered_twice = {order_id for order_id, paths in deliveries.items() if len(paths) > 1}

    assert delivered_twice == planted_ids(manifest, "duplicate_delivery")
    for record in manifest["defects"]["duplicate_delivery"]["records"]:
        first, second = deliveries[record["source_id"]]
        assert first.parts[-3] < second.parts[-3]
        assert second.parts[-3] == record["redelivered_on"]
        order = next(order for _, order in delivered_orders(root) if str(order["id"]) == record["source_id"])
        text = json.dumps(order, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        assert first.read_bytes().count(text) == 1
        assert second.read_bytes().count(text) == 1


def test_unknown_sku_read_back(week):
    root, manifest = week
    variants = [variant for _, body in json_files(root, "shopify", "products*.json")
                for product in body["products"] for variant in product["variants"]]
    known_skus = {variant["sku"] for variant in variants}
    known_variant_ids = {variant["id"] for variant in variants}

    unknown = {str(order_id): line["sku"] for order_id, order in unique_orders(root).items()
               for line in order["line_items"]
               if line["sku"] not in known_skus and line["variant_id"] not in known_variant_ids}
    partly_known = [line for order in unique_orders(root).values() for line in order["line_items"]
                    if (line["sku"] in known_skus) != (line["variant_id"] in known_variant_ids)]

    assert set(unknown) == planted_ids(manifest, "unknown_sku")
    assert partly_known == []
    for record in manifest["defects"]["unknown_sku"]["records"]:
        assert unknown[record["source_id"]] == record["sku"]


def test_zero_decimal_currency_read_back(week):
    root, manifest = week
    orders = unique_orders(root)

    in_yen = {str(order_id) for order_id, order in orders.items() if order["presentment_currency"] == "JPY"}

    assert in_yen == planted_ids(manifest, "zero_decimal_currency")
    for order_id in in_yen:
        order = orders[int(order_id)]
        assert order["currency"] == "USD"
        for name in MONEY_SETS:
            assert "." not in order[name]["presentment_money"]["amount"], (order_id, name)
            assert "." in order[name]["shop_money"]["amount"], (order_id, name)


def test_presentment_currency_read_back(week):
    root, manifest = week
    orders = unique_orders(root).values()

    differs = {str(order["id"]) for order in orders
               if order["presentment_currency"] != order["currency"] and order["presentment_currency"] != "JPY"}
    currencies = {order["presentment_currency"] for order in orders if str(order["id"]) in differs}

    assert differs == planted_ids(manifest, "presentment_currency_differs")
    assert currencies <= {"EUR", "GBP", "CAD"}


def test_partial_refund_read_back(week):
    root, manifest = week
    partial, full = set(), set()

    for order_id, order in unique_orders(root).items():
        refunded = sum(minor_units({"amount": transaction["amount"], "currency_code": transaction["currency"]})
                       for refund in order["refunds"] for transaction in refund["transactions"]
                       if transaction["kind"] == "refund" and transaction["status"] == "success")
        total = minor_units(order["total_price_set"]["presentment_money"])
        if 0 < refunded < total:
            partial.add(str(order_id))
        elif refunded:
            full.add(str(order_id))
            assert refunded == total, order_id
            refunded_lines = {item["line_item_id"]: item["quantity"]
                              for refund in order["refunds"] for item in refund["refund_line_items"]}
            assert refunded_lines == {line["id"]: line["quantity"] for line in order["line_items"]}, order_id
            assert order["financial_status"] == "refunded"

    assert partial == planted_ids(manifest, "partial_refund")
    assert len(full) == 4
    assert not partial & full


def test_dst_offset_read_back(week):
    root, manifest = week

    created = {str(order_id): datetime.fromisoformat(order["created_at"])
               for order_id, order in unique_orders(root).items()}
    in_window = {order_id for order_id, moment in created.items()
                 if moment.date() == date(2026, 11, 1) and 1 <= moment.hour < 3}
    offsets = {created[order_id].strftime("%z") for order_id in in_window}

    assert in_window == planted_ids(manifest, "dst_offset")
    assert offsets == {"-0400", "-0500"}
    for order_id in in_window:
        assert created[order_id].astimezone(timezone.utc).hour in (5, 6, 7)


def test_late_fee_read_back(week):
    root, manifest = week
    deliveries = defaultdict(list)
    for path, body in json_files(root, "stripe", "balance_transactions*.json"):
        for transaction in body["data"]:
            deliveries[transaction["id"]].append((path.parts[-3], transaction))

    delivered_twice = {transaction_id for transaction_id, seen in deliveries.items() if len(seen) > 1}

    assert delivered_twice == planted_ids(manifest, "late_fee")
    for record in manifest["defects"]["late_fee"]["records"]:
        (first_day, first), (second_day, second) = deliveries[record["source_id"]]
        assert first["fee"] == 0
        assert first["fee_details"] == []
        assert first["net"] == first["amount"]
        assert second["fee"] > 0
        assert second["fee"] == sum(detail["amount"] for detail in second["fee_details"])
        assert second["net"] == second["amount"] - second["fee"]
        assert second["amount"] == first["amount"]
        assert (date.fromisoformat(second_day) - date.fromisoformat(first_day)).days == 1
        assert second_day == record["redelivered_on"]


def test_shopify_order_totals_add_up(week):
    root, _ = week

    for order_id, order in unique_orders(root).items():
        lines = order["line_items"]
        for side in ("shop_money", "presentment_money"):
            subtotal = minor_units(order["subtotal_price_set"][side])
            discounts = minor_units(order["total_discounts_set"][side])
            shipping = minor_units(order["total_shipping_price_set"][side])
            tax = minor_units(order["total_tax_set"][side])
            total = minor_units(order["total_price_set"][side])
            assert subtotal - discounts + shipping + tax == total, (order_id, side)
            assert subtotal == sum(minor_units(line["price_set"][side]) * line["quantity"] for line in lines)
            assert discounts == side_total([allocation["amount_set"] for line in lines
                                            for allocation in line["discount_allocations"]], side)
            assert tax == side_total([tax_line["price_set"] for line in lines for tax_line in line["tax_lines"]], side)
            assert shipping == side_total([shipping_line["price_set"] for shipping_line in order["shipping_lines"]],
                                          side)
        for name in MONEY_SETS:
            assert order[name]["shop_money"]["currency_code"] == order["currency"]
            assert order[name]["presentment_money"]["currency_code"] == order["presentment_currency"]


def test_amazon_order_totals_add_up(week):
    root, _ = week
    items = {body["payload"]["AmazonOrderId"]: body["payload"]["OrderItems"]
             for _, body in json_files(root, "amazon", "orders-getOrderItems*.json")}

    orders = [order for _, body in json_files(root, "amazon", "orders-getOrders*.json")
              for order in body["payload"]["Orders"]]

    assert len(orders) == AMAZON_ORDERS
    assert set(items) == {order["AmazonOrderId"] for order in orders}
    for order in orders:
        expected = sum(Decimal(item[name]["Amount"]) * sign for item in items[order["AmazonOrderId"]]
                       for name, sign in (("ItemPrice", 1), ("ItemTax", 1), ("ShippingPrice", 1),
                                          ("PromotionDiscount", -1)))
        assert Decimal(order["OrderTotal"]["Amount"]) == expected, order["AmazonOrderId"]


def test_shopify_payouts_equal_lines(week):
    root, _ = week
    net_by_payout = defaultdict(Decimal)
    for _, body in json_files(root, "shopify", "balance_transactions*.json"):
        for transaction in body["transactions"]:
            assert Decimal(transaction["net"]) == Decimal(transaction["amount"]) - Decimal(transaction["fee"])
            net_by_payout[transaction["payout_id"]] += Decimal(transaction["net"])

    payouts = {payout["id"]: Decimal(payout["amount"])
               for _, body in json_files(root, "shopify", "payouts*.json") for payout in body["payouts"]}

    assert len(payouts) == 7
    assert payouts == dict(net_by_payout)


def test_settlement_total_equals_rows(week):
    root, _ = week
    settlement = sorted(root.glob("*/amazon/GET_V2_SETTLEMENT_REPORT_DATA_FLAT_FILE*"))

    rows = [line.split("\t") for line in settlement[0].read_text(encoding="utf-8").splitlines()]
    header, summary, details = rows[0], dict(zip(rows[0], rows[1])), [dict(zip(rows[0], row)) for row in rows[2:]]
    amount_columns = [column for column in header if column.endswith("-amount") and column != "total-amount"]
    posted = sum(Decimal(row[column]) for row in details for column in amount_columns if row[column])

    assert len(settlement) == 1
    assert summary["transaction-type"] == ""
    assert len(details) > 0
    assert all(row["transaction-type"] == "Order" for row in details)
    assert Decimal(summary["total-amount"]) == posted


def test_settlement_orders_match_their_financial_events(week, ledger, routing):
    root, manifest = week
    accounts = manifest["accounts"]
    amazon = AmazonFileClient(seller_id=accounts["amazon_seller_id"], marketplace_id=accounts["amazon_marketplace_id"],
                              import_dir=str(root))
    for day in sorted(path.name for path in root.iterdir() if path.is_dir()):
        for name in ("orders", "order_items", "financial_events", "settlements"):
            run_stream(stream("amazon", name), amazon, ledger, routing, partition_key=day, run_id="test")

    outcome = reconcile_payouts(ledger, routing)

    by_transaction = defaultdict(list)
    for result in outcome.settlement_orders:
        by_transaction[result.transaction].append(result.status)
    assert len(by_transaction["Fees"]) == len(by_transaction["Order"]) > 0
    assert set(by_transaction["Fees"]) == set(by_transaction["Order"]) == {"matched"}


def test_stripe_payouts_equal_final_nets(week):
    root, _ = week
    final = {}
    for _, body in json_files(root, "stripe", "balance_transactions*.json"):
        for transaction in body["data"]:
            final[transaction["id"]] = transaction
    net_by_day = defaultdict(int)
    for transaction in final.values():
        if transaction["type"] in ("charge", "refund"):
            net_by_day[datetime.fromtimestamp(transaction["created"], timezone.utc).date()] += transaction["net"]

    payouts = [payout for _, body in json_files(root, "stripe", "payouts*.json") for payout in body["data"]]

    assert len(payouts) == 5
    for payout in payouts:
        paid_day = datetime.fromtimestamp(payout["created"], timezone.utc).date()
        assert payout["amount"] == net_by_day[date.fromordinal(paid_day.toordinal() - 2)]
        assert final[payout["balance_transaction"]]["amount"] == -payout["amount"]


def test_file_clients_read_every_file(week):
    root, manifest = week
    accounts = manifest["accounts"]
    clients = [
        ShopifyFileClient(shop=accounts["shopify"], import_dir=str(root)),
        AmazonFileClient(seller_id=accounts["amazon_seller_id"], marketplace_id=accounts["amazon_marketplace_id"],
                         import_dir=str(root)),
        StripeFileClient(account_id=accounts["stripe"], import_dir=str(root)),
    ]
    days = sorted(path.name for path in root.iterdir() if path.is_dir())
    read, records = set(), defaultdict(int)

    for client in clients:
        for stream in client.files:
            for day in days:
                for batch in client.extract(stream, day):
                    assert batch.error is None, f"{batch.origin}: {batch.error}"
                    read.add(batch.origin)
                    records[(client.system, stream)] += len(batch.records)

    written = {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}
    assert len(days) == 7
    assert written - read == {"manifest.json"}
    assert records[("shopify", "orders")] == SHOPIFY_ORDERS + EXPECTED_COUNTS["duplicate_delivery"]
    assert records[("amazon", "orders")] == AMAZON_ORDERS
    assert records[("amazon", "order_items")] == AMAZON_ORDERS
    assert records[("stripe", "charges")] == SHOPIFY_ORDERS // 5
    assert all(count > 0 for count in records.values()), dict(records)


def test_order_pages_are_lazy_and_unique():
    pages = iter_shopify_order_pages(1000, page_size=250)

    assert inspect.isgenerator(pages)
    collected = list(pages)
    assert [len(page) for page in collected] == [250, 250, 250, 250]
    assert len({order["id"] for page in collected for order in page}) == 1000
    assert next(iter_shopify_order_pages(1000, page_size=250)) == collected[0]


@pytest.mark.parametrize("currency", ["USD", "JPY", "KWD"])
@pytest.mark.parametrize("minor", [0, 1, -1, 5, 100, -345, 59894, 123456789])
def test_decimal_text_matches_format_minor(minor, currency):
    assert decimal_text(minor, currency) == format_minor(minor, currency)


def test_existing_output_rejected(tmp_path):
    generate_week(tmp_path, days=2, shopify_orders=150, amazon_orders=10)

    with pytest.raises(FileExistsError, match="manifest.json already exists"):
        generate_week(tmp_path, days=2, shopify_orders=150, amazon_orders=10)


def test_too_few_orders_rejected(tmp_path):
    with pytest.raises(ValueError, match="too small to plant"):
        generate_week(tmp_path, shopify_orders=5, amazon_orders=5)

    assert list(tmp_path.iterdir()) == []


def test_command_line_prints_counts(tmp_path, capsys):
    output_dir = tmp_path / "week"

    status = main([str(output_dir), "--shopify-orders", "150", "--amazon-orders", "50", "--seed", "3"])

    printed = capsys.readouterr().out
    manifest = json.loads((output_dir / "manifest.json").read_text(encoding="utf-8"))
    assert status == 0
    assert str(output_dir.resolve()) in printed
    assert manifest["seed"] == 3
    for kind, planted in manifest["defects"].items():
        assert re.search(rf"^\s+{kind}\s+{planted['count']}$", printed, re.MULTILINE), kind
