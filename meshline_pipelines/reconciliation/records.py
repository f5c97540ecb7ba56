"""Inventory and customer reconciliation as Dagster assets with asset checks.

Inventory: per SKU, each compared system's total against the source of truth's (the stock rule
of `config/source_of_truth.yaml`), with `MESHLINE_STOCK_TOLERANCE` units of tolerance. Customers:
each CRM contact linked in the identity map to a storefront customer, field by field (email,
names, phone, marketing consent) against the storefront, the source of truth for customers.
A difference is a `reconciliation_mismatch` exception naming the record, the systems and both
values. The asset's check fails (ERROR) when the share of mismatched records passes the
configured maximum, and warns below it.
"""


import dagster as dg
import pandas as pd

from meshline_pipelines import settings
from meshline_pipelines.identity import STOREFRONT, normalize_email, normalize_phone, read_links
from meshline_pipelines.ledger import Ledger
from meshline_pipelines.ledger.store import utc_now
from meshline_pipelines.record_issues import exception_row
from meshline_pipelines.routing import Routing
from meshline_pipelines.source_of_truth import load_rules, stock_comparison, stock_disagreements, stock_tolerance

MISMATCH_MAX_ENV = "MESHLINE_RECONCILIATION_MISMATCH_MAX"
# Customer fields compared between the storefront and the CRM, with how each is normalized first.
CUSTOMER_FIELDS = {
    "email": normalize_email,
    "first_name": lambda value: value.strip() if isinstance(value, str) else None,
    "last_name": lambda value: value.strip() if isinstance(value, str) else None,
    "phone": normalize_phone,
    "email_marketing_state": lambda value: value.lower() if isinstance(value, str) else None,
}


def mismatch_max() -> float:
    return settings.share(MISMATCH_MAX_ENV, 0.0)


def reconcile_inventory(ledger: Ledger, routing: Routing, *, now=None) -> dict:
    """Compare stock per SKU with the source of truth; open an exception per drift beyond tolerance."""
    rules = [rule for rule in load_rules() if rule.table == "inventory_levels" and rule.compare_in]
    levels, variants = ledger.read_table("inventory_levels"), ledger.read_table("product_variants")
    tolerance = stock_tolerance()
    compared, found = [], []
    for rule in rules:
        compared.append(stock_comparison(levels, variants, rule))
        found += stock_disagreements(levels, variants, rule, routing, tolerance=tolerance, now=now)
    if found:
        ledger.open_exceptions(pd.DataFrame(found), run_id=None)
    checked = pd.concat(compared, ignore_index=True) if compared else pd.DataFrame()
    return {"checked": len(checked), "mismatched": len(found), "tolerance": tolerance,
            "largest_drift": int(checked["drift"].abs().max()) if len(checked) else 0,
            "by_system": {system: int(count) for system, count in
                          pd.Series([row["system"] for row in found], dtype="string").value_counts().items()}}


def _customer_exception(routing: Routing, crm: pd.Series, field: str, crm_value, truth_value, anchor: str) -> dict:
    return exception_row(
        routing, "reconciliation_mismatch", system=crm["system"], account=crm["account"], entity="customers",
        record_id=crm["source_id"], partition_key=crm["partition_key"],
        rule=f"customers.{field}:differs_from_storefront",
        field=field,
        reason=f"{crm['system'].capitalize()} contact {crm['source_id']} has a different {field} than storefront "
               f"customer {anchor.rsplit(':', 1)[-1]}, the source of truth. Fix: update the contact from the "
               "storefront (the contact delivery does this in live mode), or correct the storefront",
        details={"field": field, "crm": crm_value, "storefront": truth_value, "anchor": anchor})


