"""The demo week: the bundled real samples dropped into the import folder on the days of one week."""

import shutil
from pathlib import Path

from meshline_pipelines import settings

# Day of the demo week -> (system, bundled file) dropped that day, in the order a brand receives them:
# catalogue and stock first, orders, refunds and payments during the week, payouts at its end.
DEMO_WEEK: dict[str, list[tuple[str, str]]] = {
    "2026-11-23": [("shopify", "customers.json"), ("shopify", "inventory_levels.json"),
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
