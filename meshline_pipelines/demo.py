"""The demo: the bundled real samples dropped on the days of one week, and a generated week."""

import json
import shutil
from pathlib import Path

from meshline_pipelines import settings
from meshline_pipelines.generator.week import generate_week

MANIFEST = "manifest.json"

# Day of the demo week -> (system, bundled file) dropped that day, in the order a brand receives them:
# catalogue and stock first, orders, refunds and payments during the week, payouts at its end.
DEMO_WEEK: dict[str, list[tuple[str, str]]] = {
    "2026-11-23": [("shopify", "products.json"), ("shopify", "customers.json"), ("shopify", "inventory_levels.json"),
                   ("amazon", "GET_AFN_INVENTORY_DATA.csv")],
    "2026-11-24": [("shopify", "orders.json"), ("shopify", "transactions.json")],
    "2026-11-25": [("amazon", "orders-getOrder.json"), ("amazon", "orders-getOrderItems.json"),
                   ("stripe", "charges.json")],
    "2026-11-26": [("shopify", "refunds.json"), ("stripe", "refunds.json")],
    "2026-11-27": [("shopify", "payouts.json"), ("shopify", "balance_transactions.json"),
                   ("stripe", "payouts.json"), ("stripe", "balance_transactions.json")],
    "2026-11-28": [("amazon", "GET_V2_SETTLEMENT_REPORT_DATA_FLAT_FILE.csv")],
}


def stage_demo_week(import_dir: Path | None = None, samples_dir: Path | None = None) -> list[Path]:
    """Copy the bundled samples into `<import_dir>/<day>/<system>/`; files already there are left as they are."""
    import_dir = import_dir or settings.import_dir()
    samples_dir = samples_dir or settings.bundled_samples_dir()
    staged = []
    for day, drops in DEMO_WEEK.items():
        for system, name in drops:
            target = import_dir / day / system / name
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(samples_dir / system / name, target)
            staged.append(target)
    return staged


def stage_generated_week(import_dir: Path | None = None, *, shopify_orders: int = 1500,
                         amazon_orders: int = 500) -> dict:
    """Write the generated week into the import folder once; later calls return its manifest."""
    import_dir = import_dir or settings.import_dir()
    manifest_path = import_dir / MANIFEST
    if manifest_path.exists():
        return json.loads(manifest_path.read_text(encoding="utf-8"))
    return generate_week(import_dir, shopify_orders=shopify_orders, amazon_orders=amazon_orders)


def read_manifest(import_dir: Path | None = None) -> dict | None:
    manifest_path = (import_dir or settings.import_dir()) / MANIFEST
    if not manifest_path.exists():
        return None
    return json.loads(manifest_path.read_text(encoding="utf-8"))