def reconcile_customers(ledger: Ledger, routing: Routing) -> dict:
    """Compare each linked CRM contact with its storefront customer, field by field."""
    customers = ledger.read_table("customers")
    links = read_links(ledger, entity="customer")
    crm_links = links[links["system"] != STOREFRONT]
    by_identity = customers.set_index(["system", "account", "source_id"])
    found, checked = [], 0
    for link in crm_links.itertuples():
        _, system, account, source_id = link.canonical_id.split(":", 3)
        truth_key, crm_key = (system, account, source_id), (link.system, link.account, link.system_id)
        if truth_key not in by_identity.index or crm_key not in by_identity.index:
            continue
        truth, crm = by_identity.loc[truth_key], by_identity.loc[crm_key]
        crm = pd.concat([crm, pd.Series({"system": link.system, "account": link.account, "source_id": link.system_id})])
        checked += 1
        for field, normalize in CUSTOMER_FIELDS.items():
            crm_value, truth_value = normalize(crm.get(field)), normalize(truth.get(field))
            # A field the CRM does not hold (None) is not a disagreement; the contact delivery fills it.
            if crm_value is not None and truth_value is not None and crm_value != truth_value:
                found.append(_customer_exception(routing, crm, field, crm_value, truth_value, link.canonical_id))
    if found:
        ledger.open_exceptions(pd.DataFrame(found), run_id=None)
    mismatched = len({row["record_id"] for row in found})
    return {"checked": checked, "mismatched": mismatched,
            "by_field": {field: sum(1 for row in found if row["field"] == field) for field in CUSTOMER_FIELDS}}


def _check(name: str, asset_key: dg.AssetKey, summary: dict) -> dg.AssetCheckResult:
    share = summary["mismatched"] / summary["checked"] if summary["checked"] else 0.0
    limit = mismatch_max()
    blocks = share > limit
    return dg.AssetCheckResult(
        asset_key=asset_key, check_name=name, passed=summary["mismatched"] == 0,
        severity=dg.AssetCheckSeverity.ERROR if blocks else dg.AssetCheckSeverity.WARN,
        metadata={"checked": summary["checked"], "mismatched": summary["mismatched"], "share": round(share, 4),
                  "max_share": limit},
        description=None if summary["mismatched"] == 0 else (
            f"{summary['mismatched']} of {summary['checked']} records differ from the source of truth "
            f"({share:.1%}, maximum {limit:.0%}); "
            "`meshline exceptions list --kind reconciliation_mismatch` lists them"),
    )


INVENTORY = dg.AssetKey(["reconciliation", "inventory"])
CUSTOMERS = dg.AssetKey(["reconciliation", "customers"])


@dg.asset(key=INVENTORY, group_name="reconciliation", kinds={"meshline"}, required_resource_keys={"ledger", "routing"},
          check_specs=[dg.AssetCheckSpec("stock_matches_source_of_truth", asset=INVENTORY, blocking=True)],
          description="Stock per SKU in the storefront and marketplace against the source of truth, with tolerance.")
def inventory_reconciliation(context: dg.AssetExecutionContext):
    summary = reconcile_inventory(context.resources.ledger.open(), context.resources.routing.load(), now=utc_now())
    yield _check("stock_matches_source_of_truth", INVENTORY, summary)
    yield dg.MaterializeResult(metadata={"checked": summary["checked"], "mismatched": summary["mismatched"],
                                         "tolerance": summary["tolerance"], "largest_drift": summary["largest_drift"],
                                         "by_system": dg.MetadataValue.json(summary["by_system"])})


@dg.asset(key=CUSTOMERS, group_name="reconciliation", kinds={"meshline"}, required_resource_keys={"ledger", "routing"},
          check_specs=[dg.AssetCheckSpec("contacts_match_storefront", asset=CUSTOMERS, blocking=True)],
          description="CRM contacts against their storefront customers (email, names, phone, consent).")
def customer_reconciliation(context: dg.AssetExecutionContext):
    summary = reconcile_customers(context.resources.ledger.open(), context.resources.routing.load())
    yield _check("contacts_match_storefront", CUSTOMERS, summary)
    yield dg.MaterializeResult(metadata={"checked": summary["checked"], "mismatched": summary["mismatched"],
                                         "by_field": dg.MetadataValue.json(summary["by_field"])})
