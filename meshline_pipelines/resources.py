"""Dagster resources shared by every system: the ledger and the exception routing."""

from functools import lru_cache
from pathlib import Path

import dagster as dg
from pydantic import Field

from meshline_pipelines import settings
from meshline_pipelines.ledger import Ledger
from meshline_pipelines.routing import Routing, load_routing


@lru_cache(maxsize=8)
def _ledger_for(database_url: str) -> Ledger:
    # One engine per URL and process, migrated once, however many assets a run materializes.
    return Ledger.connect(database_url)


class LedgerResource(dg.ConfigurableResource):
    """The MeshLine ledger. Without `database_url`, MESHLINE_DATABASE_URL or the embedded SQLite file."""

    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL naming its driver, e.g. postgresql+psycopg://user@host/db. "
        "Unset: MESHLINE_DATABASE_URL, else SQLite under MESHLINE_HOME.",
    )

    def open(self) -> Ledger:
        return _ledger_for(self.database_url or settings.database_url())


class RoutingResource(dg.ConfigurableResource):
    """Exception owners and due times, read from a routing YAML file."""

    routing_file: str | None = Field(
        default=None, description="Path of the routing YAML file. Unset: MESHLINE_ROUTING_FILE, else the bundled file."
    )
    max_failure_rate: float | None = Field(
        default=None,
        description="Share of a partition's records that may fail validation before its blocking checks fail. "
        "Unset: MESHLINE_MAX_FAILURE_RATE, else 0.2.",
    )

    def load(self) -> Routing:
        return load_routing(Path(self.routing_file) if self.routing_file else None)

    def failure_rate_limit(self) -> float:
        return self.max_failure_rate if self.max_failure_rate is not None else settings.max_failure_rate()
