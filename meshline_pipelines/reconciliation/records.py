"""Inventory and customer reconciliation as Dagster assets with asset checks.

Inventory: per SKU, each compared system's total against the source of truth's (the stock rule
of `config/source_of_truth.yaml`), with `MESHLINE_STOCK_TOLERANCE` units of tolerance. Customers:
each CRM contact linked in the identity map to a storefront customer, field by field (email,
names, phone, marketing consent, lifetime value) against the storefront, the source of truth for
customers. A difference is a `reconciliation_mismatch` exception naming the record, the systems
and both values. A mismatch whose record matches on a later run is closed. The asset's
check fails (ERROR) when the share of mismatched records passes the configured maximum, and
warns below it.
"""

import logging

import dagster as dg
import pandas as pd

from meshline_pipelines import settings
from meshline_pipelines.identity import STOREFRONT, normalize_email, normalize_phone, read_links
from meshline_pipelines.ledger import Ledger
from meshline_pipelines.ledger.store import utc_now
from meshline_pipelines.money import format_minor
from meshline_pipelines.queue import ACTIVE, close_resolved_exception
from meshline_pipelines.record_issues import exception_row
from meshline_pipelines.routing import Routing
from meshline_pipelines.source_of_truth import (
    STOCK_RULE, load_rules, stock_comparison, stock_disagreements, stock_record_id, stock_tolerance,
)

log = logging.getLogger(__name__)

KIND = "reconciliation_mismatch"
MISMATCH_MAX_ENV = "MESHLINE_RECONCILIATION_MISMATCH_MAX"

# Whether an `email_marketing_state` means opted out of marketing email. Consent is compared on this
# flag because the storefront and HubSpot name their states differently. Unsubscribed against
# subscribed or HubSpot's not_opted_out is a difference. Other states (not_subscribed, pending,
# redacted, invalid) and a missing state neither grant nor withdraw consent, so they are not compared.
OPTED_OUT_OF_EMAIL = {"unsubscribed": True, "subscribed": False, "not_opted_out": False}


def opted_out_of_email(state) -> bool | None:
    return OPTED_OUT_OF_EMAIL.get(state.strip().lower()) if isinstance(state, str) else None


# Customer fields compared between the storefront and the CRM, with how each is normalized first.
CUSTOMER_FIELDS = {
    "email": normalize_email,
    "first_name": lambda value: value.strip() if isinstance(value, str) else None,
    "last_name": lambda value: value.strip() if isinstance(value, str) else None,
    "phone": normalize_phone,
    "email_marketing_state": opted_out_of_email,
}
CONSENT_FIELD = "email_marketing_state"
# The lifetime value, compared only between amounts in the same currency and never converted.
LIFETIME_VALUE_FIELD = "total_spent_amount"
COMPARED_FIELDS = (*CUSTOMER_FIELDS, LIFETIME_VALUE_FIELD)


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
    # Only stock compared with a fresher authoritative total is known to match it now.
    settled = {(row.system, row.account, "inventory_levels", stock_record_id(row.sku, row.location), STOCK_RULE)
               for row in checked.itertuples() if row.authority_fresher} if len(checked) else set()
    closed = close_resolved(ledger, found, settled,
                            resolved="the stock now matches the source of truth within the tolerance")
    return {"checked": len(checked), "mismatched": len(found), "tolerance": tolerance, "closed": closed,
            "largest_drift": int(checked["drift"].abs().max()) if len(checked) else 0,
            "by_system": {system: int(count) for system, count in
                          pd.Series([row["system"] for row in found], dtype="string").value_counts().items()}}


# Display names of the CRM systems that `str.capitalize` spells wrong, for exception reasons.
CRM_NAMES = {"hubspot": "HubSpot", "netsuite": "NetSuite"}


def _crm_name(system: str) -> str:
    return CRM_NAMES.get(system, system.capitalize())


def _customer_rule(field: str) -> str:
    return f"customers.{field}:differs_from_storefront"


