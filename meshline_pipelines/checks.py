"""Pandera models as blocking Dagster asset checks, scoped to the partition being materialized.

The check runs inside the asset's step (declared through `check_specs`), so it validates exactly
the partition's rows. A plain `@asset_check` would load every partition through the IO manager.
"""

from dataclasses import dataclass

import dagster as dg
import pandas as pd
import pandera.errors

from meshline_pipelines.canonical.schemas import CANONICAL_MODELS
from meshline_pipelines.normalize import ISSUE_COLUMNS, RECORD
from meshline_pipelines.privacy import mask_personal

# Pandera's name for the nullability check; a null in a required column is a missing field.
NOT_NULLABLE = "not_nullable"


def schema_check_name(table: str) -> str:
    return f"{table}_schema"


def schema_check_spec(asset_key: dg.AssetKey, table: str) -> dg.AssetCheckSpec:
    model = CANONICAL_MODELS[table]
    return dg.AssetCheckSpec(
        name=schema_check_name(table),
        asset=asset_key,
        blocking=True,
        description=(
            f"Validates the partition's `{table}` rows against the canonical `{model.__name__}` model. "
            "Failing records are held back and opened as exceptions; the check fails with ERROR, "
            "blocking downstream assets, when the share of failing records passes the configured maximum."
        ),
    )


@dataclass
class CheckOutcome:
    table: str
    records: int
    failed_records: int
    max_failure_rate: float
    unreadable_files: list[str]

    @property
    def failure_rate(self) -> float:
        return self.failed_records / self.records if self.records else 0.0

    @property
    def blocks(self) -> bool:
        return self.failure_rate > self.max_failure_rate

    def result(self, failed_rules: dict[str, int], partition_key: str, *, system: str | None = None,
               held_records: list[str] | None = None) -> dg.AssetCheckResult:
        """Build the check's result; a failed one links its held records to the exception queue."""
        passed = self.failed_records == 0 and not self.unreadable_files
        severity = dg.AssetCheckSeverity.ERROR if self.blocks else dg.AssetCheckSeverity.WARN
        metadata = {
            "partition_key": partition_key,
            "records": self.records,
            "failed_records": self.failed_records,
            "failure_rate": round(self.failure_rate, 4),
            "max_failure_rate": self.max_failure_rate,
            "failed_rules": dg.MetadataValue.json(failed_rules),
        }
        if self.unreadable_files:
            metadata["unreadable_files"] = dg.MetadataValue.json(self.unreadable_files)
        if held_records:
            metadata["held_records"] = dg.MetadataValue.json(held_records)
        if not passed and system:
            metadata["exception_queue"] = dg.MetadataValue.md(
                f"`meshline exceptions list --system {system} --status open` lists every held record; "
                f"`meshline trace {system} RECORD_ID` shows one record's path.")
        return dg.AssetCheckResult(
            check_name=schema_check_name(self.table),
            passed=passed,
            severity=severity,
            metadata=metadata,
            description=None if passed else self.describe(),
        )

    def describe(self) -> str:
        parts = []
        if self.failed_records:
            parts.append(
                f"{self.failed_records} of {self.records} records failed validation "
                f"({self.failure_rate:.1%}, maximum {self.max_failure_rate:.0%})"
            )
        if self.unreadable_files:
            parts.append(f"unreadable files: {', '.join(self.unreadable_files)}")
        action = "nothing was stored for this partition" if self.blocks else "the other records were stored"
        return "; ".join(parts) + f"; {action}. See `meshline exceptions list`."


# Plain-language messages for the model's rules, by pandera check name.
RULE_MESSAGES = {
    "isin": "is not one of the allowed values",
    "str_matches": "does not have the expected format",
    "str_length": "is empty",
    "greater_than_or_equal_to": "is negative",
    "amount_has_currency": "has an amount without a currency",
    "sku_or_inventory_item": "has neither a SKU nor an inventory item ID",
}


def _rule_message(column: str | None, check: str, value: str | None) -> str:
    if check == "isin" and column and column.endswith("currency"):
        predicate = "is not an ISO 4217 currency code with a minor unit, such as USD"
    else:
        predicate = RULE_MESSAGES.get(check, f"breaks the rule {check}")
    return f"value {mask_personal(column, value)!r} {predicate}" if column else f"the record {predicate}"


def schema_failures(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of `frame` that break the table's model, as issues (one per row and rule)."""
    model = CANONICAL_MODELS[table]
    try:
        model.validate(frame, lazy=True)
        return pd.DataFrame(columns=ISSUE_COLUMNS)
    except pandera.errors.SchemaErrors as errors:
        cases = errors.failure_cases

    whole_column = cases["index"].isna()
    if whole_column.any():
        # A column-level failure (wrong dtype, missing column) is a bug in the mapper, not bad data.
        problems = cases.loc[whole_column, ["column", "check"]].astype(str).agg(": ".join, axis=1)
        raise TypeError(f"{table} frame does not match {model.__name__}: {'; '.join(problems)}")

    cases = cases.assign(index=cases["index"].astype(int))
    values = cases["failure_case"].astype("string").str.slice(0, 200)
    column = cases["column"].where(cases["schema_context"] == "Column", None)
    # "isin(['AED', ...])" names the rule by its check alone; the failing value is kept separately.
    check = cases["check"].astype(str).str.split("(", n=1).str[0]
    kind = check.map(lambda name: "missing_field" if name == NOT_NULLABLE else "failed_validation")
    return pd.DataFrame({
        "record": frame.loc[cases["index"], RECORD].to_numpy(),
        "table": table,
        "column": column.to_numpy(),
        "source_field": None,
        "kind": kind.to_numpy(),
        "rule": (table + "." + column.fillna("row").astype(str) + ":" + check).to_numpy(),
        "value": values.to_numpy(),
        "message": [_rule_message(name, rule, None if pd.isna(value) else value)
                    for name, rule, value in zip(column, check, values)],
    })

