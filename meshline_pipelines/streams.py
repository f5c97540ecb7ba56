"""A system's stream, declared once: what it reads and which canonical tables it fills."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import dagster as dg
import pandas as pd

from meshline_pipelines.normalize import MapContext, Normalized


@dataclass(frozen=True)
class Reference:
    """A column whose value must be the source ID of a record stored in another canonical table.

    A value with no such record is an unmapped_reference exception; the record itself is stored.
    """

    table: str
    column: str
    target_table: str
    source_field: str


@dataclass(frozen=True)
class Stream:
    """One stream of a system, declared once: what it reads and which canonical tables it fills."""

    system: str
    name: str
    description: str
    tables: tuple[str, ...]
    record_id: Callable[[pd.Series], pd.Series]
    normalize: Callable[[pd.DataFrame, MapContext], Normalized]
    source_fields: Mapping[str, str] = field(default_factory=dict)
    references: tuple[Reference, ...] = ()
    depends_on: tuple[str, ...] = ()  # streams of the same system whose records this one refers to

    @property
    def asset_key(self) -> dg.AssetKey:
        return dg.AssetKey([self.system, self.name])


def id_at(path: str) -> Callable[[pd.Series], pd.Series]:
    """Source ID from a top-level field of each payload."""

    def read(payloads: pd.Series) -> pd.Series:
        # Converted value by value: a Series of mixed IDs and missing values would turn integer IDs into floats.
        ids = []
        for payload in payloads:
            value = payload.get(path) if isinstance(payload, dict) else None
            valid = isinstance(value, (str, int)) and not isinstance(value, bool) and value != ""
            ids.append(str(value) if valid else None)
        return pd.Series(ids, index=payloads.index, dtype="string")

    return read
