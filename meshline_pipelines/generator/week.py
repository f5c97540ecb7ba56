"""Generate a week of ecommerce operations as the files Shopify, Amazon and Stripe deliver.

`generate_week` writes the import-folder layout `<output_dir>/<YYYY-MM-DD>/<system>/<file>` that the
file clients read. It plants known problem cases at fixed counts and lists each planted record in
`manifest.json`. Every random choice comes from one `random.Random(seed)`, so the same arguments
write byte-identical files.

Money is built from integer minor units and rendered with the ISO 4217 exponent of its currency.
Shopify times carry the shop's UTC offset (America/New_York), Amazon times are UTC and Stripe times
are Unix seconds. A Shopify day is the shop's local day; Amazon and Stripe days are UTC days.

Usage: python -m meshline_pipelines.generator.week OUTPUT_DIR [--seed N] [--shopify-orders N] ...
"""

import argparse
import base64
import csv
import io
import json
import random
import sys
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from meshline_pipelines.money import iso_exponent

DEFAULT_START = date(2026, 10, 26)

SHOP_DOMAIN = "meshline-outfitters.myshopify.com"
SHOP_CURRENCY = "USD"
SHOP_TIMEZONE = ZoneInfo("America/New_York")
SHOP_LOCATION_ID = 74_120_330_001
VENDOR = "MeshLine Outfitters"

AMAZON_SELLER_ID = "A2MESHLINE7GEN"
AMAZON_MARKETPLACE_ID = "ATVPDKIKX0DER"  # amazon.com
AMAZON_CURRENCY = "USD"

STRIPE_ACCOUNT_ID = "acct_1MeshLineGen7000"
STRIPE_CURRENCY = "usd"

# The maximum number of records each API returns per request.
SHOPIFY_PAGE_SIZE = 250
AMAZON_ORDERS_PAGE_SIZE = 100
STRIPE_PAGE_SIZE = 100

# Planted cases per 1000 Shopify orders (late_fee: per 1000 Stripe charges). Each kind gets at
# least one record when the week allows it: duplicate_delivery and late_fee need a later day, and
# dst_offset needs a day on which the shop's UTC offset changes.
DEFECTS_PER_THOUSAND = {
    "missing_email": 10,
    "duplicate_delivery": 5,
    "unknown_sku": 5,
    "zero_decimal_currency": 10,
    "presentment_currency_differs": 40,
    "partial_refund": 30,
    "dst_offset": 5,
    "late_fee": 20,
}
MIN_DST_ORDERS = 2  # at least one on each side of the offset change

# Each planted record carries exactly one kind. JPY orders are listed under zero_decimal_currency
# only, although their presentment currency also differs from the shop's. Keeping the kinds
# disjoint makes the manifest's counts add up to the number of planted records.
DEFECT_DESCRIPTIONS = {
    "missing_email": "Shopify orders with email and contact_email null and a customer without email.",
    "duplicate_delivery": "Shopify orders delivered again, byte-identical, in the next day's orders file.",
    "unknown_sku": "Shopify orders with a line whose sku and variant_id are in no products file (a deleted variant).",
    "zero_decimal_currency": "Shopify orders presented in JPY, which has no minor unit, in a USD shop. "
                             "They are not listed again under presentment_currency_differs.",
    "presentment_currency_differs": "Shopify orders presented in EUR, GBP or CAD in a USD shop.",
    "partial_refund": "Shopify orders with a refund smaller than the order total.",
    "dst_offset": "Shopify orders created from one hour before to two hours after the shop's UTC offset "
                  "changes (01:00 to 03:00 local on a US fall-back day), on both sides, so their offsets differ.",
    "late_fee": "Stripe balance transactions first delivered with fee 0 and no fee_details, then delivered "
                "again the next day with the fee and the recomputed net.",
}

SHOPIFY_ORDERS_PER_STRIPE_CHARGE = 5  # Stripe charges come from the brand's wholesale portal
FULL_REFUNDS_PER_THOUSAND = 15  # cancelled orders refunded in full, which are not a planted case
FULL_REFUND_SHARE = 0.015  # the same share, drawn per order by iter_shopify_order_pages
DISCOUNT_SHARE = 0.25
EXPRESS_SHIPPING_SHARE = 0.1
STRIPE_REFUND_SHARE = 0.04

# Assumed fees and rates that give realistic amounts. They are not any provider's price list.
SHOPIFY_PAYMENTS_FEE = (Decimal("0.029"), 30)
SHOPIFY_PAYMENTS_FOREIGN_FEE = (Decimal("0.039"), 30)
STRIPE_FEE = (Decimal("0.029"), 30)
AMAZON_REFERRAL_FEE = Decimal("0.15")
FREE_SHIPPING_FROM = 7500
STANDARD_SHIPPING = 695
EXPRESS_SHIPPING = 1495
AMAZON_SHIPPING = 599

# Presentment units per US dollar, fixed for the week.
EXCHANGE_RATES = {
    "USD": Decimal("1"), "EUR": Decimal("0.92"), "GBP": Decimal("0.79"), "CAD": Decimal("1.38"),
    "JPY": Decimal("152"),
}
OTHER_PRESENTMENT_CURRENCIES = ("EUR", "GBP", "CAD")

DISCOUNT_CODES = (("FALL10", Decimal("0.10")), ("WELCOME15", Decimal("0.15")))

# (title, SKU code, product type, price in cents, grams, colors, sizes). No sizes means one size.
PRODUCTS = (
    ("Merino Crew Tee", "MCT", "T-Shirts", 4800, 180, ("Black", "Navy", "Sage"), ("S", "M", "L", "XL")),
    ("Trail Hoodie", "THD", "Hoodies", 8900, 520, ("Charcoal", "Ochre"), ("S", "M", "L", "XL")),
    ("Packable Rain Shell", "PRS", "Jackets", 14900, 310, ("Black", "Signal Red"), ("S", "M", "L")),
    ("Wool Hiking Socks", "WHS", "Socks", 1800, 90, ("Grey",), ("S/M", "L/XL")),
    ("Canvas Tote", "CTB", "Bags", 3200, 400, ("Natural", "Olive"), ()),
    ("Insulated Bottle 750 ml", "IBT", "Drinkware", 3400, 380, ("Steel", "Moss", "Sand"), ()),
    ("Fleece Beanie", "FBN", "Hats", 2600, 85, ("Black", "Rust"), ()),
    ("Running Shorts", "RSH", "Shorts", 5200, 140, ("Black", "Navy"), ("S", "M", "L")),
    ("Down Vest", "DVS", "Jackets", 16900, 350, ("Black",), ("S", "M", "L", "XL")),
    ("Enamel Camp Mug", "ECM", "Drinkware", 1600, 260, ("White", "Blue"), ()),
)
# Variants deleted from the catalog; orders that still reference them are the unknown_sku case.
RETIRED_VARIANTS = (("MCT", "Rust", "M"), ("MCT", "Rust", "L"), ("CTB", "Red", ""))

FIRST_NAMES = ("Ava", "Liam", "Maya", "Noah", "Zoe", "Ethan", "Nora", "Lucas", "Ivy", "Mateo", "Chloe",
               "Owen", "Lena", "Caleb", "Priya", "Jonas", "Sofia", "Ravi", "Hana", "Diego")
LAST_NAMES = ("Carter", "Nguyen", "Okafor", "Schmidt", "Rossi", "Tanaka", "Haddad", "Kowalski", "Silva",
              "Murphy", "Larsen", "Dubois", "Park", "Moreau", "Ibrahim", "Walsh", "Fischer", "Reyes")
STREETS = ("Maple Avenue", "Harbor Street", "Cedar Lane", "Mill Road", "Elm Court", "Ridge Way")
WHOLESALE_STORES = ("Harbor Outfitters", "Ridgeline Supply", "Cedar & Pine", "Summit Mercantile",
                    "Trailhead Goods", "Riverbend Outdoor", "North Fork Provisions", "Basecamp Co.")


@dataclass(frozen=True)
class Place:
    city: str
    province: str
    province_code: str
    zip: str
    country: str
    country_code: str
    tax_rate: Decimal  # assumed combined sales tax, 0 outside the US
    locale: str


US_PLACES = (
    Place("Brooklyn", "New York", "NY", "11201", "United States", "US", Decimal("0.08875"), "en-US"),
    Place("Austin", "Texas", "TX", "78701", "United States", "US", Decimal("0.0825"), "en-US"),
    Place("Los Angeles", "California", "CA", "90012", "United States", "US", Decimal("0.095"), "en-US"),
    Place("Portland", "Oregon", "OR", "97205", "United States", "US", Decimal("0"), "en-US"),
    Place("Louisville", "Kentucky", "KY", "40202", "United States", "US", Decimal("0.06"), "en-US"),
    Place("Chicago", "Illinois", "IL", "60601", "United States", "US", Decimal("0.1025"), "en-US"),
    Place("Seattle", "Washington", "WA", "98101", "United States", "US", Decimal("0.1035"), "en-US"),
    Place("Denver", "Colorado", "CO", "80202", "United States", "US", Decimal("0.0881"), "en-US"),
)
FOREIGN_PLACES = {
    "EUR": (Place("Berlin", "Berlin", "BE", "10115", "Germany", "DE", Decimal("0"), "de-DE"),
            Place("Lyon", "Auvergne-Rhône-Alpes", "ARA", "69002", "France", "FR", Decimal("0"), "fr-FR")),
    "GBP": (Place("Manchester", "England", "ENG", "M1 1AE", "United Kingdom", "GB", Decimal("0"), "en-GB"),),
    "CAD": (Place("Toronto", "Ontario", "ON", "M5V 2T6", "Canada", "CA", Decimal("0"), "en-CA"),),
    "JPY": (Place("Osaka", "Osaka", "JP-27", "530-0001", "Japan", "JP", Decimal("0"), "ja-JP"),),
}

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
UPPER_ALPHANUMERIC = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

SETTLEMENT_HEADER = (
    "settlement-id", "settlement-start-date", "settlement-end-date", "deposit-date", "total-amount", "currency",
    "transaction-type", "order-id", "merchant-order-id", "adjustment-id", "shipment-id", "marketplace-name",
    "shipment-fee-type", "shipment-fee-amount", "order-fee-type", "order-fee-amount", "fulfillment-id",
    "posted-date", "order-item-code", "merchant-order-item-id", "merchant-adjustment-item-id", "sku",
    "quantity-purchased", "price-type", "price-amount", "item-related-fee-type", "item-related-fee-amount",
    "misc-fee-amount", "other-fee-amount", "other-fee-reason-description", "promotion-id", "promotion-type",
    "promotion-amount", "direct-payment-type", "direct-payment-amount", "other-amount",
)
FBA_INVENTORY_HEADER = (
    "seller-sku", "fulfillment-channel-sku", "asin", "condition-type", "Warehouse-Condition-code",
    "Quantity Available",
)


# Money

