"""Shared tools for turning raw source records into canonical frames.

A system's mapper flattens its raw payloads once (`flatten`), then reads source fields by their
dotted path through a `FieldReader`, which converts types column-wise and notes every value it
could not convert as an issue for that raw record. Each canonical row carries `_record`, the
position of the raw record it came from, so a failure maps back to that record.
"""

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from meshline_pipelines.canonical.schemas import CANONICAL_MODELS, empty_frame
from meshline_pipelines.ledger.store import canonical_json, content_hash
from meshline_pipelines.money import api_minor_to_minor, decimal_to_minor

RECORD = "_record"
ISSUE_COLUMNS = ["record", "table", "column", "source_field", "kind", "rule", "value", "message"]
VERSION_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass
class MapContext:
    system: str
    account: str
    partition_key: str


@dataclass
class Normalized:
    """Canonical frames by table, and the issues found while mapping."""

    tables: dict[str, pd.DataFrame]
    issues: list[dict] = field(default_factory=list)

    def issue_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.issues, columns=ISSUE_COLUMNS)


def _dig(payload: Any, keys: tuple[str, ...]) -> Any:
    node = payload
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


class FlatRecords:
    """Payloads read by dotted field path ("total_price_set.shop_money.amount"), one row per payload.

    Each path is looked up only when it is read, and kept once read. Values stay Python objects,
    so integer IDs stay exact: pandas would turn a column of ints with a gap into floats.
    """

    def __init__(self, payloads: pd.Series):
        self.payloads = payloads
        self.index = payloads.index
        self._columns: dict[str, pd.Series] = {}

    def __len__(self) -> int:
        return len(self.payloads)

    @property
    def empty(self) -> bool:
        return self.payloads.empty

    def __getitem__(self, key):
        if isinstance(key, str):
            return self.get(key)
        return FlatRecords(self.payloads[key])

    def get(self, path: str) -> pd.Series:
        """Return the values at `path`, with None where a payload lacks it."""
        if path not in self._columns:
            keys = tuple(path.split("."))
            self._columns[path] = pd.Series(
                [_dig(payload, keys) for payload in self.payloads], index=self.index, dtype=object
            )
        return self._columns[path]


def flatten(payloads: pd.Series) -> FlatRecords:
    return FlatRecords(payloads)


def children(payloads: pd.Series, key: str) -> pd.Series:
    """Return the objects in each payload's `key` list, one row each, indexed by the parent's position."""
    lists = payloads.map(lambda payload: payload.get(key) if isinstance(payload, dict) else None)
    lists = lists[lists.map(lambda value: isinstance(value, list))]
    exploded = lists.explode().dropna()
    return exploded.rename_axis(RECORD)


@dataclass
class Children:
    """The objects of each payload's nested list, one row each, with the raw record each came from."""

    items: pd.Series
    records: pd.Series
    flat: "FlatRecords"

    def parent_field(self, payloads: pd.Series, name: str) -> pd.Series:
        """Return the parent payload's top-level field `name` for each item, as text."""
        values = payloads.map(lambda payload: payload.get(name)).astype("string")
        return pd.Series(values.loc[self.records].to_numpy(), index=self.items.index, dtype="string")


def explode(payloads: pd.Series, key: str) -> Children:
    """Take the objects in each payload's `key` list out as rows of their own."""
    nested = children(payloads, key)
    records = pd.Series(nested.index, dtype="int64")
    items = nested.reset_index(drop=True)
    return Children(items=items, records=records, flat=FlatRecords(items))


def extra_fields(payloads: pd.Series, mapped: set[str]) -> pd.Series:
    """JSON of the top-level source fields that no canonical column maps."""
    return payloads.map(
        lambda payload: canonical_json({k: v for k, v in payload.items() if k not in mapped})
        if isinstance(payload, dict) else None
    ).astype("string")


def record_hashes(payloads: pd.Series) -> pd.Series:
    return payloads.map(lambda payload: content_hash(canonical_json(payload))).astype("string")


def timestamp_versions(updated_at: pd.Series) -> pd.Series:
    return updated_at.dt.strftime(VERSION_FORMAT).astype("string")


def with_identity(frame: pd.DataFrame, context: MapContext, source_id: pd.Series, records: pd.Series) -> pd.DataFrame:
    """Add `_record` and the identity columns (system, account, source_id) in front."""
    frame.insert(0, RECORD, records.to_numpy())
    frame.insert(1, "system", context.system)
    frame.insert(2, "account", context.account)
    frame.insert(3, "source_id", source_id.to_numpy())
    # Cast even when empty: an empty object column fails the schema check that a string one passes.
    for column in ("system", "account", "source_id"):
        frame[column] = frame[column].astype("string")
    return frame


