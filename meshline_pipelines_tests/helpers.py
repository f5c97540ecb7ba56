"""Small helpers for running streams against a test ledger."""

from meshline_pipelines.amazon.client import AmazonFileClient
from meshline_pipelines.definitions import STREAMS
from meshline_pipelines.ingest import run_stream
from meshline_pipelines.shopify.client import ShopifyFileClient
from meshline_pipelines.stripe.client import StripeFileClient

SHOP = "jsmith.myshopify.com"


def clients(import_dir) -> dict:
    root = str(import_dir)
    return {
        "shopify": ShopifyFileClient(shop=SHOP, import_dir=root),
        "amazon": AmazonFileClient(seller_id="A2TESTSELLER", marketplace_id="ATVPDKIKX0DER", import_dir=root),
        "stripe": StripeFileClient(account_id="acct_test", import_dir=root),
    }


def stream(system: str, name: str):
    return next(s for s in STREAMS if s.system == system and s.name == name)


def run(system: str, name: str, import_dir, ledger, routing, *, partition: str = "2026-11-24", **options):
    return run_stream(stream(system, name), clients(import_dir)[system], ledger, routing,
                      partition_key=partition, run_id="test-run", **options)