@dataclass(frozen=True)
class Amount:
    """One amount in the shop currency and in the buyer's presentment currency, in minor units."""

    shop: int
    presentment: int

    def __add__(self, other: "Amount") -> "Amount":
        return Amount(self.shop + other.shop, self.presentment + other.presentment)

    def __sub__(self, other: "Amount") -> "Amount":
        return Amount(self.shop - other.shop, self.presentment - other.presentment)

    def times(self, factor: int) -> "Amount":
        return Amount(self.shop * factor, self.presentment * factor)

    def scaled(self, rate: Decimal) -> "Amount":
        """Apply a rate to each side, rounding half up to whole minor units."""
        return Amount(scale_minor(self.shop, rate), scale_minor(self.presentment, rate))

    def portion(self, part: int, whole: int) -> "Amount":
        """Return part/whole of each side, rounded down, so the portions never exceed the whole."""
        return Amount(self.shop * part // whole, self.presentment * part // whole)


ZERO = Amount(0, 0)


@dataclass(frozen=True)
class Currencies:
    shop: str
    presentment: str


def scale_minor(minor: int, rate: Decimal) -> int:
    return int((Decimal(minor) * rate).to_integral_value(ROUND_HALF_UP))


def to_presentment(shop_minor: int, currency: str) -> int:
    """Convert shop-currency minor units to `currency` at the week's fixed rate, rounding half up."""
    if currency == SHOP_CURRENCY:
        return shop_minor
    major = Decimal(shop_minor).scaleb(-iso_exponent(SHOP_CURRENCY)) * EXCHANGE_RATES[currency]
    return int(major.scaleb(iso_exponent(currency)).to_integral_value(ROUND_HALF_UP))


def decimal_text(minor: int, currency: str) -> str:
    """Render minor units with the currency's exponent: (59894, "USD") -> "598.94", (4558, "JPY") -> "4558".

    Same text as `money.format_minor`, in integer arithmetic only, because a 100,000-order run
    renders millions of amounts.
    """
    exponent = iso_exponent(currency)
    if exponent == 0:
        return str(minor)
    whole, fraction = divmod(abs(minor), 10**exponent)
    sign = "-" if minor < 0 else ""
    return f"{sign}{whole}.{fraction:0{exponent}d}"


def money_set(amount: Amount, currencies: Currencies) -> dict:
    return {
        "shop_money": {"amount": decimal_text(amount.shop, currencies.shop), "currency_code": currencies.shop},
        "presentment_money": {"amount": decimal_text(amount.presentment, currencies.presentment),
                              "currency_code": currencies.presentment},
    }


def fee_for(amount: int, fee: tuple[Decimal, int]) -> int:
    rate, fixed = fee
    return scale_minor(amount, rate) + fixed


# Ids, codes and times

class IdSequences:
    """Increasing integer ids, one sequence per kind of record, each from its own base."""

    def __init__(self, bases: dict[str, int]):
        self._last = dict(bases)

    def next(self, kind: str) -> int:
        self._last[kind] += 1
        return self._last[kind]


CATALOG_ID_BASES = {"product": 8_912_300_000_000, "variant": 45_118_200_000_000,
                    "inventory_item": 47_220_100_000_000, "option": 10_440_500_000_000}
SHOPIFY_ID_BASES = {
    "order": 6_581_020_000_000, "order_number": 1000, "line_item": 16_104_300_000_000,
    "shipping_line": 5_230_880_000_000, "customer": 8_120_550_000_000, "address": 9_870_120_000_000,
    "transaction": 7_740_110_000_000, "refund": 1_012_660_000_000, "refund_line_item": 603_120_000_000,
    "order_adjustment": 301_550_000_000, "balance_transaction": 2_150_330_000_000, "payout": 118_720_000_000,
}


def random_code(rng: random.Random, alphabet: str, length: int) -> str:
    return "".join(rng.choices(alphabet, k=length))


def stripe_id(rng: random.Random, prefix: str, length: int = 24) -> str:
    return f"{prefix}_{random_code(rng, BASE62, length)}"


def shopify_time(moment: datetime) -> str:
    """Render an instant in the shop's local time with its UTC offset, e.g. 2026-11-01T01:30:00-05:00."""
    return moment.astimezone(SHOP_TIMEZONE).isoformat()


def amazon_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def report_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def unix_seconds(moment: datetime) -> int:
    return int(moment.timestamp())


def utc_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def split_evenly(total: int, parts: int) -> list[int]:
    """Split a count into `parts` counts that differ by at most one, larger counts first."""
    base, remainder = divmod(total, parts)
    return [base + (1 if index < remainder else 0) for index in range(parts)]


# The shop's days

@dataclass(frozen=True)
class ShopDay:
    """One local day of the shop, as UTC instants, and the instant its UTC offset changes, if it does."""

    date: date
    start: datetime
    end: datetime
    offset_change: datetime | None

    @property
    def key(self) -> str:
        return self.date.isoformat()

    @property
    def dst_window(self) -> tuple[datetime, datetime] | None:
        # From 01:00 to 03:00 local on the US fall-back day: 01:xx twice, then 02:xx once.
        if self.offset_change is None:
            return None
        return self.offset_change - timedelta(hours=1), self.offset_change + timedelta(hours=2)


def local_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=SHOP_TIMEZONE).astimezone(timezone.utc)


def find_offset_change(start: datetime, end: datetime) -> datetime | None:
    """Return the first UTC second in [start, end) whose shop offset differs from the offset at start."""
    first_offset = start.astimezone(SHOP_TIMEZONE).utcoffset()
    last = end - timedelta(seconds=1)
    if last.astimezone(SHOP_TIMEZONE).utcoffset() == first_offset:
        return None
    low, high = 0, int((last - start).total_seconds())
    while low < high:
        middle = (low + high) // 2
        if (start + timedelta(seconds=middle)).astimezone(SHOP_TIMEZONE).utcoffset() == first_offset:
            low = middle + 1
        else:
            high = middle
    return start + timedelta(seconds=low)


def shop_days(start: date, days: int) -> list[ShopDay]:
    result = []
    for index in range(days):
        day = start + timedelta(days=index)
        begin, end = local_midnight(day), local_midnight(day + timedelta(days=1))
        result.append(ShopDay(day, begin, end, find_offset_change(begin, end)))
    return result


def random_instant(rng: random.Random, start: datetime, end: datetime) -> datetime:
    return start + timedelta(seconds=rng.randrange(int((end - start).total_seconds())))


def ordinary_order_time(rng: random.Random, day: ShopDay) -> datetime:
    """Draw a time in the day outside its DST window, so that only planted orders fall in the window."""
    window = day.dst_window
    if window is None:
        return random_instant(rng, day.start, day.end)
    window_seconds = int((window[1] - window[0]).total_seconds())
    seconds = rng.randrange(int((day.end - day.start).total_seconds()) - window_seconds)
    moment = day.start + timedelta(seconds=seconds)
    return moment + timedelta(seconds=window_seconds) if moment >= window[0] else moment


def dst_order_time(rng: random.Random, day: ShopDay, sequence: int) -> datetime:
    """Draw a time in the hour before the change, the hour after it, or the hour after that, in turn.

    On the US fall-back day these are 01:xx at -04:00, 01:xx again at -05:00, and 02:xx at -05:00.
    """
    hour_start = day.offset_change + timedelta(hours=sequence % 3 - 1)
    return random_instant(rng, hour_start, hour_start + timedelta(hours=1))


# Catalog

@dataclass(frozen=True)
class Variant:
    product_id: int
    variant_id: int
    inventory_item_id: int
    sku: str
    product_title: str
    title: str
    price: int  # shop currency minor units
    grams: int


@dataclass(frozen=True)
class AmazonListing:
    variant: Variant
    asin: str
    fnsku: str
    fba_fee: int  # per unit, minor units


@dataclass
class Catalog:
    products: list[dict]
    variants: list[Variant]
    retired_variants: list[Variant]
    amazon_listings: list[AmazonListing]
    initial_stock: dict[int, int]  # inventory_item_id -> units at the start of the week
    initial_fba_stock: dict[str, int]  # Amazon SKU -> sellable units at the start of the week
    unsellable_fba_stock: dict[str, int]
    stocked_at: datetime


def sku_for(code: str, color: str, size: str) -> str:
    parts = [code, color.replace(" ", "")[:3].upper()]
    if size:
        parts.append(size.replace("/", ""))
    return "-".join(parts)


def variant_title(color: str, size: str) -> str:
    return f"{color} / {size}" if size else color


def build_catalog(rng: random.Random, start: date) -> Catalog:
    ids = IdSequences(CATALOG_ID_BASES)
    stocked_at = local_midnight(start - timedelta(days=200)) + timedelta(hours=14)
    products, variants, retired = [], [], []
    initial_stock: dict[int, int] = {}
    for title, code, product_type, price, grams, colors, sizes in PRODUCTS:
        product_id = ids.next("product")
        product_variants = [
            Variant(product_id, ids.next("variant"), ids.next("inventory_item"), sku_for(code, color, size),
                    title, variant_title(color, size), price, grams)
            for color in colors for size in (sizes or ("",))
        ]
        for retired_code, color, size in RETIRED_VARIANTS:
            if retired_code == code:
                retired.append(Variant(product_id, ids.next("variant"), ids.next("inventory_item"),
                                       sku_for(code, color, size), title, variant_title(color, size), price, grams))
        for variant in product_variants:
            initial_stock[variant.inventory_item_id] = rng.randint(150, 600)
        variants.extend(product_variants)
        products.append(product_record(ids, product_id, title, product_type, colors, sizes, product_variants,
                                       initial_stock, stocked_at))

    listings = amazon_listings(rng, variants)
    initial_fba_stock = {listing.variant.sku: rng.randint(80, 400) for listing in listings}
    unsellable = {listing.variant.sku: rng.randint(1, 3) for listing in listings if rng.random() < 0.2}
    return Catalog(products, variants, retired, listings, initial_stock, initial_fba_stock, unsellable, stocked_at)


