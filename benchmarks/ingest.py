"""Benchmark: MeshLine's Shopify order ingest against loading the same rows by hand.

    python benchmarks/ingest.py --orders 10000

Generates N orders in Shopify Admin REST format, one file per page of 250 (never all in memory),
then measures three ways of getting them into PostgreSQL, each in its own process and its own
fresh database, `--repeat` times:

- meshline: MeshLine's whole path for the `shopify/orders` stream: read, land raw, normalize,
  validate against the canonical models, open exceptions, upsert with COPY and merge.
- plain: parse the same JSON, flatten it by hand into the same final `orders` and `order_lines`
  rows, and COPY them with plain psycopg.
- bare: COPY the pre-flattened rows (rendered to files before timing).

It prints the median seconds, peak memory (max RSS) of each, and the ratios, and checks that the
meshline and plain databases hold the same orders and lines.
"""

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from meshline_pipelines.canonical.schemas import CANONICAL_MODELS, model_columns
from meshline_pipelines.money import iso_exponent
from meshline_pipelines.shopify.normalize import ORDER_FIELDS, ORDER_MONEY_SETS

PARTITION = "2026-11-24"
DEFAULT_URL = os.environ.get("MESHLINE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
SHOP = "bench.myshopify.com"


# Generation and preparation (not timed)

def generate(workdir: Path, orders: int, page_size: int) -> None:
    from meshline_pipelines.generator.week import iter_shopify_order_pages

    folder = workdir / "imports" / PARTITION / "shopify"
    folder.mkdir(parents=True, exist_ok=True)
    for number, page in enumerate(iter_shopify_order_pages(orders, page_size=page_size)):
        (folder / f"orders-{number:05d}.json").write_text(json.dumps({"orders": page}), encoding="utf-8")


def order_files(workdir: Path) -> list[Path]:
    return sorted((workdir / "imports" / PARTITION / "shopify").glob("orders-*.json"))


# The hand-written flattening of the "plain" contender

def minor(amount, currency: str) -> int | None:
    if amount is None:
        return None
    return int(Decimal(str(amount)).scaleb(iso_exponent(currency)))


def utc(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text).astimezone(timezone.utc) if text else None


def text(value) -> str | None:
    return None if value is None else str(value)


def order_row(order: dict) -> tuple:
    updated_at = utc(order["updated_at"])
    extra = {key: value for key, value in order.items() if key not in ORDER_FIELDS}
    row = ["shopify", SHOP, str(order["id"]), updated_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
           json.dumps(extra, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str),
           order.get("name"), order.get("financial_status"), order.get("fulfillment_status"), order.get("email"),
           text((order.get("customer") or {}).get("id")), None,
           utc(order["created_at"]), updated_at, utc(order.get("cancelled_at"))]
    for money_set in ORDER_MONEY_SETS.values():
        for side in ("shop_money", "presentment_money"):
            money = (order.get(money_set) or {}).get(side) or {}
            currency = money.get("currency_code")
            row += [minor(money.get("amount"), currency) if currency else None, currency]
    return tuple(row)


def line_rows(order: dict) -> list[tuple]:
    rows = []
    for line in order.get("line_items") or []:
        price = line["price_set"]["shop_money"]
        currency = price["currency_code"]
        unit = minor(price["amount"], currency)
        discount = sum(minor(d["amount_set"]["shop_money"]["amount"], currency)
                       for d in line.get("discount_allocations") or [])
        tax = sum(minor(t["price_set"]["shop_money"]["amount"], currency) for t in line.get("tax_lines") or [])
        values = ["shopify", SHOP, str(line["id"]), None, None, str(order["id"]), line.get("sku"),
                  text(line.get("product_id")), text(line.get("variant_id")), line.get("name"), line["quantity"],
                  currency, unit, unit * line["quantity"], discount, tax]
        # The version of a line is a hash of its other columns, as MeshLine stores it.
        values[3] = "sha256:" + hashlib.sha256(json.dumps(values, default=str).encode()).hexdigest()
        rows.append(tuple(values))
    return rows


# Databases

def create_database(server_url: str, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, database_url: str) -> None:
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{make_url(database_url).database}" WITH (FORCE)'))
    engine.dispose()


def create_plain_tables(database_url: str) -> None:
    """Tables with exactly the canonical columns of orders and order_lines, and their primary keys."""
    metadata = sa.MetaData()
    from meshline_pipelines.ledger.tables import CANONICAL_TABLES

    for name in ("orders", "order_lines"):
        columns = [sa.Column(c.name, c.type, primary_key=c.primary_key) for c in CANONICAL_TABLES[name].columns
                   if c.name in model_columns(CANONICAL_MODELS[name])]
        sa.Table(name, metadata, *columns)
    engine = sa.create_engine(database_url)
    metadata.create_all(engine)
    engine.dispose()


def psycopg_dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


# Contenders, each run in its own process by `measure`

def run_meshline(workdir: Path, database_url: str) -> dict:
    from meshline_pipelines.ingest import run_stream
    from meshline_pipelines.ledger import Ledger
    from meshline_pipelines.routing import load_routing
    from meshline_pipelines.shopify.assets import STREAMS
    from meshline_pipelines.shopify.client import ShopifyFileClient

    ledger = Ledger.connect(database_url)
    orders_stream = next(stream for stream in STREAMS if stream.name == "orders")
    client = ShopifyFileClient(shop=SHOP, import_dir=str(workdir / "imports"))
    routing = load_routing()

    started = time.perf_counter()
    result = run_stream(orders_stream, client, ledger, routing, partition_key=PARTITION)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "failed_records": result.failed_records}