def _customer_exception(routing: Routing, crm: pd.Series, field: str, crm_value, truth_value, anchor: str, *,
                        difference: str | None = None, fix: str | None = None, details: dict | None = None) -> dict:
    storefront_id = anchor.rsplit(":", 1)[-1]
    difference = difference or f"has a different {field} than storefront customer {storefront_id}, the source of truth"
    fix = fix or ("update the contact from the storefront (the contact delivery does this in live mode), "
                  "or correct the storefront")
    # Both values are part of the fingerprint, so a changed difference opens a new exception whose
    # reason states it, and the run closes the one it replaces.
    return exception_row(
        routing, KIND, system=crm["system"], account=crm["account"], entity="customers",
        record_id=crm["source_id"], partition_key=crm["partition_key"], rule=_customer_rule(field), field=field,
        reason=f"{_crm_name(crm['system'])} contact {crm['source_id']} {difference}. Fix: {fix}",
        fingerprint_extra=(str(crm_value), str(truth_value)),
        details={"field": field, "crm": crm_value, "storefront": truth_value, "anchor": anchor, **(details or {})})


def _consent_exception(routing: Routing, crm: pd.Series, truth: pd.Series, anchor: str) -> dict:
    crm_state, truth_state = crm.get(CONSENT_FIELD), truth.get(CONSENT_FIELD)
    storefront_id = anchor.rsplit(":", 1)[-1]
    if opted_out_of_email(truth_state):
        difference = (f"is not opted out of email, but storefront customer {storefront_id}, the source of truth, "
                      "unsubscribed from email marketing")
        fix = f"unsubscribe the contact from all email in {_crm_name(crm['system'])}"
    else:
        difference = (f"opted out of all email, but storefront customer {storefront_id}, the source of truth, is "
                      "subscribed to email marketing")
        fix = "confirm the customer's current consent and correct the system that is wrong"
    fix += ". The contact delivery does not send consent"
    return _customer_exception(routing, crm, CONSENT_FIELD, crm_state, truth_state, anchor, difference=difference,
                               fix=fix)


def _lifetime_value_exception(routing: Routing, crm: pd.Series, crm_amount: int, truth_amount: int, currency: str,
                              anchor: str) -> dict:
    crm_value, truth_value = format_minor(crm_amount, currency), format_minor(truth_amount, currency)
    storefront_id = anchor.rsplit(":", 1)[-1]
    difference = (f"has a lifetime value of {crm_value} {currency}, but storefront customer {storefront_id}, the "
                  f"source of truth, has spent {truth_value} {currency}")
    fix = (f"compare the contact's lifetime value in {_crm_name(crm['system'])} with the storefront customer's "
           "orders. For HubSpot it is the property that HUBSPOT_LIFETIME_VALUE_PROPERTY names, by default "
           "total_revenue, which sums the contact's closed won deals")
    return _customer_exception(
        routing, crm, LIFETIME_VALUE_FIELD, crm_value, truth_value, anchor, difference=difference, fix=fix,
        details={"currency": currency, "difference": format_minor(crm_amount - truth_amount, currency)})


def _amount(row: pd.Series) -> tuple[int, str] | None:
    amount, currency = row.get(LIFETIME_VALUE_FIELD), row.get("total_spent_currency")
    if amount is None or pd.isna(amount) or not isinstance(currency, str):
        return None
    return int(amount), currency.upper()


def close_resolved(ledger: Ledger, found: list[dict], compared: set[tuple[str, str, str, str, str]], *,
                   resolved: str | None = None) -> list[int]:
    """Close the active mismatches of (system, account, entity, record ID, rule) compared this run but not found.

    Such a difference is gone, or has changed and was opened again under a new fingerprint.
    Approved and rejected exceptions stay as decided, because those are an owner's decisions.
    """
    stored = ledger.read_exceptions()
    if stored.empty:
        return []
    current = {row["fingerprint"] for row in found}
    still_differs = {(row["system"], row["account"], row["entity"], row["record_id"], row["rule"]) for row in found}
    stale = stored[(stored["kind"] == KIND) & stored["status"].isin(ACTIVE) & ~stored["fingerprint"].isin(current)]
    closed = []
    for row in stale.itertuples():
        key = (row.system, row.account, row.entity, row.record_id, row.rule)
        if key not in compared:
            continue
        reason = ("replaced by an exception with the current difference" if key in still_differs
                  else resolved or f"the {row.field} now matches the source of truth")
        if close_resolved_exception(ledger, int(row.id), reason):
            closed.append(int(row.id))
    return closed


