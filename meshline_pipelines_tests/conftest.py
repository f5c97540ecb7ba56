"""Fixtures: a ledger on SQLite and on PostgreSQL, and import folders holding the bundled samples.

PostgreSQL tests use MESHLINE_TEST_POSTGRES_URL (default: the local server) and create and drop
their own database. With CI set, an unreachable server fails the run; elsewhere those tests skip.
"""

import os
import shutil
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from meshline_pipelines import settings
from meshline_pipelines.ledger import Ledger
from meshline_pipelines.routing import load_routing

POSTGRES_URL = os.environ.get("MESHLINE_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
SAMPLES = settings.bundled_samples_dir()
PARTITION = "2026-11-24"


def _admin_engine() -> sa.Engine:
    return sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def postgres_server() -> str:
    engine = _admin_engine()
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("select 1"))
    except sa.exc.OperationalError as exc:
        message = f"PostgreSQL at {make_url(POSTGRES_URL).render_as_string(hide_password=True)} is unreachable: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set, so PostgreSQL tests must run)")
        pytest.skip(message + "; set MESHLINE_TEST_POSTGRES_URL to run the PostgreSQL tests")
    finally:
        engine.dispose()
    return POSTGRES_URL


@pytest.fixture
def make_postgres_database(postgres_server):
    """Create fresh databases on the test server on request; all are dropped afterwards."""
    admin = _admin_engine()
    created = []

    def create() -> str:
        name = f"meshline_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return make_url(postgres_server).set(database=name).render_as_string(hide_password=False)

    yield create
    with admin.connect() as connection:
        for name in created:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def postgres_database(make_postgres_database) -> str:
    """A fresh database on the test server, dropped afterwards; yields its URL."""
    return make_postgres_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("postgres_database")


@pytest.fixture
def ledger(ledger_url) -> Ledger:
    ledger = Ledger.connect(ledger_url)
    yield ledger
    ledger.dispose()


@pytest.fixture
def routing():
    return load_routing()


@pytest.fixture
def import_dir(tmp_path) -> Path:
    root = tmp_path / "imports"
    root.mkdir()
    return root


def drop_file(import_dir: Path, system: str, name: str, *, partition: str = PARTITION,
              content: bytes | None = None, sample: str | None = None) -> Path:
    """Put a file into the import folder: a bundled sample, or the given bytes."""
    target = import_dir / partition / system / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if content is None:
        shutil.copyfile(SAMPLES / system / (sample or name), target)
    else:
        target.write_bytes(content)
    return target


def sample_json(system: str, name: str):
    import json

    return json.loads((SAMPLES / system / name).read_text(encoding="utf-8"))
