"""The interface every source client implements, live API or file snapshot alike.

A client returns `SourceBatch`es: the records of one stream that one request or one file gave,
unchanged, or the reason that request or file could not be read. The asset that calls it lands
the records raw and maps them; the client never normalizes.
"""

from abc import abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import dagster as dg


@dataclass
class SourceBatch:
    """Records from one file or response. `error` is set, and `records` empty, when it was unreadable."""

    origin: str
    records: list[Any] = field(default_factory=list)
    fetched_at: datetime | None = None
    error: str | None = None
    raw_text: str | None = None  # the unreadable body, kept so the raw landing loses nothing
    outside_window: int = 0  # records the response held that belong to another window, not passed on


class SourceClient(dg.ConfigurableResource):
    """Reads one system's records for a stream and a daily partition."""

    @property
    @abstractmethod
    def account(self) -> str:
        """Return the account part of record identity: shop domain, Stripe account, seller and marketplace."""

    @abstractmethod
    def extract(self, stream: str, partition_key: str) -> Iterable[SourceBatch]:
        """Return the stream's records for the partition (a UTC day), one batch per file or page.

        The result may be iterated twice: a large partition is validated whole before it is stored.
        """

    @abstractmethod
    def partitions_with_data(self, stream: str) -> set[str]:
        """Partition keys for which `extract` has something to return."""
