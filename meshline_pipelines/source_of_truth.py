"""Source of truth per field: which system's value wins, how old it may be, who must agree with it.

Rules come from `config/source_of_truth.yaml` (or MESHLINE_SOURCE_OF_TRUTH_FILE). An
authoritative value older than its `max_age` is a `stale_source_of_truth` exception on that
record. For stock, the systems in `compare_in` are compared per SKU with the authoritative
total: a different value where the authoritative one is the fresher is a
`reconciliation_mismatch` exception on the other system's record, naming both values.
"""

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pandas as pd
import yaml

from meshline_pipelines import settings
from meshline_pipelines.canonical.schemas import CANONICAL_MODELS, SYSTEMS
from meshline_pipelines.ledger import Ledger
from meshline_pipelines.ledger.store import utc_now
from meshline_pipelines.record_issues import exception_row
from meshline_pipelines.routing import Routing

FILE_ENV = "MESHLINE_SOURCE_OF_TRUTH_FILE"
TOLERANCE_ENV = "MESHLINE_STOCK_TOLERANCE"
CHANNEL = "channel"
_DURATION = re.compile(r"^(\d+)\s*([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


class SourceOfTruthError(ValueError):
    pass


@dataclass(frozen=True)
class FieldRule:
    table: str
    column: str
    system: str
    max_age: timedelta | None = None
    compare_in: tuple[str, ...] = ()
    # For stock: the same location in each system, one tuple of (system, location ID) pairs per
    # location. Without it, each SKU's totals across locations are compared.
    locations: tuple[tuple[tuple[str, str], ...], ...] = ()


def _duration(value, where: str) -> timedelta:
    match = _DURATION.match(str(value).strip())
    if not match or int(match.group(1)) == 0:
        raise SourceOfTruthError(f"{where}: invalid max_age {value!r}: write a duration such as 30m, 24h or 7d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _locations(value, where: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SourceOfTruthError(f"{where}: expected a list of mappings such as {{netsuite: \"1\", shopify: \"655441491\"}}")
    groups = []
    for position, mapping in enumerate(value):
        if not isinstance(mapping, dict) or len(mapping) < 2:
            raise SourceOfTruthError(f"{where}[{position}]: expected a mapping of at least two systems to their "
                                     "location IDs")
        unknown = [system for system in mapping if system not in SYSTEMS]
        if unknown:
            raise SourceOfTruthError(f"{where}[{position}]: unknown system {', '.join(unknown)}")
        groups.append(tuple(sorted((system, str(location)) for system, location in mapping.items())))
    return tuple(groups)


def load_rules(path: Path | None = None) -> list[FieldRule]:
    """Read and check the rules; an error names the rule's position, its key and the fix."""
    bundled = Path(str(settings.routing_file())).with_name("source_of_truth.yaml")
    path = path or Path(os.environ.get(FILE_ENV) or bundled)
    document = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    rules = []
    for position, entry in enumerate(document.get("fields") or []):
        where = f"{path}: fields[{position}]"
        if not isinstance(entry, dict):
            raise SourceOfTruthError(f"{where}: expected a mapping with field and system")
        unknown = set(entry) - {"field", "system", "max_age", "compare_in", "locations"}
        if unknown:
            raise SourceOfTruthError(f"{where}: unknown keys {', '.join(sorted(unknown))}: "
                                     "allowed are field, system, max_age, compare_in, locations")
        table, _, column = str(entry.get("field", "")).partition(".")
        if table not in CANONICAL_MODELS or column not in CANONICAL_MODELS[table].to_schema().columns:
            raise SourceOfTruthError(f"{where}.field: {entry.get('field')!r} is not TABLE.COLUMN of the "
                                     "canonical model")
        system = entry.get("system")
        if system != CHANNEL and system not in SYSTEMS:
            raise SourceOfTruthError(f"{where}.system: unknown system {system!r}: expected channel or one of "
                                     f"{', '.join(SYSTEMS)}")
        compare_in = tuple(entry.get("compare_in") or ())
        for other in compare_in:
            if other not in SYSTEMS:
                raise SourceOfTruthError(f"{where}.compare_in: unknown system {other!r}")
        max_age = _duration(entry["max_age"], where) if entry.get("max_age") is not None else None
        locations = _locations(entry.get("locations"), f"{where}.locations")
        rules.append(FieldRule(table, column, system, max_age, compare_in, locations))
    return rules


def stale_values(table: pd.DataFrame, rule: FieldRule, routing: Routing, now) -> list[dict]:
    """Authoritative records whose last update is older than the rule allows."""
    if rule.max_age is None or rule.system == CHANNEL or "updated_at" not in table:
        return []
    cutoff = pd.Timestamp(now) - rule.max_age
    old = table[(table["system"] == rule.system) & table["updated_at"].notna() & (table["updated_at"] < cutoff)]
    return [
        exception_row(routing, "stale_source_of_truth", system=rule.system, account=row.account, entity=rule.table,
                   record_id=row.source_id, partition_key=row.partition_key,
                   rule=f"{rule.table}.{rule.column}:older_than_{int(rule.max_age.total_seconds() // 60)}m",
                   field=rule.column, value=getattr(row, rule.column),
                   reason=f"{rule.system.capitalize()} is the source of truth for {rule.table}.{rule.column}, and its "
                          f"value for {row.source_id} was last updated {row.updated_at:%Y-%m-%d %H:%M} UTC, longer "
                          f"ago than {rule.max_age}. Fix: check the {rule.system} connection and its last "
                          "extraction; stock decisions use this value until it is fresh",
                   details={"updated_at": row.updated_at})
        for row in old.itertuples()
    ]


def stock_by_sku(levels: pd.DataFrame, variants: pd.DataFrame,
                 locations: tuple[tuple[tuple[str, str], ...], ...] = ()) -> pd.DataFrame:
    """Total available per system, account, SKU and location, and the newest update among the summed rows.

    With `locations`, a row's location is the number of the mapped location it belongs to, and rows
    at an unmapped location are left out. Without, every row counts towards location `all`.
    """
    known = variants.dropna(subset=["inventory_item_id", "sku"])
    item_skus = dict(zip(zip(known["system"], known["account"], known["inventory_item_id"]), known["sku"]))
    keyed = levels.copy()
    # A storefront level names its inventory item only; the variant with that item gives the SKU.
    from_variants = [item_skus.get(key) for key in zip(keyed["system"], keyed["account"], keyed["inventory_item_id"])]
    keyed["sku"] = keyed["sku"].fillna(pd.Series(from_variants, index=keyed.index, dtype="string"))
    keyed = keyed[keyed["sku"].notna()]
    if locations:
        mapped = {pair: f"location {number}" for number, group in enumerate(locations, start=1) for pair in group}
        keyed["location"] = [mapped.get((system, str(location))) for system, location
                             in zip(keyed["system"], keyed["location_id"])]
        keyed = keyed[keyed["location"].notna()]
    else:
        keyed["location"] = "all"
    return keyed.groupby(["system", "account", "sku", "location"]).agg(
        available=("available", "sum"), updated_at=("updated_at", "max"), record=("source_id", "first"),
        partition_key=("partition_key", "max")).reset_index()


def stock_tolerance() -> int:
    raw = os.environ.get(TOLERANCE_ENV)
    if raw is None:
        return 0
    try:
        units = int(raw)
    except ValueError:
        raise SourceOfTruthError(f"{TOLERANCE_ENV}={raw!r} is not a whole number of units: "
                                 "set, for example, 2") from None
    if units < 0:
        raise SourceOfTruthError(f"{TOLERANCE_ENV}={raw!r} is negative: set 0 or more units")
    return units


def stock_comparison(levels: pd.DataFrame, variants: pd.DataFrame, rule: FieldRule) -> pd.DataFrame:
    """Per compared system and SKU: its total, the authoritative total, the drift and the authority's age."""
    totals = stock_by_sku(levels, variants, rule.locations)
    truth = (totals[totals["system"] == rule.system].sort_values("updated_at")
             .drop_duplicates(["sku", "location"], keep="last").set_index(["sku", "location"]))
    keys = pd.MultiIndex.from_frame(totals[["sku", "location"]])
    compared = totals[totals["system"].isin(rule.compare_in) & keys.isin(truth.index)].copy()
    matched = pd.MultiIndex.from_frame(compared[["sku", "location"]])
    compared["authoritative"] = truth["available"].reindex(matched).to_numpy()
    compared["authoritative"] = compared["authoritative"].astype("Int64")
    compared["authoritative_at"] = truth["updated_at"].reindex(matched).to_numpy()
    compared["drift"] = (compared["available"] - compared["authoritative"]).astype("Int64")
    compared["authority_fresher"] = compared["updated_at"].isna() | (
        compared["authoritative_at"].notna() & (compared["authoritative_at"] >= compared["updated_at"]))
    return compared.reset_index(drop=True)


STOCK_RULE = "inventory_levels.available:differs_from_source_of_truth"


def stock_record_id(sku: str, location: str) -> str:
    """Name a stock record in exceptions: the SKU, and its location when stock is compared per location."""
    return f"sku:{sku}" if location == "all" else f"sku:{sku}@{location}"


def stock_disagreements(levels: pd.DataFrame, variants: pd.DataFrame, rule: FieldRule, routing: Routing, *,
                        tolerance: int = 0, now=None) -> list[dict]:
    """Stock that differs from a fresher authoritative total by more than `tolerance` units."""
    now = pd.Timestamp(now or utc_now())
    compared = stock_comparison(levels, variants, rule)
    drifting = compared[compared["authority_fresher"] & (compared["drift"].abs() > tolerance)]
    found = []
    for row in drifting.itertuples():
        age = now - row.authoritative_at if pd.notna(row.authoritative_at) else None
        age_text = f", updated {age.days} days {age.seconds // 3600} hours ago" if age is not None else ""
        found.append(exception_row(
            routing, "reconciliation_mismatch", system=row.system, account=row.account, entity="inventory_levels",
            record_id=stock_record_id(row.sku, row.location), partition_key=row.partition_key,
            rule=STOCK_RULE, field="available", value=row.available,
            reason=f"{row.system.capitalize()} shows {int(row.available)} available for SKU {row.sku}"
                   f"{'' if row.location == 'all' else ' at ' + row.location}, while "
                   f"{rule.system.capitalize()}, the source of truth for stock, shows {int(row.authoritative)}"
                   f"{age_text} (drift {int(row.drift):+d}, tolerance {tolerance}). Fix: set the stock in "
                   f"{row.system.capitalize()} from {rule.system.capitalize()}, or correct {rule.system.capitalize()}",
            details={"sku": row.sku, "value": int(row.available), "source_of_truth": int(row.authoritative),
                     "drift": int(row.drift), "source_of_truth_updated_at": row.authoritative_at}))
    return found


def check(ledger: Ledger, routing: Routing, *, now=None, rules: list[FieldRule] | None = None,
          run_id: str | None = None) -> dict[str, int]:
    """Apply every rule; open its exceptions; return how many were opened, seen again and reopened."""
    now = now or utc_now()
    rules = load_rules() if rules is None else rules
    found: list[dict] = []
    for rule in rules:
        table = ledger.read_table(rule.table)
        found += stale_values(table, rule, routing, now)
        if rule.table == "inventory_levels" and rule.column == "available" and rule.compare_in:
            found += stock_disagreements(table, ledger.read_table("product_variants"), rule, routing,
                                         tolerance=stock_tolerance(), now=now)
    if not found:
        return {"opened": 0, "seen_again": 0, "reopened": 0}
    return ledger.open_exceptions(pd.DataFrame(found), run_id=run_id)