def amazon_listings(rng: random.Random, variants: list[Variant]) -> list[AmazonListing]:
    listed = sorted(rng.sample(variants, k=max(1, len(variants) * 3 // 5)), key=lambda variant: variant.sku)
    return [
        AmazonListing(variant, "B0" + random_code(rng, UPPER_ALPHANUMERIC, 8),
                      "X00" + random_code(rng, UPPER_ALPHANUMERIC, 7), fba_fee_for(variant.grams))
        for variant in listed
    ]


def fba_fee_for(grams: int) -> int:
    if grams < 200:
        return 322
    return 389 if grams < 400 else 475


def product_record(ids: IdSequences, product_id: int, title: str, product_type: str, colors: tuple,
                   sizes: tuple, variants: list[Variant], stock: dict[int, int], stocked_at: datetime) -> dict:
    created = shopify_time(stocked_at)
    options = [{"id": ids.next("option"), "product_id": product_id, "name": "Color", "position": 1,
                "values": list(colors)}]
    if sizes:
        options.append({"id": ids.next("option"), "product_id": product_id, "name": "Size", "position": 2,
                        "values": list(sizes)})
    return {
        "id": product_id,
        "title": title,
        "body_html": f"<p>{title} by {VENDOR}.</p>",
        "vendor": VENDOR,
        "product_type": product_type,
        "created_at": created,
        "handle": title.lower().replace(" ", "-"),
        "updated_at": created,
        "published_at": created,
        "template_suffix": None,
        "published_scope": "global",
        "tags": "",
        "status": "active",
        "admin_graphql_api_id": f"gid://shopify/Product/{product_id}",
        "variants": [variant_record(variant, position, stock[variant.inventory_item_id], created)
                     for position, variant in enumerate(variants, 1)],
        "options": options,
        "images": [],
        "image": None,
    }


def variant_record(variant: Variant, position: int, inventory_quantity: int, created: str) -> dict:
    color, _, size = variant.title.partition(" / ")
    return {
        "id": variant.variant_id,
        "product_id": variant.product_id,
        "title": variant.title,
        "price": decimal_text(variant.price, SHOP_CURRENCY),
        "position": position,
        "inventory_policy": "deny",
        "compare_at_price": None,
        "option1": color,
        "option2": size or None,
        "option3": None,
        "created_at": created,
        "updated_at": created,
        "taxable": True,
        "barcode": None,
        "fulfillment_service": "manual",
        "grams": variant.grams,
        "inventory_management": "shopify",
        "requires_shipping": True,
        "sku": variant.sku,
        "weight": variant.grams / 1000,
        "weight_unit": "kg",
        "inventory_item_id": variant.inventory_item_id,
        "inventory_quantity": inventory_quantity,
        "old_inventory_quantity": inventory_quantity,
        "admin_graphql_api_id": f"gid://shopify/ProductVariant/{variant.variant_id}",
        "image_id": None,
    }


# Shopify customers

@dataclass
class Customer:
    id: int
    first_name: str
    last_name: str
    email: str | None
    phone: str
    address: dict
    created_at: datetime
    updated_at: datetime
    accepts_marketing: bool
    orders_count: int = 0
    total_spent: int = 0  # shop currency minor units
    last_order_id: int | None = None
    last_order_name: str | None = None


class CustomerBook:
    """Shopify customers: new ones, returning ones from a bounded pool, and long-standing ones."""

    RETURNING_SHARE = 0.2
    LONG_STANDING_SHARE = 0.15

    def __init__(self, ids: IdSequences, pool_size: int = 2000):
        self.ids = ids
        self.pool: deque[Customer] = deque(maxlen=pool_size)

    def pick(self, rng: random.Random, moment: datetime, address: dict, *, with_email: bool = True) -> Customer:
        # A phone-only buyer (no email) is never reused, so only planted orders lack an email.
        if not with_email:
            return self._create(rng, moment, address, with_email=False)
        draw = rng.random()
        if draw < self.RETURNING_SHARE and self.pool:
            return rng.choice(self.pool)
        if draw < self.RETURNING_SHARE + self.LONG_STANDING_SHARE:
            customer = self._create(rng, moment - timedelta(days=rng.randint(30, 720)), address, with_email=True)
            customer.orders_count = rng.randint(1, 6)
            customer.total_spent = rng.randint(20, 600) * 100
        else:
            customer = self._create(rng, moment, address, with_email=True)
        self.pool.append(customer)
        return customer

    def _create(self, rng: random.Random, created_at: datetime, address: dict, *, with_email: bool) -> Customer:
        customer_id = self.ids.next("customer")
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        email = f"{first}.{last}.{customer_id % 100_000}@example.com".lower() if with_email else None
        # 555-01xx numbers are reserved for fiction in the North American numbering plan.
        phone = f"+1{rng.choice(('212', '312', '503', '512', '720'))}55501{rng.randint(0, 99):02d}"
        default_address = {**address, "id": self.ids.next("address"), "customer_id": customer_id,
                           "first_name": first, "last_name": last, "name": f"{first} {last}", "default": True}
        return Customer(customer_id, first, last, email, phone, default_address, created_at, created_at,
                        accepts_marketing=rng.random() < 0.4)


def customer_record(customer: Customer) -> dict:
    """Render a customer as GET /customers.json returns it."""
    return {
        "id": customer.id,
        "email": customer.email,
        "created_at": shopify_time(customer.created_at),
        "updated_at": shopify_time(customer.updated_at),
        "first_name": customer.first_name,
        "last_name": customer.last_name,
        "orders_count": customer.orders_count,
        "state": "enabled" if customer.email else "disabled",
        "total_spent": decimal_text(customer.total_spent, SHOP_CURRENCY),
        "last_order_id": customer.last_order_id,
        "note": None,
        "verified_email": customer.email is not None,
        "multipass_identifier": None,
        "tax_exempt": False,
        "tags": "",
        "last_order_name": customer.last_order_name,
        "currency": SHOP_CURRENCY,
        "phone": customer.phone,
        "addresses": [customer.address],
        "tax_exemptions": [],
        "email_marketing_consent": None if customer.email is None else {
            "state": "subscribed" if customer.accepts_marketing else "not_subscribed",
            "opt_in_level": "single_opt_in",
            "consent_updated_at": None,
        },
        "admin_graphql_api_id": f"gid://shopify/Customer/{customer.id}",
        "default_address": customer.address,
    }


def order_customer(customer: Customer) -> dict:
    """Render the customer embedded in an order, with its state right after that order."""
    return {
        "id": customer.id,
        "email": customer.email,
        "created_at": shopify_time(customer.created_at),
        "updated_at": shopify_time(customer.updated_at),
        "first_name": customer.first_name,
        "last_name": customer.last_name,
        "state": "enabled" if customer.email else "disabled",
        "note": None,
        "verified_email": customer.email is not None,
        "tax_exempt": False,
        "phone": customer.phone,
        "currency": SHOP_CURRENCY,
        "admin_graphql_api_id": f"gid://shopify/Customer/{customer.id}",
        "default_address": customer.address,
    }


# Shopify orders

@dataclass(frozen=True)
class OrderPlan:
    """Requirements for one Shopify order: its creation time, planted kind, presentment currency and refund."""

    created_at: datetime
    day_end: datetime  # a refund happens before the end of the order's day
    defect: str | None = None
    presentment_currency: str = SHOP_CURRENCY
    refund: str | None = None  # "partial" or "full"


@dataclass
class PricedLine:
    variant: Variant
    quantity: int
    line_item_id: int
    unit_price: Amount
    discount: Amount
    tax: Amount

    @property
    def gross(self) -> Amount:
        return self.unit_price.times(self.quantity)


@dataclass(frozen=True)
class Shipping:
    code: str
    title: str
    price: Amount


@dataclass(frozen=True)
class OrderTotals:
    # NOTE: subtotal is the line items' price before discounts, as in the bundled orders.json sample
    # (its subtotal_price equals total_line_items_price), so subtotal - discounts + shipping + tax = total.
    # Live Shopify orders may report subtotal_price after discounts instead; this was not checked.
    subtotal: Amount
    discounts: Amount
    shipping: Amount
    tax: Amount

    @property
    def total(self) -> Amount:
        return self.subtotal - self.discounts + self.shipping + self.tax

    @classmethod
    def of(cls, lines: list[PricedLine], shipping: Amount) -> "OrderTotals":
        subtotal, discounts, tax = ZERO, ZERO, ZERO
        for line in lines:
            subtotal, discounts, tax = subtotal + line.gross, discounts + line.discount, tax + line.tax
        return cls(subtotal, discounts, shipping, tax)


@dataclass
class OrderDraft:
    id: int
    name: str
    created_at: datetime
    currencies: Currencies
    place: Place
    address: dict
    customer: Customer
    discount_code: tuple[str, Decimal] | None
    lines: list[PricedLine]
    shipping: Shipping
    totals: OrderTotals


@dataclass
class BuiltRefund:
    record: dict
    transaction: dict
    amount: Amount
    created_at: datetime


@dataclass
class BuiltOrder:
    """An order as delivered, with what the rest of the week derives from it."""

    record: dict
    sale: dict
    refunds: list[BuiltRefund]
    total: Amount
    lines: list[PricedLine]
    customer: Customer
    created_at: datetime


def pick_address(rng: random.Random, currency: str) -> tuple[Place, dict]:
    place = rng.choice(US_PLACES if currency == SHOP_CURRENCY else FOREIGN_PLACES[currency])
    address = {
        "address1": f"{rng.randint(1, 999)} {rng.choice(STREETS)}",
        "address2": "",
        "city": place.city,
        "province": place.province,
        "province_code": place.province_code,
        "zip": place.zip,
        "country": place.country,
        "country_code": place.country_code,
        "country_name": place.country,
        "company": None,
        "phone": None,
    }
    return place, address


def choose_line_items(rng: random.Random, catalog: Catalog, plan: OrderPlan) -> list[tuple[Variant, int]]:
    line_count = rng.choices((1, 2, 3, 4), weights=(60, 28, 9, 3))[0]
    variants = rng.sample(catalog.variants, k=line_count)
    chosen = [(variant, rng.choices((1, 2, 3), weights=(80, 15, 5))[0]) for variant in variants]
    if plan.defect == "unknown_sku":
        chosen[rng.randrange(len(chosen))] = (rng.choice(catalog.retired_variants), 1)
    # A partial refund returns one unit, so the order needs a second unit that stays paid.
    if plan.refund == "partial" and sum(quantity for _, quantity in chosen) < 2:
        chosen[0] = (chosen[0][0], 2)
    return chosen


def price_line(variant: Variant, quantity: int, line_item_id: int, currencies: Currencies,
               discount_code: tuple[str, Decimal] | None, place: Place) -> PricedLine:
    unit_price = Amount(variant.price, to_presentment(variant.price, currencies.presentment))
    gross = unit_price.times(quantity)
    discount = gross.scaled(discount_code[1]) if discount_code else ZERO
    tax = (gross - discount).scaled(place.tax_rate)
    return PricedLine(variant, quantity, line_item_id, unit_price, discount, tax)


def pick_shipping(rng: random.Random, lines: list[PricedLine], currency: str) -> Shipping:
    if rng.random() < EXPRESS_SHIPPING_SHARE:
        code, title, price = "express", "Express Shipping", EXPRESS_SHIPPING
    elif sum(line.gross.shop for line in lines) >= FREE_SHIPPING_FROM:
        code, title, price = "free", "Free Shipping", 0
    else:
        code, title, price = "standard", "Standard Shipping", STANDARD_SHIPPING
    return Shipping(code, title, Amount(price, to_presentment(price, currency)))


def build_shopify_order(rng: random.Random, catalog: Catalog, ids: IdSequences, customers: CustomerBook,
                        plan: OrderPlan) -> BuiltOrder:
    """Build one order as GET /orders.json returns it, with its sale transaction and its refunds."""
    currencies = Currencies(SHOP_CURRENCY, plan.presentment_currency)
    place, address = pick_address(rng, plan.presentment_currency)
    customer = customers.pick(rng, plan.created_at, address, with_email=plan.defect != "missing_email")
    discount_code = rng.choice(DISCOUNT_CODES) if rng.random() < DISCOUNT_SHARE else None

    lines = [price_line(variant, quantity, ids.next("line_item"), currencies, discount_code, place)
             for variant, quantity in choose_line_items(rng, catalog, plan)]
    shipping = pick_shipping(rng, lines, plan.presentment_currency)
    totals = OrderTotals.of(lines, shipping.price)

    order_id, number = ids.next("order"), ids.next("order_number")
    draft = OrderDraft(order_id, f"#{number}", plan.created_at, currencies, place, address, customer,
                       discount_code, lines, shipping, totals)
    sale = sale_transaction(rng, ids, draft)
    refunds = []
    if plan.refund:
        refund_time = plan.created_at + timedelta(seconds=refund_delay(rng, plan))
        refunds.append(build_refund(rng, ids, draft, plan.refund, refund_time, sale["id"]))

    updated_at = refunds[-1].created_at if refunds else plan.created_at
    record_purchase(customer, draft, updated_at)
    record = order_record(ids, draft, sale, refunds, updated_at)
    return BuiltOrder(record, sale, refunds, totals.total, lines, customer, plan.created_at)


def refund_delay(rng: random.Random, plan: OrderPlan) -> int:
    remaining = int((plan.day_end - plan.created_at).total_seconds()) - 1
    return rng.randint(max(1, remaining // 4), max(1, remaining))


def record_purchase(customer: Customer, draft: OrderDraft, updated_at: datetime) -> None:
    customer.orders_count += 1
    customer.total_spent += draft.totals.total.shop
    customer.updated_at = max(customer.updated_at, updated_at)
    customer.last_order_id, customer.last_order_name = draft.id, draft.name


def financial_status(refunds: list[BuiltRefund], total: Amount) -> str:
    refunded = sum(refund.amount.presentment for refund in refunds)
    if refunded == 0:
        return "paid"
    return "refunded" if refunded >= total.presentment else "partially_refunded"


def order_record(ids: IdSequences, draft: OrderDraft, sale: dict, refunds: list[BuiltRefund],
                 updated_at: datetime) -> dict:
    currencies, totals, customer = draft.currencies, draft.totals, draft.customer
    cancelled = bool(refunds) and financial_status(refunds, totals.total) == "refunded"
    person = {"first_name": customer.first_name, "last_name": customer.last_name,
              "name": f"{customer.first_name} {customer.last_name}"}
    return {
        "id": draft.id,
        "admin_graphql_api_id": f"gid://shopify/Order/{draft.id}",
        "name": draft.name,
        "number": int(draft.name[1:]) - 1000,
        "order_number": int(draft.name[1:]),
        "email": customer.email,
        "contact_email": customer.email,
        "phone": None if customer.email else customer.phone,
        "created_at": shopify_time(draft.created_at),
        "updated_at": shopify_time(updated_at),
        "processed_at": shopify_time(draft.created_at),
        "cancelled_at": shopify_time(refunds[-1].created_at) if cancelled else None,
        "cancel_reason": "customer" if cancelled else None,
        "closed_at": None,
        "confirmed": True,
        "test": False,
        "currency": currencies.shop,
        "presentment_currency": currencies.presentment,
        "customer_locale": draft.place.locale,
        "financial_status": financial_status(refunds, totals.total),
        "fulfillment_status": None,
        "source_name": "web",
        "payment_gateway_names": [sale["gateway"]],
        "buyer_accepts_marketing": customer.accepts_marketing,
        "taxes_included": False,
        "tax_exempt": False,
        "tags": "",
        "note": None,
        "total_line_items_price": decimal_text(totals.subtotal.shop, currencies.shop),
        "total_line_items_price_set": money_set(totals.subtotal, currencies),
        "subtotal_price": decimal_text(totals.subtotal.shop, currencies.shop),
        "subtotal_price_set": money_set(totals.subtotal, currencies),
        "total_discounts": decimal_text(totals.discounts.shop, currencies.shop),
        "total_discounts_set": money_set(totals.discounts, currencies),
        "total_shipping_price_set": money_set(totals.shipping, currencies),
        "total_tax": decimal_text(totals.tax.shop, currencies.shop),
        "total_tax_set": money_set(totals.tax, currencies),
        "total_price": decimal_text(totals.total.shop, currencies.shop),
        "total_price_set": money_set(totals.total, currencies),
        "total_outstanding": decimal_text(0, currencies.shop),
        "discount_codes": discount_codes(draft),
        "discount_applications": discount_applications(draft),
        "tax_lines": order_tax_lines(draft),
        "line_items": [line_item_record(draft, line) for line in draft.lines],
        "shipping_lines": [shipping_line_record(ids, draft)],
        "billing_address": {**draft.address, **person},
        "shipping_address": {**draft.address, **person},
        "customer": order_customer(customer),
        "refunds": [refund.record for refund in refunds],
    }


def discount_codes(draft: OrderDraft) -> list[dict]:
    if draft.discount_code is None:
        return []
    return [{"code": draft.discount_code[0], "amount": decimal_text(draft.totals.discounts.shop, SHOP_CURRENCY),
             "type": "percentage"}]


def discount_applications(draft: OrderDraft) -> list[dict]:
    if draft.discount_code is None:
        return []
    code, rate = draft.discount_code
    return [{"target_type": "line_item", "type": "discount_code", "value": str(rate * 100),
             "value_type": "percentage", "allocation_method": "across", "target_selection": "all", "code": code}]


def tax_line(draft: OrderDraft, tax: Amount) -> dict:
    return {"price": decimal_text(tax.shop, SHOP_CURRENCY), "rate": float(draft.place.tax_rate),
            "title": f"{draft.place.province_code} State Tax", "price_set": money_set(tax, draft.currencies),
            "channel_liable": False}


def order_tax_lines(draft: OrderDraft) -> list[dict]:
    return [tax_line(draft, draft.totals.tax)] if draft.place.tax_rate else []


def line_item_record(draft: OrderDraft, line: PricedLine) -> dict:
    currencies, variant = draft.currencies, line.variant
    allocations = []
    if line.discount != ZERO:
        allocations.append({"amount": decimal_text(line.discount.shop, SHOP_CURRENCY),
                            "amount_set": money_set(line.discount, currencies), "discount_application_index": 0})
    return {
        "id": line.line_item_id,
        "admin_graphql_api_id": f"gid://shopify/LineItem/{line.line_item_id}",
        "variant_id": variant.variant_id,
        "product_id": variant.product_id,
        "sku": variant.sku,
        "name": f"{variant.product_title} - {variant.title}",
        "title": variant.product_title,
        "variant_title": variant.title,
        "vendor": VENDOR,
        "quantity": line.quantity,
        "current_quantity": line.quantity,
        "fulfillable_quantity": line.quantity,
        "fulfillment_service": "manual",
        "fulfillment_status": None,
        "gift_card": False,
        "grams": variant.grams,
        "price": decimal_text(line.unit_price.shop, SHOP_CURRENCY),
        "price_set": money_set(line.unit_price, currencies),
        "product_exists": True,
        "requires_shipping": True,
        "taxable": True,
        "total_discount": decimal_text(0, SHOP_CURRENCY),
        "total_discount_set": money_set(ZERO, currencies),
        "tax_lines": [tax_line(draft, line.tax)] if draft.place.tax_rate else [],
        "discount_allocations": allocations,
        "duties": [],
        "properties": [],
    }


def shipping_line_record(ids: IdSequences, draft: OrderDraft) -> dict:
    shipping = draft.shipping
    price = decimal_text(shipping.price.shop, SHOP_CURRENCY)
    return {
        "id": ids.next("shipping_line"),
        "code": shipping.code,
        "title": shipping.title,
        "source": "shopify",
        "price": price,
        "price_set": money_set(shipping.price, draft.currencies),
        "discounted_price": price,
        "discounted_price_set": money_set(shipping.price, draft.currencies),
        "carrier_identifier": None,
        "tax_lines": [],
        "discount_allocations": [],
    }


def order_transaction(ids: IdSequences, draft: OrderDraft, kind: str, amount: int, moment: datetime,
                      parent_id: int | None, authorization: str, sequence: int) -> dict:
    """Render an order transaction; `amount` is in minor units of the order's presentment currency."""
    transaction_id = ids.next("transaction")
    return {
        "id": transaction_id,
        "admin_graphql_api_id": f"gid://shopify/OrderTransaction/{transaction_id}",
        "order_id": draft.id,
        "kind": kind,
        "gateway": "shopify_payments",
        "status": "success",
        "message": "Transaction approved",
        "created_at": shopify_time(moment),
        "processed_at": shopify_time(moment),
        "test": False,
        "authorization": authorization,
        "parent_id": parent_id,
        "location_id": None,
        "user_id": None,
        "device_id": None,
        "error_code": None,
        "source_name": "web",
        "receipt": {},
        "amount": decimal_text(amount, draft.currencies.presentment),
        "currency": draft.currencies.presentment,
        "payment_id": f"{draft.name}.{sequence}",
        "payment_details": {"credit_card_company": "Visa", "credit_card_number": "•••• •••• •••• 4242",
                            "credit_card_bin": "424242", "avs_result_code": "Y", "cvv_result_code": "M"},
    }


def sale_transaction(rng: random.Random, ids: IdSequences, draft: OrderDraft) -> dict:
    authorization = random_code(rng, UPPER_ALPHANUMERIC, 12)
    return order_transaction(ids, draft, "sale", draft.totals.total.presentment, draft.created_at, None,
                             authorization, 1)


def refunded_quantities(rng: random.Random, lines: list[PricedLine], kind: str) -> list[tuple[PricedLine, int]]:
    """Return every line's full quantity, or one unit of one line while another unit stays in the order."""
    if kind == "full":
        return [(line, line.quantity) for line in lines]
    candidates = [line for line in lines if line.quantity >= 2] if len(lines) == 1 else lines
    return [(rng.choice(candidates), 1)]


def build_refund(rng: random.Random, ids: IdSequences, draft: OrderDraft, kind: str, moment: datetime,
                 sale_id: int) -> BuiltRefund:
    refund_id = ids.next("refund")
    currencies = draft.currencies
    refund_lines, amount = [], ZERO
    for line, quantity in refunded_quantities(rng, draft.lines, kind):
        subtotal = line.unit_price.times(quantity) - line.discount.portion(quantity, line.quantity)
        tax = line.tax.portion(quantity, line.quantity)
        amount = amount + subtotal + tax
        refund_lines.append({
            "id": ids.next("refund_line_item"),
            "line_item_id": line.line_item_id,
            "location_id": None,
            "quantity": quantity,
            "restock_type": "no_restock",
            # The bundled Shopify samples give these two as JSON numbers. A float's repr is the
            # exact decimal text, so no precision is lost.
            "subtotal": float(decimal_text(subtotal.shop, SHOP_CURRENCY)),
            "subtotal_set": money_set(subtotal, currencies),
            "total_tax": float(decimal_text(tax.shop, SHOP_CURRENCY)),
            "total_tax_set": money_set(tax, currencies),
        })

    adjustments = []
    if kind == "full" and draft.shipping.price != ZERO:
        amount = amount + draft.shipping.price
        adjustments.append(shipping_refund_adjustment(ids, draft, refund_id))

    transaction = order_transaction(ids, draft, "refund", amount.presentment, moment, sale_id,
                                    random_code(rng, UPPER_ALPHANUMERIC, 12), 2)
    record = {
        "id": refund_id,
        "admin_graphql_api_id": f"gid://shopify/Refund/{refund_id}",
        "order_id": draft.id,
        "created_at": shopify_time(moment),
        "processed_at": shopify_time(moment),
        "note": "Order cancelled before shipping" if kind == "full" else "Customer returned one item",
        "restock": False,
        "user_id": None,
        "order_adjustments": adjustments,
        "transactions": [transaction],
        "refund_line_items": refund_lines,
        "duties": [],
        "total_duties_set": money_set(ZERO, currencies),
    }
    return BuiltRefund(record, transaction, amount, moment)


def shipping_refund_adjustment(ids: IdSequences, draft: OrderDraft, refund_id: int) -> dict:
    refunded = ZERO - draft.shipping.price
    return {
        "id": ids.next("order_adjustment"),
        "order_id": draft.id,
        "refund_id": refund_id,
        "kind": "shipping_refund",
        "reason": "Shipping refund",
        "amount": decimal_text(refunded.shop, SHOP_CURRENCY),
        "amount_set": money_set(refunded, draft.currencies),
        "tax_amount": decimal_text(0, SHOP_CURRENCY),
        "tax_amount_set": money_set(ZERO, draft.currencies),
    }


def iter_shopify_order_pages(count: int, *, page_size: int = SHOPIFY_PAGE_SIZE, seed: int = 7,
                             start: date = DEFAULT_START) -> Iterator[list[dict]]:
    """Yield `count` Shopify orders in pages of `page_size`, holding one page at a time.

    The orders have the shape of `generate_week`'s orders, with full refunds and discounts but no
    planted cases. They are created from `start` on, one every 1 to 90 seconds.
    """
    if count < 0:
        raise ValueError(f"count must be 0 or more, got {count}")
    if page_size < 1:
        raise ValueError(f"page_size must be 1 or more, got {page_size}")

    rng = random.Random(seed)
    catalog = build_catalog(rng, start)
    ids = IdSequences(SHOPIFY_ID_BASES)
    customers = CustomerBook(ids)
    moment = local_midnight(start)
    page: list[dict] = []
    for _ in range(count):
        moment += timedelta(seconds=rng.randint(1, 90))
        refund = "full" if rng.random() < FULL_REFUND_SHARE else None
        plan = OrderPlan(moment, day_end=moment + timedelta(hours=6), refund=refund)
        page.append(build_shopify_order(rng, catalog, ids, customers, plan).record)
        if len(page) == page_size:
            yield page
            page = []
    if page:
        yield page


# Planting

class DefectLog:
    """Planted records of each kind, in the order they were planted."""

    def __init__(self):
        self.records: dict[str, list[dict]] = {kind: [] for kind in DEFECTS_PER_THOUSAND}

    def add(self, kind: str, system: str, stream: str, source_id: object, **details: str) -> None:
        self.records[kind].append({"system": system, "stream": stream, "source_id": str(source_id), **details})

    def manifest(self) -> dict:
        return {kind: {"count": len(records), "description": DEFECT_DESCRIPTIONS[kind], "records": records}
                for kind, records in self.records.items()}


def planted_count(kind: str, base: int) -> int:
    return max(1, base * DEFECTS_PER_THOUSAND[kind] // 1000)


def plan_shopify_defects(rng: random.Random, days: list[ShopDay], day_counts: list[int]) -> dict[int, str]:
    """Assign planted kinds to order positions (0 to n-1, day by day). Each position gets at most one kind."""
    total = sum(day_counts)
    day_of = [index for index, count in enumerate(day_counts) for _ in range(count)]
    change_days = {index for index, day in enumerate(days) if day.offset_change is not None}
    eligible = {
        "dst_offset": [position for position in range(total) if day_of[position] in change_days],
        "duplicate_delivery": [position for position in range(total) if day_of[position] < len(days) - 1],
    }
    planned_counts = {kind: planted_count(kind, total) for kind in DEFECTS_PER_THOUSAND if kind != "late_fee"}
    planned_counts["dst_offset"] = max(MIN_DST_ORDERS, planned_counts["dst_offset"]) if change_days else 0
    if len(days) < 2:
        planned_counts["duplicate_delivery"] = 0

    assigned: dict[int, str] = {}
    for kind, count in planned_counts.items():
        free = [position for position in eligible.get(kind, range(total)) if position not in assigned]
        if count > len(free):
            raise ValueError(f"shopify_orders={total} is too small to plant {count} {kind} orders: "
                             "raise shopify_orders")
        for position in rng.sample(free, count):
            assigned[position] = kind
    return assigned


def plan_full_refunds(rng: random.Random, order_count: int, defects: dict[int, str]) -> set[int]:
    """Pick the order positions refunded in full, among orders with nothing planted."""
    free = [position for position in range(order_count) if position not in defects]
    return set(rng.sample(free, min(len(free), max(1, order_count * FULL_REFUNDS_PER_THOUSAND // 1000))))


def plan_day_orders(rng: random.Random, day: ShopDay, positions: range, defects: dict[int, str],
                    full_refunds: set[int]) -> list[OrderPlan]:
    plans = []
    dst_seen = 0
    for position in positions:
        defect = defects.get(position)
        if defect == "dst_offset":
            created_at = dst_order_time(rng, day, dst_seen)
            dst_seen += 1
        else:
            created_at = ordinary_order_time(rng, day)
        refund = None
        if defect == "partial_refund":
            refund = "partial"
        elif position in full_refunds:
            refund = "full"
        plans.append((created_at, position,
                      OrderPlan(created_at, day.end, defect, presentment_currency(rng, defect), refund)))
    return [plan for _, _, plan in sorted(plans, key=lambda item: item[:2])]


def presentment_currency(rng: random.Random, defect: str | None) -> str:
    if defect == "zero_decimal_currency":
        return "JPY"
    if defect == "presentment_currency_differs":
        return rng.choice(OTHER_PRESENTMENT_CURRENCIES)
    return SHOP_CURRENCY


# Deliveries

class Deliveries:
    """Records per day folder, system and stream, in delivery order."""

    def __init__(self):
        self.records: dict[tuple[str, str, str], list] = defaultdict(list)

    def add(self, day: str, system: str, stream: str, records: list) -> None:
        self.records[(day, system, stream)].extend(records)


# The Shopify week

@dataclass
class PaymentEntry:
    """A Shopify Payments balance entry before its payout is known. Amounts are in shop minor units."""

    type: str
    source_type: str
    amount: int
    fee: int
    order_id: int
    transaction_id: int
    processed_at: datetime


class StockLedger:
    """Units available per Shopify inventory item, with the time each last changed."""

    def __init__(self, catalog: Catalog):
        self.available = dict(catalog.initial_stock)
        self.updated_at = {item: catalog.stocked_at for item in self.available}

    def sell(self, lines: list[PricedLine], moment: datetime) -> None:
        for line in lines:
            item = line.variant.inventory_item_id
            if item in self.available:
                self.available[item] -= line.quantity
                self.updated_at[item] = max(self.updated_at[item], moment)

    def levels(self) -> list[dict]:
        return [
            {"inventory_item_id": item, "location_id": SHOP_LOCATION_ID, "available": self.available[item],
             "updated_at": shopify_time(self.updated_at[item]),
             "admin_graphql_api_id": f"gid://shopify/InventoryLevel/{SHOP_LOCATION_ID}?inventory_item_id={item}"}
            for item in sorted(self.available)
        ]


def simulate_shopify(rng: random.Random, days: list[ShopDay], order_count: int, catalog: Catalog,
                     deliveries: Deliveries, defects: DefectLog) -> None:
    day_counts = split_evenly(order_count, len(days))
    planted = plan_shopify_defects(rng, days, day_counts)
    full_refunds = plan_full_refunds(rng, order_count, planted)
    ids = IdSequences(SHOPIFY_ID_BASES)
    customers = CustomerBook(ids)
    stock = StockLedger(catalog)
    entries: dict[int, list[PaymentEntry]] = defaultdict(list)
    redelivered: dict[int, list[dict]] = defaultdict(list)
    deliveries.add(days[0].key, "shopify", "products", catalog.products)

    first_position = 0
    for index, day in enumerate(days):
        positions = range(first_position, first_position + day_counts[index])
        first_position = positions.stop
        touched: dict[int, Customer] = {}
        for plan in plan_day_orders(rng, day, positions, planted, full_refunds):
            built = build_shopify_order(rng, catalog, ids, customers, plan)
            deliveries.add(day.key, "shopify", "orders", [built.record])
            deliveries.add(day.key, "shopify", "transactions",
                           [built.sale] + [refund.transaction for refund in built.refunds])
            entries[index].extend(payment_entries(built))
            stock.sell(built.lines, built.created_at)
            touched[built.customer.id] = built.customer
            if plan.defect:
                record_order_defect(defects, plan.defect, built, catalog, days, index)
            if plan.defect == "duplicate_delivery":
                redelivered[index + 1].append(built.record)

        # The redelivered orders are the same objects, so they serialize to the same bytes.
        deliveries.add(day.key, "shopify", "orders", redelivered[index])
        deliveries.add(day.key, "shopify", "customers", [customer_record(touched[key]) for key in sorted(touched)])
        deliveries.add(day.key, "shopify", "inventory_levels", stock.levels())

    for index, day in enumerate(days):
        deliver_shopify_payout(ids, days, index, entries[index], deliveries)


def record_order_defect(defects: DefectLog, kind: str, built: BuiltOrder, catalog: Catalog, days: list[ShopDay],
                        index: int) -> None:
    details = {}
    if kind == "unknown_sku":
        details["sku"] = next(line.variant.sku for line in built.lines if line.variant in catalog.retired_variants)
    if kind == "dst_offset":
        details["created_at"] = built.record["created_at"]
    if kind == "duplicate_delivery":
        details["redelivered_on"] = days[index + 1].key
    defects.add(kind, "shopify", "orders", built.record["id"], **details)


def payment_entries(built: BuiltOrder) -> list[PaymentEntry]:
    """Shopify Payments entries of an order: its charge, less the fee, and one entry per refund."""
    order_id = built.record["id"]
    foreign = built.record["presentment_currency"] != SHOP_CURRENCY
    fee = fee_for(built.total.shop, SHOPIFY_PAYMENTS_FOREIGN_FEE if foreign else SHOPIFY_PAYMENTS_FEE)
    entries = [PaymentEntry("charge", "charge", built.total.shop, fee, order_id, built.sale["id"], built.created_at)]
    for refund in built.refunds:
        entries.append(PaymentEntry("refund", "Payments::Refund", -refund.amount.shop, 0, order_id,
                                    refund.transaction["id"], refund.created_at))
    return entries


def deliver_shopify_payout(ids: IdSequences, days: list[ShopDay], index: int, entries: list[PaymentEntry],
                           deliveries: Deliveries) -> None:
    """Pay out one day's entries on the next day, when the payout and its balance transactions arrive.

    The last day's payout falls after the week, so it arrives on the last day with status scheduled.
    """
    if not entries:
        return
    is_last = index == len(days) - 1
    status = "scheduled" if is_last else "paid"
    delivered_on = days[index if is_last else index + 1].key
    payout_id = ids.next("payout")
    transactions = [balance_transaction_record(ids, entry, payout_id, status) for entry in entries]
    payout = payout_record(payout_id, status, days[index].date + timedelta(days=1), entries)
    deliveries.add(delivered_on, "shopify", "payouts", [payout])
    deliveries.add(delivered_on, "shopify", "balance_transactions", transactions)


def balance_transaction_record(ids: IdSequences, entry: PaymentEntry, payout_id: int, status: str) -> dict:
    return {
        "id": ids.next("balance_transaction"),
        "type": entry.type,
        "test": False,
        "payout_id": payout_id,
        "payout_status": status,
        "currency": SHOP_CURRENCY,
        "amount": decimal_text(entry.amount, SHOP_CURRENCY),
        "fee": decimal_text(entry.fee, SHOP_CURRENCY),
        "net": decimal_text(entry.amount - entry.fee, SHOP_CURRENCY),
        "source_id": entry.transaction_id,
        "source_type": entry.source_type,
        "source_order_id": entry.order_id,
        "source_order_transaction_id": entry.transaction_id,
        "processed_at": shopify_time(entry.processed_at),
        "adjustment_order_transactions": None,
        "adjustment_reason": None,
    }


def payout_record(payout_id: int, status: str, paid_on: date, entries: list[PaymentEntry]) -> dict:
    def total(kind: str, field_name: str) -> str:
        return decimal_text(sum(getattr(entry, field_name) for entry in entries if entry.type == kind), SHOP_CURRENCY)

    zero = decimal_text(0, SHOP_CURRENCY)
    net = sum(entry.amount - entry.fee for entry in entries)
    return {
        "id": payout_id,
        "status": status,
        "date": paid_on.isoformat(),
        "currency": SHOP_CURRENCY,
        "amount": decimal_text(net, SHOP_CURRENCY),
        "summary": {
            "adjustments_fee_amount": zero,
            "adjustments_gross_amount": zero,
            "charges_fee_amount": total("charge", "fee"),
            "charges_gross_amount": total("charge", "amount"),
            "refunds_fee_amount": total("refund", "fee"),
            "refunds_gross_amount": total("refund", "amount"),
            "reserved_funds_fee_amount": zero,
            "reserved_funds_gross_amount": zero,
            "retried_payouts_fee_amount": zero,
            "retried_payouts_gross_amount": zero,
        },
    }


# The Amazon week

@dataclass(frozen=True)
class AmazonLine:
    listing: AmazonListing
    quantity: int
    order_item_id: str
    item_price: int  # the whole line: unit price times quantity, as SP-API's ItemPrice
    item_tax: int
    promotion: int
    shipping: int


@dataclass
class AmazonOrder:
    order_id: str
    channel: str  # AFN: fulfilled by Amazon, MFN: by the seller
    shipped_at: datetime | None
    lines: list[AmazonLine]
    record: dict
    items_payload: dict


def amazon_order_id(rng: random.Random, used_order_ids: set[str]) -> str:
    while True:
        order_id = f"{rng.choice((111, 112, 113, 114))}-{rng.randrange(10**7):07d}-{rng.randrange(10**7):07d}"
        if order_id not in used_order_ids:
            used_order_ids.add(order_id)
            return order_id


def amazon_money(minor: int) -> dict:
    return {"CurrencyCode": AMAZON_CURRENCY, "Amount": decimal_text(minor, AMAZON_CURRENCY)}


def build_amazon_order(rng: random.Random, catalog: Catalog, purchased_at: datetime, day_end: datetime,
                       used_order_ids: set[str]) -> AmazonOrder:
    """Build one order as getOrders returns it and its getOrderItems payload. Its times stay within the day."""
    order_id = amazon_order_id(rng, used_order_ids)
    place = rng.choice(US_PLACES)
    channel = "AFN" if rng.random() < 0.7 else "MFN"
    prime = channel == "AFN" and rng.random() < 0.8
    promotion_rate = Decimal("0.10") if rng.random() < 0.1 else Decimal(0)

    lines = []
    listings = rng.sample(catalog.amazon_listings, k=rng.choices((1, 2, 3), weights=(75, 20, 5))[0])
    for position, listing in enumerate(listings):
        quantity = rng.choices((1, 2), weights=(85, 15))[0]
        item_price = listing.variant.price * quantity
        promotion = scale_minor(item_price, promotion_rate)
        item_tax = scale_minor(item_price - promotion, place.tax_rate)
        shipping = AMAZON_SHIPPING if position == 0 and not prime else 0
        lines.append(AmazonLine(listing, quantity, str(rng.randrange(10**13, 10**14)), item_price, item_tax,
                                promotion, shipping))

    # An order ships if it leaves the warehouse before the day ends. Otherwise it is still unshipped.
    ship_time = purchased_at + timedelta(seconds=rng.randint(2 * 3600, 20 * 3600))
    shipped_at = ship_time if ship_time < day_end else None
    updated_at = shipped_at or min(purchased_at + timedelta(seconds=rng.randint(60, 900)),
                                   day_end - timedelta(seconds=1))
    record = amazon_order_record(order_id, purchased_at, updated_at, shipped_at, channel, prime, place, lines)
    items_payload = {"AmazonOrderId": order_id,
                     "OrderItems": [amazon_item_record(line, shipped_at is not None) for line in lines]}
    return AmazonOrder(order_id, channel, shipped_at, lines, record, items_payload)


def amazon_order_record(order_id: str, purchased_at: datetime, updated_at: datetime, shipped_at: datetime | None,
                        channel: str, prime: bool, place: Place, lines: list[AmazonLine]) -> dict:
    units = sum(line.quantity for line in lines)
    total = sum(line.item_price + line.item_tax - line.promotion + line.shipping for line in lines)
    return {
        "AmazonOrderId": order_id,
        "SellerOrderId": order_id,
        "PurchaseDate": amazon_time(purchased_at),
        "LastUpdateDate": amazon_time(updated_at),
        "OrderStatus": "Shipped" if shipped_at else "Unshipped",
        "FulfillmentChannel": channel,
        "SalesChannel": "Amazon.com",
        "ShipServiceLevel": "Std US D2D Dom",
        "OrderTotal": amazon_money(total),
        "NumberOfItemsShipped": units if shipped_at else 0,
        "NumberOfItemsUnshipped": 0 if shipped_at else units,
        "PaymentMethod": "Other",
        "PaymentMethodDetails": ["Standard"],
        "MarketplaceId": AMAZON_MARKETPLACE_ID,
        "ShipmentServiceLevelCategory": "Standard",
        "OrderType": "StandardOrder",
        "EarliestShipDate": amazon_time(purchased_at),
        "LatestShipDate": amazon_time(purchased_at + timedelta(days=2)),
        "IsBusinessOrder": False,
        "IsPrime": prime,
        "IsPremiumOrder": False,
        "IsGlobalExpressEnabled": False,
        "IsReplacementOrder": False,
        "IsSoldByAB": False,
        "IsISPU": False,
        "IsAccessPointOrder": False,
        "ShippingAddress": {"City": place.city, "StateOrRegion": place.province_code, "PostalCode": place.zip,
                            "CountryCode": place.country_code},
    }


def amazon_item_record(line: AmazonLine, shipped: bool) -> dict:
    variant = line.listing.variant
    return {
        "ASIN": line.listing.asin,
        "SellerSKU": variant.sku,
        "OrderItemId": line.order_item_id,
        "Title": f"{VENDOR} {variant.product_title}, {variant.title}",
        "QuantityOrdered": line.quantity,
        "QuantityShipped": line.quantity if shipped else 0,
        "ProductInfo": {"NumberOfItems": "1"},
        "ItemPrice": amazon_money(line.item_price),
        "ItemTax": amazon_money(line.item_tax),
        "ShippingPrice": amazon_money(line.shipping),
        "ShippingTax": amazon_money(0),
        "ShippingDiscount": amazon_money(0),
        "ShippingDiscountTax": amazon_money(0),
        "PromotionDiscount": amazon_money(line.promotion),
        "PromotionDiscountTax": amazon_money(0),
        "PromotionIds": ["FALL-PROMO-10"] if line.promotion else [],
        "IsGift": "false",
        "ConditionId": "New",
        "ConditionSubtypeId": "New",
        "IsTransparency": False,
        "SerialNumberRequired": False,
    }


class FbaStock:
    """Units in Amazon's fulfillment network per SKU. AFN orders take units away when they ship."""

    def __init__(self, catalog: Catalog):
        self.listings = catalog.amazon_listings
        self.sellable = dict(catalog.initial_fba_stock)
        self.unsellable = catalog.unsellable_fba_stock

    def ship(self, orders: list[AmazonOrder]) -> None:
        for order in orders:
            if order.channel == "AFN" and order.shipped_at:
                for line in order.lines:
                    self.sellable[line.listing.variant.sku] -= line.quantity

    def report_rows(self) -> list[tuple]:
        rows = []
        for listing in self.listings:
            sku = listing.variant.sku
            rows.append((sku, listing.fnsku, listing.asin, "NewItem", "SELLABLE", str(self.sellable[sku])))
            if sku in self.unsellable:
                rows.append((sku, listing.fnsku, listing.asin, "NewItem", "UNSELLABLE", str(self.unsellable[sku])))
        return rows


def simulate_amazon(rng: random.Random, start: date, days: int, order_count: int, catalog: Catalog,
                    deliveries: Deliveries) -> None:
    used_order_ids: set[str] = set()
    stock = FbaStock(catalog)
    orders: list[AmazonOrder] = []
    for index, count in enumerate(split_evenly(order_count, days)):
        day = start + timedelta(days=index)
        begin, end = utc_midnight(day), utc_midnight(day + timedelta(days=1))
        day_orders = [build_amazon_order(rng, catalog, moment, end, used_order_ids)
                      for moment in sorted(random_instant(rng, begin, end) for _ in range(count))]
        deliveries.add(day.isoformat(), "amazon", "orders", [order.record for order in day_orders])
        deliveries.add(day.isoformat(), "amazon", "order_items", [order.items_payload for order in day_orders])
        stock.ship(day_orders)
        deliveries.add(day.isoformat(), "amazon", "inventory", stock.report_rows())
        orders.extend(day_orders)

    last_day = start + timedelta(days=days - 1)
    for order in orders:
        # Amazon posts a shipment event when it charges for shipped items, the day they ship.
        if order.shipped_at is not None and order.shipped_at.date() <= last_day:
            deliveries.add(order.shipped_at.date().isoformat(), "amazon", "financial_events",
                           [shipment_event_record(order)])
    deliveries.add(last_day.isoformat(), "amazon", "settlements", settlement_rows(rng, start, days, orders))


SETTLEMENT_AMOUNT_COLUMN = {"price-type": "price-amount", "item-related-fee-type": "item-related-fee-amount",
                            "promotion-type": "promotion-amount"}


def settlement_charges(order: AmazonOrder, line: AmazonLine) -> list[tuple[str, str, int]]:
    """Return (type column, type, amount) for each amount a settlement posts for one order line."""
    charges = [("price-type", "Principal", line.item_price)]
    if line.item_tax:
        # Amazon withholds the tax it collects as marketplace facilitator (MarketplaceFacilitatorTax).
        # NOTE: the V2 flat file's column for that fee type is assumed to be item-related-fee-type.
        charges.append(("price-type", "Tax", line.item_tax))
        charges.append(("item-related-fee-type", "MarketplaceFacilitatorTax-Principal", -line.item_tax))
    if line.shipping:
        charges.append(("price-type", "Shipping", line.shipping))
    if line.promotion:
        charges.append(("promotion-type", "Principal", -line.promotion))
    charges.append(("item-related-fee-type", "Commission", -scale_minor(line.item_price, AMAZON_REFERRAL_FEE)))
    if order.channel == "AFN":
        charges.append(("item-related-fee-type", "FBAPerUnitFulfillmentFee", -line.listing.fba_fee * line.quantity))
    return charges


# The Finances API list, type field and amount field of each settlement amount type, and the charge
# type names that differ between the two (the settlement's `Shipping` is the Finances API's `ShippingCharge`).
FINANCES_ITEM_LISTS = {"price-type": ("ItemChargeList", "ChargeType", "ChargeAmount"),
                       "item-related-fee-type": ("ItemFeeList", "FeeType", "FeeAmount"),
                       "promotion-type": ("PromotionList", "PromotionType", "PromotionAmount")}
FINANCES_CHARGE_TYPES = {"Shipping": "ShippingCharge"}


def shipment_event_record(order: AmazonOrder) -> dict:
    """Build the Finances API shipment event that posts the same amounts as the order's settlement rows."""
    items = []
    for line in order.lines:
        item: dict = {"SellerSKU": line.listing.variant.sku, "OrderItemId": line.order_item_id,
                      "QuantityShipped": line.quantity, "ItemChargeList": [], "ItemFeeList": [], "PromotionList": []}
        for type_column, charge_type, amount in settlement_charges(order, line):
            money = {"CurrencyCode": AMAZON_CURRENCY,
                     "CurrencyAmount": float(decimal_text(amount, AMAZON_CURRENCY))}
            if charge_type.startswith("MarketplaceFacilitatorTax"):
                # The Finances API lists facilitator tax as withheld tax, not as a fee.
                item.setdefault("ItemTaxWithheldList", []).append({
                    "TaxCollectionModel": "MarketplaceFacilitator",
                    "TaxesWithheld": [{"ChargeType": charge_type, "ChargeAmount": money}]})
                continue
            list_name, type_field, amount_field = FINANCES_ITEM_LISTS[type_column]
            item[list_name].append({type_field: FINANCES_CHARGE_TYPES.get(charge_type, charge_type),
                                    amount_field: money})
        items.append(item)
    return {"AmazonOrderId": order.order_id, "SellerOrderId": order.record.get("SellerOrderId"),
            "MarketplaceName": "Amazon.com", "PostedDate": order.shipped_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ShipmentItemList": items}


def settlement_row(settlement_id: str, shipment_id: str, order: AmazonOrder, line: AmazonLine, type_column: str,
                   charge_type: str, amount: int) -> dict:
    row = dict.fromkeys(SETTLEMENT_HEADER, "")
    row.update({
        "settlement-id": settlement_id,
        "transaction-type": "Order",
        "order-id": order.order_id,
        "shipment-id": shipment_id,
        "marketplace-name": "Amazon.com",
        "fulfillment-id": order.channel,
        "posted-date": report_time(order.shipped_at),
        "order-item-code": line.order_item_id,
        "sku": line.listing.variant.sku,
        "quantity-purchased": str(line.quantity),
        type_column: charge_type,
        SETTLEMENT_AMOUNT_COLUMN[type_column]: decimal_text(amount, AMAZON_CURRENCY),
    })
    if type_column == "promotion-type":
        row["promotion-id"] = "FALL-PROMO-10"
    return row


def settlement_rows(rng: random.Random, start: date, days: int, orders: list[AmazonOrder]) -> list[dict]:
    """Build the settlement report: a summary row, then one row per posted amount.

    The settlement covers the orders shipped before the last day; the report arrives on the last day.
    """
    settlement_id = str(rng.randrange(10**10, 10**11))
    period_start = utc_midnight(start)
    period_end = utc_midnight(start + timedelta(days=max(days - 1, 1)))
    rows, total = [], 0
    for order in orders:
        if order.shipped_at is None or order.shipped_at >= period_end:
            continue
        shipment_id = "D" + random_code(rng, UPPER_ALPHANUMERIC, 9)
        for line in order.lines:
            for type_column, charge_type, amount in settlement_charges(order, line):
                rows.append(settlement_row(settlement_id, shipment_id, order, line, type_column, charge_type, amount))
                total += amount

    summary = dict.fromkeys(SETTLEMENT_HEADER, "")
    summary.update({
        "settlement-id": settlement_id, "settlement-start-date": report_time(period_start),
        "settlement-end-date": report_time(period_end), "deposit-date": report_time(period_end + timedelta(days=2)),
        "total-amount": decimal_text(total, AMAZON_CURRENCY), "currency": AMAZON_CURRENCY,
    })
    return [summary] + rows


# The Stripe week

@dataclass
class StripeCharge:
    charge: dict
    balance_transaction: dict
    refund: dict | None
    refund_balance_transaction: dict | None


def wholesale_accounts(rng: random.Random) -> list[tuple[str, str, str]]:
    """Return (Stripe customer id, store name, email) for each wholesale store."""
    accounts = []
    for name in WHOLESALE_STORES:
        words = "".join(character for character in name.lower() if character.isalnum() or character == " ").split()
        accounts.append((stripe_id(rng, "cus", 14), name, f"orders@{'-'.join(words)}.example"))
    return accounts


def stripe_balance_transaction(rng: random.Random, amount: int, fee: int, moment: datetime, source: str,
                               kind: str, description: str | None, status: str) -> dict:
    fee_details = []
    if fee:
        fee_details.append({"amount": fee, "application": None, "currency": STRIPE_CURRENCY,
                            "description": "Stripe processing fees", "type": "stripe_fee"})
    return {
        "id": stripe_id(rng, "txn"),
        "object": "balance_transaction",
        "amount": amount,
        "available_on": unix_seconds(utc_midnight(moment.date() + timedelta(days=2))),
        "created": unix_seconds(moment),
        "currency": STRIPE_CURRENCY,
        "description": description,
        "exchange_rate": None,
        "fee": fee,
        "fee_details": fee_details,
        "net": amount - fee,
        "reporting_category": kind,
        "source": source,
        "status": status,
        "type": kind,
        "balance_type": "payments",
    }


def build_stripe_charge(rng: random.Random, account: tuple[str, str, str], moment: datetime, invoice: str,
                        day_end: datetime) -> StripeCharge:
    """Build a charge with its balance transaction and, for some charges, a refund later that day."""
    charge_id = stripe_id(rng, "ch")
    amount = rng.randint(150, 1500) * 100 + rng.choice((0, 50))
    description = f"Wholesale invoice {invoice}"
    balance_transaction = stripe_balance_transaction(rng, amount, fee_for(amount, STRIPE_FEE), moment, charge_id,
                                                     "charge", description, "pending")

    refund = refund_balance_transaction = None
    if rng.random() < STRIPE_REFUND_SHARE:
        refunded = amount if rng.random() < 0.6 else amount * rng.randint(10, 50) // 100
        refund_id, refund_time = stripe_id(rng, "re"), random_instant(rng, moment, day_end)
        refund_balance_transaction = stripe_balance_transaction(rng, -refunded, 0, refund_time, refund_id, "refund",
                                                                "REFUND FOR CHARGE", "available")
        refund = stripe_refund(refund_id, charge_id, refunded, refund_time, invoice, refund_balance_transaction["id"])

    charge = stripe_charge_record(rng, charge_id, amount, account, moment, invoice, balance_transaction["id"],
                                  refund["amount"] if refund else 0)
    return StripeCharge(charge, balance_transaction, refund, refund_balance_transaction)


def stripe_charge_record(rng: random.Random, charge_id: str, amount: int, account: tuple[str, str, str],
                         moment: datetime, invoice: str, balance_transaction_id: str, refunded: int) -> dict:
    customer_id, store, email = account
    return {
        "id": charge_id,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": refunded,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": balance_transaction_id,
        "billing_details": {"address": {"city": None, "country": "US", "line1": None, "line2": None,
                                        "postal_code": None, "state": None},
                            "email": email, "name": store, "phone": None},
        "calculated_statement_descriptor": "MESHLINE OUTFITTERS",
        "captured": True,
        "created": unix_seconds(moment),
        "currency": STRIPE_CURRENCY,
        "customer": customer_id,
        "description": f"Wholesale invoice {invoice}",
        "disputed": False,
        "failure_code": None,
        "failure_message": None,
        "fraud_details": {},
        "livemode": True,
        "metadata": {"order_id": invoice},
        "outcome": {"network_status": "approved_by_network", "reason": None, "risk_level": "normal",
                    "seller_message": "Payment complete.", "type": "authorized"},
        "paid": True,
        "payment_intent": stripe_id(rng, "pi"),
        "payment_method": stripe_id(rng, "pm"),
        "payment_method_details": {"card": {"brand": "visa", "country": "US", "exp_month": rng.randint(1, 12),
                                            "exp_year": rng.randint(2027, 2031), "funding": "credit",
                                            "last4": f"{rng.randrange(10**4):04d}", "network": "visa"},
                                   "type": "card"},
        "receipt_email": email,
        "refunded": refunded == amount,
        "status": "succeeded",
    }


def stripe_refund(refund_id: str, charge_id: str, amount: int, moment: datetime, invoice: str,
                  balance_transaction_id: str) -> dict:
    return {
        "id": refund_id,
        "object": "refund",
        "amount": amount,
        "balance_transaction": balance_transaction_id,
        "charge": charge_id,
        "created": unix_seconds(moment),
        "currency": STRIPE_CURRENCY,
        "metadata": {"order_id": invoice},
        "payment_intent": None,
        "reason": "requested_by_customer",
        "receipt_number": None,
        "status": "succeeded",
    }


def without_fee(balance_transaction: dict) -> dict:
    """Return the balance transaction as first delivered before Stripe settled its fee."""
    return {**balance_transaction, "fee": 0, "fee_details": [], "net": balance_transaction["amount"]}


def stripe_payout(rng: random.Random, amount: int, moment: datetime) -> tuple[dict, dict]:
    """Build an automatic payout and its balance transaction, which takes the amount off the balance."""
    payout_id = stripe_id(rng, "po")
    balance_transaction = stripe_balance_transaction(rng, -amount, 0, moment, payout_id, "payout", "STRIPE PAYOUT",
                                                     "available")
    payout = {
        "id": payout_id,
        "object": "payout",
        "amount": amount,
        "arrival_date": unix_seconds(utc_midnight(moment.date() + timedelta(days=1))),
        "automatic": True,
        "balance_transaction": balance_transaction["id"],
        "created": unix_seconds(moment),
        "currency": STRIPE_CURRENCY,
        "description": "STRIPE PAYOUT",
        "destination": "ba_1MeshLineBank0000007",
        "failure_balance_transaction": None,
        "failure_code": None,
        "failure_message": None,
        "livemode": True,
        "metadata": {},
        "method": "standard",
        "original_payout": None,
        "reconciliation_status": "completed",
        "reversed_by": None,
        "source_type": "card",
        "statement_descriptor": None,
        "status": "in_transit",
        "type": "bank_account",
    }
    return payout, balance_transaction


def plan_late_fees(rng: random.Random, day_counts: list[int]) -> set[int]:
    """Pick the charge positions whose fee arrives a day late. The last day's charges have no later day."""
    if len(day_counts) < 2:
        return set()
    eligible = range(sum(day_counts) - day_counts[-1])
    count = planted_count("late_fee", sum(day_counts))
    if count > len(eligible):
        raise ValueError(f"{sum(day_counts)} Stripe charges are too few to plant {count} late fees: "
                         "raise shopify_orders")
    return set(rng.sample(eligible, count))


def simulate_stripe(rng: random.Random, start: date, days: int, charge_count: int, deliveries: Deliveries,
                    defects: DefectLog) -> None:
    """Deliver each UTC day's charges, refunds and balance transactions, and pay each day out two days later."""
    day_counts = split_evenly(charge_count, days)
    late_fees = plan_late_fees(rng, day_counts)
    accounts = wholesale_accounts(rng)
    net_by_day: dict[int, int] = defaultdict(int)
    redelivered: dict[int, list[dict]] = defaultdict(list)
    position = 0
    for index, count in enumerate(day_counts):
        day = start + timedelta(days=index)
        key, begin, end = day.isoformat(), utc_midnight(day), utc_midnight(day + timedelta(days=1))
        balance: list[dict] = []
        for moment in sorted(random_instant(rng, begin, end) for _ in range(count)):
            built = build_stripe_charge(rng, rng.choice(accounts), moment, f"WS-{10001 + position}", end)
            deliveries.add(key, "stripe", "charges", [built.charge])
            net_by_day[index] += built.balance_transaction["net"]
            if position in late_fees:
                balance.append(without_fee(built.balance_transaction))
                redelivered[index + 1].append(built.balance_transaction)
                defects.add("late_fee", "stripe", "balance_transactions", built.balance_transaction["id"],
                            redelivered_on=(day + timedelta(days=1)).isoformat())
            else:
                balance.append(built.balance_transaction)
            if built.refund:
                deliveries.add(key, "stripe", "refunds", [built.refund])
                balance.append(built.refund_balance_transaction)
                net_by_day[index] += built.refund_balance_transaction["net"]
            position += 1

        balance.extend(redelivered[index])
        if index >= 2 and net_by_day[index - 2] > 0:
            payout, payout_transaction = stripe_payout(rng, net_by_day[index - 2], begin + timedelta(hours=2))
            deliveries.add(key, "stripe", "payouts", [payout])
            balance.append(payout_transaction)
        deliveries.add(key, "stripe", "balance_transactions", balance)


# Files

def json_bytes(body: object) -> bytes:
    # Compact, as the APIs send their bodies. Dict insertion order keeps the bytes stable.
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def tab_separated_bytes(header: tuple[str, ...], rows: list) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([row[column] for column in header] if isinstance(row, dict) else row)
    return buffer.getvalue().encode("utf-8")


def pages(records: list, size: int) -> list[list]:
    return [records[offset:offset + size] for offset in range(0, len(records), size)]


def shopify_files(stream: str, records: list[dict]) -> list[tuple[str, bytes]]:
    # GET /shopify_payments/balance/transactions.json lists its records under "transactions".
    key = "transactions" if stream == "balance_transactions" else stream
    return [(f"{stream}-{number}.json", json_bytes({key: page}))
            for number, page in enumerate(pages(records, SHOPIFY_PAGE_SIZE), 1)]


def stripe_files(stream: str, records: list[dict]) -> list[tuple[str, bytes]]:
    chunks = pages(records, STRIPE_PAGE_SIZE)
    return [(f"{stream}-{number}.json",
             json_bytes({"object": "list", "data": page, "has_more": number < len(chunks), "url": f"/v1/{stream}"}))
            for number, page in enumerate(chunks, 1)]


def amazon_files(day: str, stream: str, records: list) -> list[tuple[str, bytes]]:
    if stream == "orders":
        chunks = pages(records, AMAZON_ORDERS_PAGE_SIZE)
        files = []
        for number, page in enumerate(chunks, 1):
            payload: dict = {"Orders": page}
            if number < len(chunks):
                payload["NextToken"] = base64.b64encode(f"{day}/{number + 1}".encode()).decode()
            files.append((f"orders-getOrders-{number}.json", json_bytes({"payload": payload})))
        return files
    if stream == "order_items":
        # getOrderItems returns the items of one order, so each order's items are one file.
        return [(f"orders-getOrderItems-{number}.json", json_bytes({"payload": payload}))
                for number, payload in enumerate(records, 1)]
    if stream == "inventory":
        return [(f"GET_AFN_INVENTORY_DATA-{day}.txt", tab_separated_bytes(FBA_INVENTORY_HEADER, records))]
    if stream == "financial_events":
        chunks = pages(records, AMAZON_ORDERS_PAGE_SIZE)
        return [(f"finances-listFinancialEvents-{number}.json",
                 json_bytes({"payload": {"FinancialEvents": {"ShipmentEventList": page, "RefundEventList": []}}}))
                for number, page in enumerate(chunks, 1)]
    return [("GET_V2_SETTLEMENT_REPORT_DATA_FLAT_FILE-1.txt", tab_separated_bytes(SETTLEMENT_HEADER, records))]


def render_files(deliveries: Deliveries) -> dict[str, bytes]:
    """Render every delivery as files, keyed by path relative to the output folder."""
    files = {}
    for (day, system, stream), records in sorted(deliveries.records.items()):
        if not records:
            continue
        if system == "shopify":
            rendered = shopify_files(stream, records)
        elif system == "stripe":
            rendered = stripe_files(stream, records)
        else:
            rendered = amazon_files(day, stream, records)
        for name, content in rendered:
            files[f"{day}/{system}/{name}"] = content
    return files


def write_files(output_dir: Path, files: dict[str, bytes]) -> None:
    for relative, content in files.items():
        path = output_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def reject_existing_output(output_dir: Path, days: list[ShopDay]) -> None:
    existing = [output_dir / "manifest.json"] + [output_dir / day.key for day in days]
    for path in existing:
        if path.exists():
            raise FileExistsError(f"{path} already exists: generate into an empty or new folder, "
                                  "so that no earlier file mixes with this week's files")


# The week

def generate_week(output_dir: Path, *, start: date = DEFAULT_START, days: int = 7, seed: int = 7,
                  shopify_orders: int = 1500, amazon_orders: int = 500) -> dict:
    """Write one week of Shopify, Amazon and Stripe files with planted cases and return the manifest.

    Files go to `<output_dir>/<YYYY-MM-DD>/<system>/`, named as the file clients match them, and the
    manifest also goes to `<output_dir>/manifest.json`. Raises ValueError when the counts are too
    small for the planted cases, and FileExistsError when a day folder or manifest is already there.
    """
    if days < 1:
        raise ValueError(f"days must be 1 or more, got {days}")
    if shopify_orders < 1 or amazon_orders < 0:
        raise ValueError(f"shopify_orders must be 1 or more and amazon_orders 0 or more, "
                         f"got {shopify_orders} and {amazon_orders}")
    output_dir = Path(output_dir)
    week = shop_days(start, days)
    reject_existing_output(output_dir, week)

    rng = random.Random(seed)
    catalog = build_catalog(rng, start)
    deliveries, defects = Deliveries(), DefectLog()
    stripe_charges = max(1, shopify_orders // SHOPIFY_ORDERS_PER_STRIPE_CHARGE)
    simulate_shopify(rng, week, shopify_orders, catalog, deliveries, defects)
    simulate_amazon(rng, start, days, amazon_orders, catalog, deliveries)
    simulate_stripe(rng, start, days, stripe_charges, deliveries, defects)

    files = render_files(deliveries)
    write_files(output_dir, files)
    manifest = {
        "seed": seed,
        "start": start.isoformat(),
        "days": days,
        "orders": {"shopify": shopify_orders, "amazon": amazon_orders},
        "charges": {"stripe": stripe_charges},
        "accounts": {"shopify": SHOP_DOMAIN, "amazon_seller_id": AMAZON_SELLER_ID,
                     "amazon_marketplace_id": AMAZON_MARKETPLACE_ID, "stripe": STRIPE_ACCOUNT_ID},
        "files": len(files),
        "defects": defects.manifest(),
    }
    (output_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                              encoding="utf-8")
    return manifest


# Command line

def parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid date {text!r}: expected YYYY-MM-DD") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m meshline_pipelines.generator.week",
        description="Write a deterministic ecommerce week of Shopify, Amazon and Stripe files, with planted "
                    "cases listed in manifest.json.")
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", type=Path,
                        help="folder to write the day folders and manifest.json into, which must not contain them yet")
    parser.add_argument("--seed", type=int, default=7, help="random seed (the same seed writes the same bytes)")
    parser.add_argument("--shopify-orders", type=int, default=1500, help="Shopify orders in the week (default 1500)")
    parser.add_argument("--amazon-orders", type=int, default=500, help="Amazon orders in the week (default 500)")
    parser.add_argument("--start", type=parse_day, default=DEFAULT_START,
                        help=f"first day, YYYY-MM-DD (default {DEFAULT_START.isoformat()})")
    parser.add_argument("--days", type=int, default=7, help="number of days (default 7)")
    args = parser.parse_args(argv)

    try:
        manifest = generate_week(args.output_dir, start=args.start, days=args.days, seed=args.seed,
                                 shopify_orders=args.shopify_orders, amazon_orders=args.amazon_orders)
    except (ValueError, FileExistsError) as exc:
        parser.error(str(exc))

    last_day = args.start + timedelta(days=args.days - 1)
    print(f"Wrote {manifest['files']} files for {args.start} to {last_day} to {args.output_dir.resolve()}")
    print("Planted cases (listed in manifest.json):")
    for kind, planted in manifest["defects"].items():
        print(f"  {kind:<30} {planted['count']:>5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