def run_plain(workdir: Path, database_url: str) -> dict:
    import psycopg

    create_plain_tables(database_url)
    order_columns = ", ".join(model_columns(CANONICAL_MODELS["orders"]))
    line_columns = ", ".join(model_columns(CANONICAL_MODELS["order_lines"]))

    started = time.perf_counter()
    with psycopg.connect(psycopg_dsn(database_url)) as connection, connection.cursor() as cursor:
        for path in order_files(workdir):
            orders = json.loads(path.read_text(encoding="utf-8"))["orders"]
            with cursor.copy(f"COPY orders ({order_columns}) FROM STDIN") as copy:
                for order in orders:
                    copy.write_row(order_row(order))
            with cursor.copy(f"COPY order_lines ({line_columns}) FROM STDIN") as copy:
                for order in orders:
                    for row in line_rows(order):
                        copy.write_row(row)
    return {"seconds": time.perf_counter() - started}


def prepare_bare(workdir: Path) -> None:
    """Render every file's rows once, in COPY text format, for the bare contender."""
    for table in ("orders", "order_lines"):
        with (workdir / f"{table}.copy").open("w", encoding="utf-8") as output:
            for path in order_files(workdir):
                orders = json.loads(path.read_text(encoding="utf-8"))["orders"]
                rows = [order_row(o) for o in orders] if table == "orders" else \
                    [row for o in orders for row in line_rows(o)]
                output.writelines(copy_line(row) for row in rows)


def copy_value(value) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, datetime):
        return value.isoformat()
    escaped = str(value)
    for character, replacement in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
        escaped = escaped.replace(character, replacement)
    return escaped


def copy_line(row: tuple) -> str:
    return "\t".join(copy_value(value) for value in row) + "\n"


def run_bare(workdir: Path, database_url: str) -> dict:
    import psycopg

    create_plain_tables(database_url)
    started = time.perf_counter()
    with psycopg.connect(psycopg_dsn(database_url)) as connection, connection.cursor() as cursor:
        for table in ("orders", "order_lines"):
            columns = ", ".join(model_columns(CANONICAL_MODELS[table]))
            with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy, \
                    (workdir / f"{table}.copy").open("rb") as source:
                while block := source.read(1 << 20):
                    copy.write(block)
    return {"seconds": time.perf_counter() - started}


