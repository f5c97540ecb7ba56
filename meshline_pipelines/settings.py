"""Locations and limits of MeshLine, read from environment variables with embedded defaults.

With nothing configured, everything lives under `.meshline/` in the working directory: the
ledger is a SQLite file, the Dagster instance uses SQLite storage under `dagster_home/`, and
dropped files are read from `imports/`.
"""

import os
import re
from importlib import resources
from pathlib import Path

PARTITION_KEY = re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")

HOME_ENV = "MESHLINE_HOME"
DATABASE_URL_ENV = "MESHLINE_DATABASE_URL"
IMPORT_DIR_ENV = "MESHLINE_IMPORT_DIR"
ROUTING_FILE_ENV = "MESHLINE_ROUTING_FILE"
MAX_FAILURE_RATE_ENV = "MESHLINE_MAX_FAILURE_RATE"
PARTITIONS_START_ENV = "MESHLINE_PARTITIONS_START"
LOOKBACK_MINUTES_ENV = "MESHLINE_LOOKBACK_MINUTES"

# First daily partition. Every day after it counts as a partition in the Dagster UI, so set it
# to the first day you import: a start years back would show thousands of empty days.
DEFAULT_PARTITIONS_START = "2026-10-01"

# Share of a partition's records that may fail validation before its blocking checks fail.
DEFAULT_MAX_FAILURE_RATE = 0.2


# Minutes before the watermark that an incremental extraction requests again. APIs index updates
# a little late, and a record updated just before the last run may appear only now.
DEFAULT_LOOKBACK_MINUTES = 15


def meshline_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.cwd() / ".meshline").resolve()


def database_url() -> str:
    configured = os.environ.get(DATABASE_URL_ENV)
    if configured:
        return configured
    return f"sqlite:///{meshline_home() / 'ledger.db'}"


def import_dir() -> Path:
    return Path(os.environ.get(IMPORT_DIR_ENV) or meshline_home() / "imports").resolve()


def dagster_home() -> Path:
    configured = os.environ.get("DAGSTER_HOME")
    return Path(configured).resolve() if configured else meshline_home() / "dagster_home"


def routing_file() -> Path:
    configured = os.environ.get(ROUTING_FILE_ENV)
    if configured:
        return Path(configured)
    return Path(str(resources.files("meshline_pipelines") / "config" / "routing.yaml"))


def share(name: str, default: float) -> float:
    """Read a share between 0 and 1 from the environment variable `name`; a bad value names the variable."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        rate = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number: set it to a share between 0 and 1, "
                         "for example 0.2") from None
    if not 0 <= rate <= 1:
        raise ValueError(f"{name}={raw!r} is outside 0..1: set a share such as 0.2")
    return rate


def max_failure_rate() -> float:
    return share(MAX_FAILURE_RATE_ENV, DEFAULT_MAX_FAILURE_RATE)


def partitions_start() -> str:
    raw = os.environ.get(PARTITIONS_START_ENV) or DEFAULT_PARTITIONS_START
    if not PARTITION_KEY.match(raw):
        raise ValueError(f"{PARTITIONS_START_ENV}={raw!r} is not a date: write the first import day as YYYY-MM-DD")
    return raw


def bundled_samples_dir() -> Path:
    return Path(str(resources.files("meshline_pipelines") / "data" / "samples"))


def lookback_minutes() -> float:
    raw = os.environ.get(LOOKBACK_MINUTES_ENV)
    if raw is None:
        return DEFAULT_LOOKBACK_MINUTES
    try:
        minutes = float(raw)
    except ValueError:
        raise ValueError(f"{LOOKBACK_MINUTES_ENV}={raw!r} is not a number: set minutes, for example 15") from None
    if minutes < 0:
        raise ValueError(f"{LOOKBACK_MINUTES_ENV}={raw!r} is negative: set 0 or more minutes")
    return minutes