def reconcile_customers(ledger: Ledger, routing: Routing) -> dict:
    """Compare each linked CRM contact with its storefront customer field by field, and open and close exceptions."""
    customers = ledger.read_table("customers")
    links = read_links(ledger, entity="customer")
    crm_links = links[links["system"] != STOREFRONT]
    by_identity = customers.set_index(["system", "account", "source_id"])
    found, checked, not_comparable = [], 0, 0
    compared: set[tuple[str, str, str, str, str]] = set()
    for link in crm_links.itertuples():
        _, system, account, source_id = link.canonical_id.split(":", 3)
        truth_key, crm_key = (system, account, source_id), (link.system, link.account, link.system_id)
        if truth_key not in by_identity.index or crm_key not in by_identity.index:
            continue
        truth, crm = by_identity.loc[truth_key], by_identity.loc[crm_key]
        crm = pd.concat([crm, pd.Series({"system": link.system, "account": link.account, "source_id": link.system_id})])
        checked += 1
        contact = (link.system, link.account, "customers", link.system_id)

        for field, normalize in CUSTOMER_FIELDS.items():
            crm_value, truth_value = normalize(crm.get(field)), normalize(truth.get(field))
            # None is a value that one side does not hold, or a consent state that neither grants nor
            # withdraws consent. Neither is a disagreement.
            if crm_value is None or truth_value is None:
                continue
            compared.add((*contact, _customer_rule(field)))
            if crm_value == truth_value:
                continue
            if field == CONSENT_FIELD:
                found.append(_consent_exception(routing, crm, truth, link.canonical_id))
            else:
                found.append(_customer_exception(routing, crm, field, crm_value, truth_value, link.canonical_id))

        crm_amount, truth_amount = _amount(crm), _amount(truth)
        if crm_amount is None or truth_amount is None:
            continue
        if crm_amount[1] != truth_amount[1]:
            not_comparable += 1
            continue
        compared.add((*contact, _customer_rule(LIFETIME_VALUE_FIELD)))
        if crm_amount[0] != truth_amount[0]:
            found.append(_lifetime_value_exception(routing, crm, crm_amount[0], truth_amount[0], crm_amount[1],
                                                   link.canonical_id))

    counts = ledger.open_exceptions(pd.DataFrame(found), run_id=None) if found else {
        "opened": 0, "seen_again": 0, "reopened": 0}
    closed = close_resolved(ledger, found, compared)
    mismatched = len({row["record_id"] for row in found})
    if not_comparable:
        log.info("customer reconciliation: %d contacts have a lifetime value in another currency than their "
                 "storefront customer and were not compared on it", not_comparable)
    log.info("customer reconciliation: %d contacts checked, %d mismatched; exceptions %s, %d closed",
             checked, mismatched, counts, len(closed))
    return {"checked": checked, "mismatched": mismatched,
            "by_field": {field: sum(1 for row in found if row["field"] == field) for field in COMPARED_FIELDS},
            "lifetime_value_other_currency": not_comparable, "closed": closed}


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
          description="CRM contacts against their storefront customers (email, names, phone, consent, lifetime "
                      "value). lifetime_value_other_currency counts contacts whose currency differs.")
def customer_reconciliation(context: dg.AssetExecutionContext):
    summary = reconcile_customers(context.resources.ledger.open(), context.resources.routing.load())
    yield _check("contacts_match_storefront", CUSTOMERS, summary)
    yield dg.MaterializeResult(metadata={"checked": summary["checked"], "mismatched": summary["mismatched"],
                                         "by_field": dg.MetadataValue.json(summary["by_field"]),
                                         "lifetime_value_other_currency": summary["lifetime_value_other_currency"],
                                         "exceptions_closed": len(summary["closed"])})