CONTENDERS = {"meshline": run_meshline, "plain": run_plain, "bare": run_bare}


def measure(contender: str, workdir: Path, server_url: str) -> dict:
    """Run one contender in a fresh process and database; return its seconds, peak RSS and row counts."""
    database_url = create_database(server_url, f"bench_{contender}")
    try:
        output = subprocess.run(
            [sys.executable, __file__, "--contender", contender, "--workdir", str(workdir),
             "--database-url", database_url],
            check=True, capture_output=True, text=True,
        ).stdout
        result = json.loads(output.strip().splitlines()[-1])
        result["digest"] = table_digest(database_url)
        return result
    finally:
        drop_database(server_url, database_url)


def table_digest(database_url: str) -> dict:
    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        orders = connection.execute(sa.text(
            "select count(*), coalesce(sum(total_amount), 0), coalesce(sum(total_presentment_amount), 0) from orders"
        )).one()
        lines = connection.execute(sa.text(
            "select count(*), coalesce(sum(line_total_amount), 0), coalesce(sum(tax_amount), 0) from order_lines"
        )).one()
    engine.dispose()
    return {"orders": [int(v) for v in orders], "order_lines": [int(v) for v in lines]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=10_000, help="Shopify orders to generate (default 10000).")
    parser.add_argument("--repeat", type=int, default=3, help="Runs per contender; the median is reported.")
    parser.add_argument("--page-size", type=int, default=250, help="Orders per generated file (default 250).")
    parser.add_argument("--postgres-url", default=DEFAULT_URL,
                        help="SQLAlchemy URL of a PostgreSQL server database to create benchmark databases from.")
    parser.add_argument("--workdir", type=Path, help="Folder for generated files (default: a temporary folder).")
    parser.add_argument("--contender", choices=sorted(CONTENDERS), help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)

    if arguments.contender:
        result = CONTENDERS[arguments.contender](arguments.workdir, arguments.database_url)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return 0

    workdir = arguments.workdir or Path(tempfile.mkdtemp(prefix="meshline-bench-"))
    started = time.perf_counter()
    generate(workdir, arguments.orders, arguments.page_size)
    prepare_bare(workdir)
    size_mb = sum(path.stat().st_size for path in order_files(workdir)) / 1e6
    print(f"generated {arguments.orders} orders ({size_mb:.0f} MB of JSON in {len(order_files(workdir))} files) "
          f"and the bare COPY files in {time.perf_counter() - started:.1f} s, in {workdir}")

    results = {name: [measure(name, workdir, arguments.postgres_url) for _ in range(arguments.repeat)]
               for name in CONTENDERS}
    medians = {name: statistics.median(run["seconds"] for run in runs) for name, runs in results.items()}

    print(f"\n{'contender':<10} {'median s':>9} {'runs s':<28} {'peak RSS MB':>12} {'orders/s':>10}")
    for name, runs in results.items():
        spread = ", ".join(f"{run['seconds']:.2f}" for run in runs)
        peak = max(run["peak_rss_mb"] for run in runs)
        print(f"{name:<10} {medians[name]:>9.2f} {spread:<28} {peak:>12.0f} {arguments.orders / medians[name]:>10.0f}")
    print(f"\nratios of medians: meshline/plain {medians['meshline'] / medians['plain']:.2f}, "
          f"meshline/bare {medians['meshline'] / medians['bare']:.2f}, plain/bare {medians['plain'] / medians['bare']:.2f}")

    digests = {name: runs[0]["digest"] for name, runs in results.items()}
    same = digests["meshline"] == digests["plain"] == digests["bare"]
    print(f"same orders and lines in every database: {'yes' if same else 'NO'} {digests['meshline']}")
    if not same:
        print(json.dumps(digests, indent=2))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