def in_model_order(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Order the columns as the model declares them, after `_record`."""
    columns = list(empty_frame(CANONICAL_MODELS[table]).columns)
    return frame[[RECORD, *columns]].reset_index(drop=True)


def empty_table(table: str) -> pd.DataFrame:
    """Return a canonical frame with no rows, for a partition whose files contained no records."""
    return empty_frame(CANONICAL_MODELS[table]).assign(**{RECORD: pd.Series(dtype="int64")})[
        [RECORD, *empty_frame(CANONICAL_MODELS[table]).columns]
    ]


class FieldReader:
    """Reads source fields of flattened records for one canonical table, noting invalid values."""

    def __init__(self, flat: FlatRecords, records: pd.Series, table: str, issues: list[dict]):
        self.flat = flat
        self.records = records
        self.table = table
        self.issues = issues

    def raw(self, path: str) -> pd.Series:
        return self.flat.get(path)

    def text(self, path: str) -> pd.Series:
        values = self.raw(path)
        structured = values.map(lambda value: isinstance(value, (dict, list))).astype(bool)
        if structured.any():
            nested = structured & values.map(bool).astype(bool)
            self._note(nested, path, path, "failed_validation", "type",
                       values[nested].map(lambda value: json.dumps(value)[:80]),
                       "expected a single value, found an object or list")
            values = values.where(~structured, None)
        return values.astype("string")

    def integer(self, path: str, column: str) -> pd.Series:
        values = self.raw(path)
        numbers = pd.to_numeric(values.astype("string"), errors="coerce")
        invalid = values.notna() & (numbers.isna() | (numbers % 1 != 0))
        self._note(invalid, column, path, "failed_validation", "type", values.astype("string"),
                   "expected a whole number")
        return numbers.where(~invalid).astype("Int64")

    def boolean(self, path: str) -> pd.Series:
        values = self.raw(path)
        result = values.map({True: True, False: False, "true": True, "false": False}).astype("boolean")
        invalid = values.notna() & result.isna()
        self._note(invalid, path, path, "failed_validation", "type", values.astype("string"), "expected true or false")
        return result

    def timestamp(self, path: str, column: str, *, unit: str | None = None, suffix: str | None = None) -> pd.Series:
        """UTC timestamps from ISO 8601 text with any offset, or from epoch numbers when `unit` is set."""
        values = self.raw(path)
        if unit:
            parsed = pd.to_datetime(pd.to_numeric(values, errors="coerce"), unit=unit, utc=True)
        else:
            text = values.astype("string")
            if suffix:
                text = text.str.removesuffix(suffix)
            parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
        present = values.notna() & (values.astype("string").str.strip() != "")
        invalid = present & parsed.isna()
        self._note(invalid, column, path, "failed_validation", "timestamp", values.astype("string"),
                   "expected an ISO 8601 timestamp such as 2026-01-31T12:00:00-05:00")
        return parsed.astype("datetime64[ns, UTC]")

    def money(self, amount_path: str, currency: pd.Series, column: str) -> pd.Series:
        parsed = decimal_to_minor(self.raw(amount_path), currency)
        self._note(parsed.error.notna(), column, amount_path, "failed_validation", "money",
                   self.raw(amount_path).astype("string"), parsed.error)
        return parsed.minor

    def api_minor_money(self, amount_path: str, currency: pd.Series, column: str) -> pd.Series:
        parsed = api_minor_to_minor(self.raw(amount_path), currency)
        self._note(parsed.error.notna(), column, amount_path, "failed_validation", "money",
                   self.raw(amount_path).astype("string"), parsed.error)
        return parsed.minor

    def currency(self, path: str) -> pd.Series:
        return self.text(path).str.strip().str.upper()

    def _note(self, mask: pd.Series, column: str, source_field: str, kind: str, rule: str,
              values: pd.Series, message) -> None:
        if not mask.any():
            return
        rows = mask[mask].index
        messages = message[rows] if isinstance(message, pd.Series) else pd.Series(message, index=rows)
        for row in rows:
            self.issues.append({
                "record": int(self.records[row]),
                "table": self.table,
                "column": column,
                "source_field": source_field,
                "kind": kind,
                "rule": f"{self.table}.{column}:{rule}",
                "value": None if pd.isna(values[row]) else str(values[row])[:200],
                "message": str(messages[row]),
            })


def sum_child_money(items: pd.Series, key: str, amount_path: str, currency_path: str, column: str,
                    line_records: pd.Series, issues: list) -> pd.Series:
    """Sum the money in each line's `key` list (tax lines, discount allocations); 0 where it is empty."""
    nested = children(items, key)
    owners = pd.Series(nested.index, dtype="int64")
    flat = flatten(nested.reset_index(drop=True))
    read = FieldReader(flat, pd.Series(line_records.loc[owners].to_numpy(), index=flat.index), "order_lines", issues)
    amounts = read.money(amount_path, read.currency(currency_path), column)
    summed = amounts.groupby(owners.to_numpy()).sum(min_count=1)
    return summed.reindex(items.index).fillna(0).astype("Int64")
