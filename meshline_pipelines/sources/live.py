"""The base of every live API client: windows of update time, cursors, and one `ApiSession`.

A live client reads the records of a stream whose cursor (the source's update or creation time)
falls in a window. A daily partition is the window of its UTC day, so a record lands in the same
partition whether the Dagster asset or `meshline extract` fetched it. Each system's client
declares how to page through an endpoint; this base keeps the window, the HTTP session and the
test seams in one place.
"""

import math
from abc import abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, ClassVar

import httpx
from pydantic import Field, PrivateAttr

from meshline_pipelines import settings
from meshline_pipelines.sources.base import SourceBatch, SourceClient
from meshline_pipelines.sources.http import ApiSession, RetryPolicy


@dataclass(frozen=True)
class Window:
    """Records whose cursor is at or after `since` and before `until`, both UTC."""

    since: datetime
    until: datetime

    def __post_init__(self) -> None:
        if self.since.tzinfo is None or self.until.tzinfo is None:
            raise ValueError("a window needs timezone-aware times; give them in UTC, e.g. 2026-11-01T00:00:00Z")
        if self.since >= self.until:
            raise ValueError(f"the window is empty: since {iso_utc(self.since)} is not before "
                             f"until {iso_utc(self.until)}")

    @classmethod
    def for_day(cls, partition_key: str) -> "Window":
        start = datetime.combine(date.fromisoformat(partition_key), time(), tzinfo=timezone.utc)
        return cls(start, start + timedelta(days=1))

    def contains(self, moment: datetime) -> bool:
        return self.since <= moment < self.until


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a `Z`, to the second unless there is a fraction: the form Shopify and Amazon document."""
    moment = moment.astimezone(timezone.utc)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def unix_seconds_floor(moment: datetime) -> int:
    return math.floor(moment.timestamp())


def unix_seconds_ceil(moment: datetime) -> int:
    return math.ceil(moment.timestamp())


def parse_cursor(value: Any) -> datetime | None:
    """Parse a cursor value into an aware UTC datetime: an ISO 8601 string with an offset, or Unix seconds."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc)
    if isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return moment.astimezone(timezone.utc) if moment.tzinfo else None
    return None


class LiveClient(SourceClient):
    """A client that calls the system's API. Subclasses page through one endpoint per stream."""

    base_url: str = Field(
        description="API base URL: the production endpoint, a sandbox, a proxy or a regional endpoint.")
    timeout_seconds: float = Field(default=30.0, description="Seconds to wait for each response.")
    max_attempts: int = Field(default=5, description="Attempts per request before the run fails.")

    system: ClassVar[str]
    base_url_setting: ClassVar[str]
    credential_settings: ClassVar[tuple[str, ...]]
    streams: ClassVar[tuple[str, ...]]

    _transport: httpx.BaseTransport | None = PrivateAttr(default=None)
    _sleep: Any = PrivateAttr(default=None)
    _session: ApiSession | None = PrivateAttr(default=None)
    _base_url_source: str | None = PrivateAttr(default=None)

    def with_transport(self, transport: httpx.BaseTransport, sleep=None) -> "LiveClient":
        """Send every request through `transport` and wait with `sleep`; tests serve recorded responses this way.

        NOTE: Dagster builds resources again from their configuration, which drops the transport;
        inside Dagster, point `base_url` at a server instead.
        """
        self._transport = transport
        self._sleep = sleep
        self._session = None
        return self

    def from_option(self, option: str) -> "LiveClient":
        """Name the command-line option that set `base_url`, so errors point at it instead of the setting."""
        self._base_url_source = option
        self._session = None
        return self

    def session(self) -> ApiSession:
        if self._session is None:
            extra = {"sleep": self._sleep} if self._sleep else {}
            self._session = ApiSession(
                system=self.system, account=self.account, base_url=self.base_url,
                base_url_setting=self._base_url_source or self.base_url_setting,
                credential_settings=self.credential_settings,
                timeout=self.timeout_seconds, retry=RetryPolicy(max_attempts=self.max_attempts),
                transport=self._transport, **self.session_options(), **extra,
            )
        return self._session

    def session_options(self) -> dict[str, Any]:
        """Headers, auth and API-specific retry hooks for `ApiSession`."""
        return {}

    @abstractmethod
    def cursor(self, stream: str, payload: Any) -> datetime | None:
        """Return the record's cursor value: its update time, or its creation time where the source has no other."""

    @abstractmethod
    def pages(self, stream: str, window: Window) -> Iterator[SourceBatch]:
        """Request the stream's records for the window, one batch per page, in the API's own paging."""

    def fetch(self, stream: str, window: Window) -> Iterator[SourceBatch]:
        """Yield the stream's records whose cursor is in the window.

        APIs filter by whole seconds or with inclusive upper bounds, so records just outside the
        window are dropped here; they belong to the neighbouring window. A record without a
        readable cursor is kept, and fails validation with the field named.
        """
        if stream not in self.streams:
            raise ValueError(f"{self.system} has no live stream {stream!r}; streams: {', '.join(self.streams)}")
        for batch in self.pages(stream, window):
            inside = []
            for payload in batch.records:
                moment = self.cursor(stream, payload)
                if moment is None or window.contains(moment):
                    inside.append(payload)
            batch.outside_window = len(batch.records) - len(inside)
            batch.records = inside
            yield batch

    def extract(self, stream: str, partition_key: str) -> Iterable[SourceBatch]:
        # A list, because a large partition is read twice and a second read must not call the API again.
        return list(self.fetch(stream, Window.for_day(partition_key)))

    def partitions_with_data(self, stream: str) -> set[str]:
        """Return every day from the first partition to today.

        An API has no cheap way to list the days with records.
        """
        first = date.fromisoformat(settings.partitions_start())
        today = datetime.now(timezone.utc).date()
        return {(first + timedelta(days=offset)).isoformat() for offset in range((today - first).days + 1)}
