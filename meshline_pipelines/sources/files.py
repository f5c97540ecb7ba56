"""Import-folder snapshots: files that a system exported, dropped into a folder per day.

Layout: `<import_dir>/<YYYY-MM-DD>/<system>/<file>`. The day folder is the partition: a file
dropped on a day belongs to that day's partition, whatever the dates of its records.
"""

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from meshline_pipelines import settings
from meshline_pipelines.sources.base import SourceBatch, SourceClient

PARTITION_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class UnreadableFile(ValueError):
    pass


@dataclass(frozen=True)
class FilePattern:
    """File-name pattern of a stream's dropped files, and the reader that takes records out of one."""

    glob: str
    read_records: Callable[[bytes, str], list[Any]]


def import_root(import_dir: str | None) -> Path:
    return Path(import_dir).resolve() if import_dir else settings.import_dir()


def partition_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(path for path in root.iterdir() if path.is_dir() and PARTITION_DIR.match(path.name))


def matching_files(root: Path, partition_key: str, system: str, glob: str) -> list[Path]:
    folder = root / partition_key / system
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if path.is_file() and fnmatch(path.name, glob))


def read_batches(root: Path, system: str, partition_key: str,
                 patterns: Iterable[FilePattern]) -> Iterator[SourceBatch]:
    """Yield one batch per matching file, reading each file only when the batch is requested."""
    for pattern in patterns:
        for path in matching_files(root, partition_key, system, pattern.glob):
            origin = f"{partition_key}/{system}/{path.name}"
            fetched_at = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
            content = path.read_bytes()
            try:
                records = pattern.read_records(content, path.name)
            except UnreadableFile as exc:
                yield SourceBatch(origin=origin, fetched_at=fetched_at, error=str(exc),
                                  raw_text=content.decode("utf-8", errors="replace"))
                continue
            yield SourceBatch(origin=origin, records=records, fetched_at=fetched_at)


def partitions_with_files(root: Path, system: str, patterns: Iterable[FilePattern]) -> set[str]:
    patterns = list(patterns)
    return {
        folder.name
        for folder in partition_dirs(root)
        if any(matching_files(root, folder.name, system, pattern.glob) for pattern in patterns)
    }


# Readers for the file formats the systems export.

def load_json(content: bytes, name: str) -> Any:
    try:
        return json.loads(content.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UnreadableFile(f"{name} is not UTF-8 text (byte {exc.start}): re-export it as UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise UnreadableFile(
            f"{name} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "the file may be truncated: export it again and drop the new file"
        ) from None


def json_list_at(*path: str) -> Callable[[bytes, str], list[Any]]:
    """Reader for JSON whose records are the list at `path`, e.g. `{"orders": [...]}`."""

    def read(content: bytes, name: str) -> list[Any]:
        node = load_json(content, name)
        for key in path:
            if not isinstance(node, dict) or key not in node:
                raise UnreadableFile(f"{name} has no {'.'.join(path)!r} list: expected the API's response body")
            node = node[key]
        if not isinstance(node, list):
            raise UnreadableFile(f"{name}: {'.'.join(path)!r} is a {type(node).__name__}, expected a list")
        return node

    return read


def json_object_at(*path: str) -> Callable[[bytes, str], list[Any]]:
    """Reader for JSON whose one record is the object at `path`, e.g. `{"payload": {...}}`."""

    def read(content: bytes, name: str) -> list[Any]:
        node = load_json(content, name)
        for key in path:
            if not isinstance(node, dict) or key not in node:
                raise UnreadableFile(f"{name} has no {'.'.join(path)!r} object: expected the API's response body")
            node = node[key]
        return [node]

    return read


def tab_separated(required_columns: tuple[str, ...], encodings: tuple[str, ...] = ("utf-8", "iso-8859-1")):
    """Reader for tab-separated reports; each row becomes a dict with its 1-based row number."""

    def read(content: bytes, name: str) -> list[dict]:
        for encoding in encodings:
            try:
                text = content.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
        else:
            raise UnreadableFile(f"{name} is not text in {' or '.join(encodings)}")
        reader = csv.reader(io.StringIO(text), delimiter="\t")
        header = next(reader, None)
        if not header:
            raise UnreadableFile(f"{name} is empty: expected a header row")
        missing = [column for column in required_columns if column not in header]
        if missing:
            raise UnreadableFile(f"{name} lacks the columns {', '.join(missing)}: expected the report's header row")
        rows = []
        for row_number, values in enumerate(reader, start=1):
            if not any(value.strip() for value in values):
                continue
            row: dict[str, Any] = dict(zip(header, values))
            if len(values) != len(header):
                row["_field_count_error"] = f"row has {len(values)} fields, the header has {len(header)}"
            row["_row_number"] = row_number
            rows.append(row)
        return rows

    return read


def embedded_lists(outer: str, inner: str) -> Callable[[bytes, str], list[Any]]:
    """Reader for records nested in each parent, e.g. the refunds inside `{"orders": [...]}`."""
    read_parents = json_list_at(outer)

    def read(content: bytes, name: str) -> list[Any]:
        records = []
        for parent in read_parents(content, name):
            nested = parent.get(inner) if isinstance(parent, dict) else None
            if isinstance(nested, list):
                records.extend(nested)
        return records

    return read


class FileSnapshotClient(SourceClient):
    """A source client over the import folder; each system declares its file patterns per stream."""

    import_dir: str | None = Field(
        default=None, description="Folder of day folders with dropped files. Unset: MESHLINE_IMPORT_DIR, else .meshline/imports."
    )

    system: ClassVar[str]
    files: ClassVar[dict[str, list[FilePattern]]]
    # Top-level fields the API documents per stream, beyond those the bundled samples show.
    documented_fields: ClassVar[dict[str, frozenset[str]]] = {}

    def patterns(self, stream: str) -> list[FilePattern]:
        try:
            return self.files[stream]
        except KeyError:
            raise ValueError(f"{self.system} has no stream {stream!r}: expected one of {', '.join(self.files)}") from None

    def extract(self, stream: str, partition_key: str) -> Iterator[SourceBatch]:
        return read_batches(import_root(self.import_dir), self.system, partition_key, self.patterns(stream))

    def partitions_with_data(self, stream: str) -> set[str]:
        return partitions_with_files(import_root(self.import_dir), self.system, self.patterns(stream))
