"""Incremental extraction from a live API: from the stored watermark, through the ledger, to a new one.

An extraction requests the records updated since the watermark, less a look-back window,
and fetches every page before it stores anything: a failure midway stores nothing and leaves the
watermark where it was. Records are then stored by daily partition (the UTC day of their cursor,
the same partition the Dagster asset gives them). Each partition moves the watermark in the
transaction that stores its last rows, in day order, and a blocked partition stops it there.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone

import dagster as dg
import pandas as pd

from meshline_pipelines import settings
from meshline_pipelines.ingest import StreamRun, run_batches
from meshline_pipelines.ledger import Ledger, Watermark
from meshline_pipelines.ledger.store import ABSORBED, CONFLICT, INSERTED, STALE, UPDATED, utc_now
from meshline_pipelines.routing import Routing
from meshline_pipelines.sources.base import SourceBatch
from meshline_pipelines.sources.live import LiveClient, Window, iso_utc
from meshline_pipelines.streams import Stream

log = logging.getLogger(__name__)


@dataclass
class Extraction:
    """Counts and watermarks of one incremental extraction."""

    stream: Stream
    account: str
    window: Window
    watermark_before: Watermark
    watermark_after: Watermark
    fetched: int = 0
    already_stored: int = 0
    runs: list[StreamRun] = field(default_factory=list)

    def decisions(self, *names: str) -> int:
        primary = self.stream.tables[0]
        return sum(run.stored[primary].count(name) for run in self.runs if primary in run.stored for name in names)

    @property
    def stored(self) -> int:
        return self.decisions(INSERTED, UPDATED)

    @property
    def unchanged(self) -> int:
        return self.decisions(ABSORBED, STALE)

    @property
    def conflicts(self) -> int:
        return self.decisions(CONFLICT)

    @property
    def failed_records(self) -> int:
        return sum(run.failed_records for run in self.runs)

    @property
    def exceptions_opened(self) -> int:
        return sum(run.exceptions.get("opened", 0) for run in self.runs)

    @property
    def blocked_partitions(self) -> list[str]:
        return [run.partition_key for run in self.runs if run.quarantined]


def start_of_partitions() -> datetime:
    first = datetime.fromisoformat(settings.partitions_start()).date()
    return datetime.combine(first, time(), tzinfo=timezone.utc)


def extraction_window(watermark: Watermark, *, since: datetime | None, until: datetime | None,
                      lookback: timedelta) -> Window:
    """Return the window to request: `since` when given, else the watermark less the look-back, else the first
    partition."""
    if since is None:
        since = watermark.cursor - lookback if watermark.cursor else start_of_partitions()
    return Window(since, until or utc_now())


def _records(stream: Stream, client: LiveClient, batches: list[SourceBatch]) -> pd.DataFrame:
    rows = [
        {"batch": number, "payload": payload, "cursor": client.cursor(stream.name, payload)}
        for number, batch in enumerate(batches)
        for payload in batch.records
    ]
    records = pd.DataFrame(rows, columns=["batch", "payload", "cursor"])
    records["cursor"] = pd.to_datetime(records["cursor"], utc=True)
    records["record_id"] = stream.record_id(records["payload"]) if not records.empty else pd.Series(dtype="string")
    return records


def _partition_batches(batches: list[SourceBatch], records: pd.DataFrame) -> list[SourceBatch]:
    """Cut the original pages down to the given records, so origins and fetch times stay true."""
    kept = []
    for number, page in records.groupby("batch", sort=True):
        batch = batches[int(number)]
        kept.append(SourceBatch(origin=batch.origin, records=page["payload"].tolist(), fetched_at=batch.fetched_at))
    return kept


def extract_stream(stream: Stream, client: LiveClient, ledger: Ledger, routing: Routing, *,
                   since: datetime | None = None, until: datetime | None = None,
                   lookback: timedelta | None = None, run_id: str | None = None, max_failure_rate: float = 0.2,
                   logger: logging.Logger | dg.DagsterLogManager = log,
                   on_page: Callable[[SourceBatch], None] | None = None) -> Extraction:
    """Extract the stream's records since its watermark and store them; return what happened.

    Records read again because they tie with the watermark's cursor, and were stored by an earlier
    run, are counted as already stored. The ledger absorbs them unless they changed. Records with
    no cursor (report rows) go to the partition of the window's last day, and a stream whose
    records all lack a cursor moves its watermark to the window's end.
    """
    account = client.account
    where = f"{stream.system}/{stream.name} ({account})"
    lookback = timedelta(minutes=settings.lookback_minutes()) if lookback is None else lookback
    watermark = ledger.read_watermark(stream.system, account, stream.name)
    window = extraction_window(watermark, since=since, until=until, lookback=lookback)
    logger.info(f"{where}: extracting {iso_utc(window.since)} to {iso_utc(window.until)}; watermark "
                f"{iso_utc(watermark.cursor) if watermark.cursor else 'not set'}")

    # Every page first: an API error here raises before anything is stored.
    batches = []
    for batch in client.fetch(stream.name, window):
        batches.append(batch)
        if on_page:
            on_page(batch)
    records = _records(stream, client, batches)
    extraction = Extraction(stream=stream, account=account, window=window, watermark_before=watermark,
                            watermark_after=watermark, fetched=len(records))

    # Records tied with the watermark that an earlier run stored are still passed on: the ledger
    # absorbs an unchanged one, and stores one that changed without moving its cursor (a Stripe
    # fee filled in later keeps its payout's creation time).
    seen = [watermark.already_stored(cursor, record_id) for cursor, record_id
            in zip(records["cursor"], records["record_id"])]
    extraction.already_stored = sum(seen)
    if records.empty:
        logger.info(f"{where}: nothing in the window")
        return extraction

    last_day = (window.until - timedelta(microseconds=1)).date().isoformat()
    records["partition_key"] = records["cursor"].dt.strftime("%Y-%m-%d").fillna(last_day)
    cursorless = bool(records["cursor"].isna().all())

    advancing = watermark
    frozen = False
    for partition_key, day in records.groupby("partition_key", sort=True):
        if cursorless:
            moved = Watermark(stream.system, account, stream.name, window.until, frozenset())
        else:
            moved = advancing.advanced(day["cursor"], day["record_id"])
        day_batches = _partition_batches(batches, day)
        run = run_batches(stream, account, lambda pages=day_batches: pages, ledger, routing,
                          partition_key=str(partition_key), run_id=run_id, max_failure_rate=max_failure_rate,
                          logger=logger, watermark=None if frozen else moved)
        extraction.runs.append(run)

        if run.quarantined and not frozen:
            # Later days are still stored, but the watermark stays before this day until it is replayed.
            frozen = True
            logger.error(f"{where}: partition {partition_key} is blocked; the watermark stays at "
                         f"{iso_utc(advancing.cursor) if advancing.cursor else 'not set'}")
        elif not frozen:
            advancing = moved
    extraction.watermark_after = advancing

    logger.info(f"{where}: fetched {extraction.fetched}, stored {extraction.stored}, unchanged {extraction.unchanged}, "
                f"held back {extraction.failed_records}, exceptions opened {extraction.exceptions_opened}")
    return extraction
