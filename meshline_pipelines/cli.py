"""The `meshline` command line: run the main job, extract from live APIs, read records and the exception queue."""

import json
import os
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path

import pandas as pd
import typer
from dotenv import load_dotenv
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from meshline_pipelines import settings
from meshline_pipelines.canonical.schemas import CANONICAL_MODELS, model_columns
from meshline_pipelines.demo import read_manifest
from meshline_pipelines.generator.findings import planted_and_found
from meshline_pipelines.money import format_minor
from meshline_pipelines.queue import ACTIVE as ACTIVE_STATUSES
from meshline_pipelines.queue import REASON_REQUIRED
from meshline_pipelines.queue import STATUSES as QUEUE_STATUSES
from meshline_pipelines.routing import EXCEPTION_KINDS
from meshline_pipelines.webhooks.inbox import STATUSES as INBOX_STATUSES
from meshline_pipelines.webhooks.inbox import read_inbox

app = typer.Typer(help="MeshLine: normalized, validated and owned ecommerce records on Dagster.",
                  no_args_is_help=True, add_completion=False)
exceptions_app = typer.Typer(help="The exception queue: every problem with an owner and a due time.",
                             no_args_is_help=True)
app.add_typer(exceptions_app, name="exceptions")
webhooks_app = typer.Typer(help="The webhook receiver for Shopify and Stripe.", no_args_is_help=True)
app.add_typer(webhooks_app, name="webhooks")
inbox_app = typer.Typer(help="The webhook inbox: verified events waiting for the inbox sensor.", no_args_is_help=True)
app.add_typer(inbox_app, name="inbox")
outbox_app = typer.Typer(help="The outbox: what MeshLine delivers, or would deliver in a dry run, to each target.",
                         no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")


# Piped output has no terminal width to fit: tables get this width unless COLUMNS is set.
PIPED_WIDTH = 200


def _output_width() -> int:
    """Return the width tables fit: COLUMNS when set, else the terminal's, else PIPED_WIDTH."""
    if os.environ.get("COLUMNS", "").strip().isdigit() or sys.stdout.isatty():
        return shutil.get_terminal_size(fallback=(80, 24)).columns
    return PIPED_WIDTH


console = Console()
if not console.is_terminal:
    console = Console(width=_output_width())


@app.callback()
def _load_dotenv() -> None:
    # `dagster dev` reads .env from the working directory; the command line reads the same file,
    # and variables already set in the environment win.
    load_dotenv(Path.cwd() / ".env", override=False)


# Columns the table view shows per entity; `--format json` shows every column.
TABLE_COLUMNS = {
    "orders": ["order_number", "status", "created_at", "total_amount", "total_currency"],
    "order_lines": ["order_source_id", "sku", "quantity", "unit_price_amount", "currency"],
    "refunds": ["order_source_id", "payment_source_id", "amount", "currency", "created_at"],
    "payments": ["order_source_id", "kind", "status", "amount", "currency", "created_at"],
    "customers": ["state", "orders_count", "total_spent_amount", "total_spent_currency", "updated_at"],
    "inventory_levels": ["sku", "inventory_item_id", "location_id", "condition", "available"],
    "payouts": ["status", "amount", "currency", "payout_date"],
    "payout_lines": ["payout_source_id", "type", "amount", "fee_amount", "currency", "processed_at"],
    "product_variants": ["product_id", "sku", "product_title", "variant_title"],
    "shipments": ["order_key", "order_number", "carrier", "tracking_number", "ship_date"],
}
# Columns of the exception list with one line per exception. On a narrow terminal each exception takes
# two lines: the first names the exception and its record, the second gives status, owner, due time and reason.
EXCEPTION_ONE_LINE = ["id", "status", "kind", "system", "account", "record_id", "owner", "due_at", "reason"]
EXCEPTION_LINE = ["id", "kind", "system", "account", "record_id"]
EXCEPTION_DETAIL = ["status", "owner", "due_at", "reason"]
# Minimum width of the reason in the one-line layout. Below it, each exception takes two lines.
REASON_WIDTH = 30
SYSTEMS = ["shopify", "amazon", "stripe"]


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


def _ensure_dagster_home() -> Path:
    home = settings.dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    instance_config = home / "dagster.yaml"
    if not instance_config.exists():
        # Dagster warns when the home has no dagster.yaml; this one keeps its SQLite defaults.
        instance_config.write_text(
            "# Embedded default: SQLite run, event and schedule storage in this folder.\n"
            "telemetry:\n  enabled: false\n"
        )
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _ledger():
    from meshline_pipelines.ledger import Ledger

    return Ledger.connect()


def _currency_column(columns: list[str], amount_column: str) -> str:
    paired = amount_column.removesuffix("_amount") + "_currency"
    return paired if paired in columns else "currency"


def records_for_display(frame: pd.DataFrame, table: str) -> list[dict]:
    """Canonical rows with amounts as exact decimal strings and timestamps in ISO 8601 UTC."""
    columns = model_columns(CANONICAL_MODELS[table])
    shown = frame[columns].copy()
    for column in columns:
        if column == "amount" or column.endswith("_amount"):
            currency = _currency_column(columns, column)
            shown[column] = [format_minor(amount, code) for amount, code in zip(frame[column], frame[currency])]
        elif str(frame[column].dtype).startswith("datetime64"):
            shown[column] = frame[column].map(lambda value: None if pd.isna(value) else value.isoformat())
    shown = shown.astype(object).where(shown.notna(), None)
    rows = shown.to_dict(orient="records")
    for row in rows:
        # `extra` is stored as JSON text; show it as the object it is.
        row["extra"] = json.loads(row["extra"]) if row["extra"] else None
    return rows


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _check_system(system: str | None) -> None:
    if system is not None and system not in SYSTEMS:
        console.print(f"[red]error:[/red] unknown system {system!r}: expected one of {', '.join(SYSTEMS)}")
        raise typer.Exit(2)


@dataclass(frozen=True)
class Column:
    """A table column and how it gives way when the table is wider than the output.

    shrink: whether values may end in an ellipsis, down to SHRUNK_WIDTH. Identifiers set it to False.
    hide: above 0, the column is hidden when the table does not fit even shortened, highest first.
    wrap: whether long values wrap at word boundaries instead, for tables of one value per row.
    """

    key: str
    shrink: bool = True
    hide: int = 0
    wrap: bool = False


SHRUNK_WIDTH = 8
GAP = "  "
# Tables of one measure per row: the labels stay whole and a long value wraps within its row.
MEASURE_COLUMNS = [Column("measure", shrink=False), Column("value", wrap=True)]
# Rich's default box: a border on the left, then per column one space each side and a border.
TABLE_FRAME, COLUMN_FRAME = 1, 3
# Whitespace that would break a value over lines becomes a plain space in tables.
_ONE_LINE = str.maketrans({"\n": " ", "\r": " ", "\t": " ", "\v": " ", "\f": " "})


def _cell(value) -> str:
    return "" if value is None else str(value).translate(_ONE_LINE)


def _short_time(value) -> str | None:
    """Return a time as `YYYY-MM-DD HH:MM:SS` in its own zone (UTC in the ledger), short enough for a table."""
    return None if value is None or pd.isna(value) else pd.Timestamp(value).strftime("%Y-%m-%d %H:%M:%S")


def _fit_widths(natural: list[int], floors: list[int], room: int) -> list[int]:
    """Shorten the widest columns first, each down to its floor, until the widths add up to room."""
    widths = list(natural)
    excess = sum(widths) - room
    while excess > 0:
        shrinkable = [index for index, width in enumerate(widths) if width > floors[index]]
        if not shrinkable:
            break
        widest = max(shrinkable, key=lambda index: widths[index])
        widths[widest] -= 1
        excess -= 1
    return widths


def _print_table(title: str, rows: list[dict], columns: list) -> None:
    """Print rows as a table that fits the output width, one line per row unless a column wraps.

    Values too long for their column end in an ellipsis. When even shortened columns do not fit,
    columns are hidden (those marked `hide` first, then from the right) and a caption names them.
    """
    specs = [column if isinstance(column, Column) else Column(column) for column in columns]
    cells = {spec.key: [_cell(row.get(spec.key)) for row in rows] for spec in specs}
    natural = {spec.key: max([cell_len(spec.key), *map(cell_len, cells[spec.key])]) for spec in specs}
    floors = {spec.key: min(natural[spec.key], SHRUNK_WIDTH) if spec.shrink or spec.wrap else natural[spec.key]
              for spec in specs}
    width = _output_width()
    shown, hidden = list(specs), []
    while len(shown) > 1 and sum(floors[spec.key] for spec in shown) + TABLE_FRAME + COLUMN_FRAME * len(shown) > width:
        marked = [spec for spec in shown if spec.hide]
        dropped = max(marked, key=lambda spec: spec.hide) if marked else shown[-1]
        shown.remove(dropped)
        hidden.append(dropped.key)
    widths = _fit_widths([natural[spec.key] for spec in shown], [floors[spec.key] for spec in shown],
                         width - TABLE_FRAME - COLUMN_FRAME * len(shown))
    caption = f"hidden to fit {width} columns: {', '.join(hidden)}" if hidden else None
    table = Table(title=title, caption=caption, show_lines=False)
    for spec, column_width in zip(shown, widths):
        if spec.wrap:
            table.add_column(spec.key, width=column_width, overflow="fold")
        else:
            table.add_column(spec.key, width=column_width, no_wrap=True, overflow="ellipsis")
    for index in range(len(rows)):
        # Text, not str: a value such as "[red]" is shown as written, not read as rich markup.
        table.add_row(*[Text(cells[spec.key][index]) for spec in shown])
    console.print(table, width=width)


def _print_summary(ledger, runs) -> None:
    counts = ledger.count_rows()
    rows = counts.sort_values(["system", "entity"]).to_dict(orient="records")
    _print_table("Canonical records per system and entity", rows, ["system", "entity", "records"])

    open_exceptions = ledger.read_exceptions(status="open")
    if open_exceptions.empty:
        console.print("No open exceptions.")
    else:
        grouped = open_exceptions.groupby(["kind", "owner"]).size().reset_index(name="open")
        _print_table("Open exceptions by kind and owner", grouped.to_dict(orient="records"), ["kind", "owner", "open"])

    from meshline_pipelines.delivery.outbox import delivery_mode, read_outbox

    planned = read_outbox(ledger)
    if not planned.empty:
        grouped = planned.groupby(["target", "entity", "status"]).size().reset_index(name="records")
        _print_table(f"Outbox ({delivery_mode().replace('_', ' ')} mode; `meshline outbox list` shows each payload)",
                     grouped.to_dict(orient="records"), ["target", "entity", "status", "records"])

    manifest = read_manifest()
    if manifest is not None:
        _print_planted_and_found(ledger, manifest)

    failed = [run for run in runs if not run.success]
    console.print(f"Runs: {_plural(len(runs), 'partition')}, {len(runs) - len(failed)} succeeded, {len(failed)} failed"
                  + (f" ({', '.join(run.partition_key for run in failed)})" if failed else "") + ".")
    console.print(
        "Next:\n"
        "  make ui                              see runs, partitions and check results in the Dagster UI\n"
        "  .venv/bin/meshline exceptions list   the exception queue with owners and due times\n"
        "  .venv/bin/meshline records orders    canonical orders (--system, --format json)\n"
        "  .venv/bin/meshline outbox list       what the deliveries would send (dry run)\n"
        "  .venv/bin/meshline trace shopify 450789469   one record's path, trigger to delivery\n"
        f"  .venv/bin/meshline review --week {_current_week()}   this week's execution quality so far"
    )


def _current_week() -> str:
    year, week, _ = datetime.now(timezone.utc).isocalendar()
    return f"{year}-W{week:02d}"


def _print_planted_and_found(ledger, manifest: dict) -> None:
    report = planted_and_found(ledger, manifest)
    rows = [
        {**row, "found": "-" if row["found"] is None or pd.isna(row["found"]) else int(row["found"])}
        for row in report.to_dict(orient="records")
    ]
    _print_table(f"Cases planted in the generated week {manifest['start']} (+{manifest['days'] - 1} days)",
                 rows, [Column("kind", shrink=False), "planted", "found", "how"])


def _run(partitions: list[str] | None) -> bool:
    """Run the main job and the queue refresh, print a summary, and return whether every run succeeded."""
    import dagster as dg

    from meshline_pipelines.definitions import defs
    from meshline_pipelines.runner import refresh_queue, run_main_job

    home = _ensure_dagster_home()
    console.print(f"Ledger: {_redacted(settings.database_url())}\nDagster home: {home}\n"
                  f"Imports: {settings.import_dir()}")
    with dg.DagsterInstance.get() as instance:
        runs = run_main_job(
            defs, instance, only=partitions or None,
            on_start=lambda key, count: console.print(f"Running {_plural(count, 'asset')} for partition {key} ..."),
            log_level="WARNING",
        )
        # Findings of the reconciliations are exceptions in the summary, not console errors.
        refreshed = refresh_queue(defs, instance, log_level="CRITICAL")
    for run in runs:
        state = "succeeded" if run.success else f"failed in {', '.join(run.failed_steps)}"
        console.print(f"  {run.partition_key}: run {run.run_id[:8]} {state}")
    console.print("Reconciliations run and exception queue refreshed: cross-record checks, identity links, source of "
                  "truth, escalation." if refreshed.succeeded else
                  "[red]A reconciliation or the exception queue refresh failed; see its run in the Dagster UI.[/red]")
    if refreshed.failed_checks:
        console.print(f"Failed checks: {', '.join(refreshed.failed_checks)}. Their differences are exceptions: "
                      "`meshline exceptions list --kind reconciliation_mismatch`.")
    _print_summary(_ledger(), runs)
    return all(run.success for run in runs) and refreshed.succeeded


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@app.command()
def run(partition: list[str] = typer.Option(None, "--partition", "-p",
                                            help="Partition key (YYYY-MM-DD) to run; repeat for several. "
                                                 "Default: every partition with data.")) -> None:
    """Run the main job for each daily partition that has data, then print a summary. Exit 1 if a run failed."""
    try:
        succeeded = _run(partition)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if not succeeded:
        raise typer.Exit(1)


@app.command()
def demo(
    shopify_orders: int = typer.Option(1500, help="Shopify orders in the generated week."),
    amazon_orders: int = typer.Option(500, help="Amazon orders in the generated week."),
) -> None:
    """Drop the bundled samples and a generated week into the import folder, then run the main job.

    Exit 1 if a run failed.
    """
    from meshline_pipelines.demo import stage_demo_week, stage_generated_week

    staged = stage_demo_week()
    manifest = stage_generated_week(shopify_orders=shopify_orders, amazon_orders=amazon_orders)
    console.print(f"Staged {len(staged)} sample files and a generated week of {manifest['files']} files "
                  f"from {manifest['start']} in {settings.import_dir()}")
    if not _run(None):
        raise typer.Exit(1)


def _utc_option(name: str, value: str | None):
    """Parse a --since or --until value: a date (midnight UTC) or an ISO 8601 time, read as UTC without an offset."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        console.print(f"[red]error:[/red] {name} {value!r} is not ISO 8601: write 2026-11-01 or 2026-11-01T06:00:00Z")
        raise typer.Exit(2) from None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _print_extraction(extraction) -> None:
    from meshline_pipelines.sources.live import iso_utc

    def cursor(watermark) -> str:
        return iso_utc(watermark.cursor) if watermark.cursor else "not set"

    rows = [
        {"measure": "window", "value": f"{iso_utc(extraction.window.since)} to {iso_utc(extraction.window.until)}"},
        {"measure": "fetched", "value": extraction.fetched},
        {"measure": "already stored at the watermark", "value": extraction.already_stored},
        {"measure": "stored (new or changed)", "value": extraction.stored},
        {"measure": "unchanged", "value": extraction.unchanged},
        {"measure": "version conflicts", "value": extraction.conflicts},
        {"measure": "held back by validation", "value": extraction.failed_records},
        {"measure": "exceptions opened", "value": extraction.exceptions_opened},
        {"measure": "partitions", "value": ", ".join(run.partition_key for run in extraction.runs) or "none"},
        {"measure": "watermark before", "value": cursor(extraction.watermark_before)},
        {"measure": "watermark after", "value": cursor(extraction.watermark_after)},
    ]
    stream = extraction.stream
    _print_table(f"{stream.system}/{stream.name} for {extraction.account}", rows, MEASURE_COLUMNS)


@app.command()
def extract(
    system: str = typer.Argument(..., help=f"System: {', '.join(SYSTEMS)}."),
    stream: str = typer.Argument(..., help="Stream of the system, e.g. orders or charges."),
    since: str = typer.Option(None, help="Start (ISO 8601, UTC unless an offset is given). "
                                         "Default: the stored watermark less MESHLINE_LOOKBACK_MINUTES."),
    until: str = typer.Option(None, help="End, exclusive (ISO 8601). Default: now."),
    base_url: str = typer.Option(None, "--base-url", help="API base URL for this run, instead of the configured one."),
) -> None:
    """Extract one stream from the system's live API and store it through the ledger."""
    from meshline_pipelines.clients import SettingError, live_client
    from meshline_pipelines.definitions import STREAMS
    from meshline_pipelines.extract import extract_stream
    from meshline_pipelines.resources import RoutingResource
    from meshline_pipelines.sources.http import ApiError
    from meshline_pipelines.triggers import FAILED, SUCCEEDED, finish_trigger, record_trigger, trigger_tag

    _check_system(system)
    declared = [candidate for candidate in STREAMS if candidate.system == system]
    chosen = next((candidate for candidate in declared if candidate.name == stream), None)
    if chosen is None:
        console.print(f"[red]error:[/red] {system} has no stream {stream!r}: expected one of "
                      f"{', '.join(candidate.name for candidate in declared)}")
        raise typer.Exit(2)
    window_start, window_end = _utc_option("--since", since), _utc_option("--until", until)

    try:
        client = live_client(system, base_url=base_url)
        routing = RoutingResource()
        ledger = _ledger()
        console.print(f"Ledger: {_redacted(settings.database_url())}\nAPI: {client.base_url}")
        reference = f"extract:{stream}@{datetime.now(timezone.utc).isoformat()}"
        record_trigger(ledger, kind="manual", system=system, account=client.account, stream=stream,
                       reference=reference, owner=routing.load().system_owner(system),
                       details={"command": "meshline extract", "since": since, "until": until})

        def progress(batch) -> None:
            elsewhere = f" ({batch.outside_window} outside the window)" if batch.outside_window else ""
            console.print(f"  {batch.origin}: {_plural(len(batch.records), 'record')}{elsewhere}")

        extraction = extract_stream(chosen, client, ledger, routing.load(), since=window_start, until=window_end,
                                    max_failure_rate=routing.failure_rate_limit(), on_page=progress)
    except (SettingError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except ApiError as exc:
        finish_trigger(ledger, trigger_tag("manual", system, reference), run_id="cli", status=FAILED, error=str(exc))
        console.print(f"[red]error:[/red] {exc}\nNothing from this run was stored; the watermark did not move.")
        raise typer.Exit(1) from None
    finish_trigger(ledger, trigger_tag("manual", system, reference), run_id="cli",
                   status=FAILED if extraction.blocked_partitions else SUCCEEDED)

    _print_extraction(extraction)
    if extraction.blocked_partitions:
        console.print(f"[red]Blocked partitions:[/red] {', '.join(extraction.blocked_partitions)}: more records failed "
                      "validation than MESHLINE_MAX_FAILURE_RATE allows. See `meshline exceptions list`.")
        raise typer.Exit(1)


@app.command()
def records(
    entity: str = typer.Argument(..., help=f"Canonical entity: {', '.join(CANONICAL_MODELS)}."),
    system: str = typer.Option(None, "--system", "-s", help="Only records of this system, e.g. shopify."),
    account: str = typer.Option(None, "--account", "-a", help="Only records of this account, e.g. a shop domain."),
    limit: int = typer.Option(None, "--limit", "-n", min=1, help="Print at most this many records."),
    output: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="table or json."),
) -> None:
    """Print canonical records; amounts are exact decimal strings next to their currency codes."""
    if entity not in CANONICAL_MODELS:
        console.print(f"[red]error:[/red] unknown entity {entity!r}: expected one of {', '.join(CANONICAL_MODELS)}")
        raise typer.Exit(2)
    _check_system(system)
    frame = _ledger().read_table(entity, system=system)
    if account is not None:
        frame = frame[frame["account"] == account]
    total = len(frame)
    rows = records_for_display(frame.head(limit) if limit else frame, entity)
    if output is OutputFormat.json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    shown = f"{len(rows)} of {total}" if len(rows) < total else str(total)
    # On a narrow terminal the account is hidden first, then the times. The source ID is never shortened.
    columns = [Column(column, hide=1) if column.endswith("_at") else column for column in TABLE_COLUMNS[entity]]
    _print_table(f"{entity} ({shown})", rows, ["system", Column("account", hide=2), Column("source_id", shrink=False),
                                              *columns])


@exceptions_app.command("list")
def list_exceptions(
    status: str = typer.Option(None, "--status", help="Only exceptions with this status, e.g. open."),
    kind: str = typer.Option(None, "--kind", help=f"Only this kind: {', '.join(EXCEPTION_KINDS)}."),
    system: str = typer.Option(None, "--system", "-s", help="Only exceptions of this system, e.g. shopify."),
    owner: str = typer.Option(None, "--owner", help="Only exceptions owned by this owner, e.g. team:data-ops."),
    overdue: bool = typer.Option(False, "--overdue", help="Only active exceptions past their due time."),
    output: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="table or json."),
) -> None:
    """List exceptions, soonest due first."""
    _check_system(system)
    if kind is not None and kind not in EXCEPTION_KINDS:
        console.print(f"[red]error:[/red] unknown kind {kind!r}: expected one of {', '.join(EXCEPTION_KINDS)}")
        raise typer.Exit(2)
    if status is not None and status not in QUEUE_STATUSES:
        console.print(f"[red]error:[/red] unknown status {status!r}: expected one of {', '.join(QUEUE_STATUSES)}")
        raise typer.Exit(2)
    frame = _ledger().read_exceptions(status=status)
    for column, value in (("kind", kind), ("system", system), ("owner", owner)):
        if value is not None:
            frame = frame[frame[column] == value]
    if overdue:
        frame = frame[frame["status"].isin(ACTIVE_STATUSES) & (frame["due_at"] < pd.Timestamp.now(tz="UTC"))]

    if output is OutputFormat.json:
        for column in ("due_at", "opened_at", "last_seen_at", "updated_at"):
            frame[column] = frame[column].map(lambda value: None if pd.isna(value) else value.isoformat())
        rows = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
        for row in rows:
            row["details"] = json.loads(row["details"]) if row["details"] else None
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False, default=str))
        return
    now = pd.Timestamp.now(tz="UTC")
    rows = [{**{key: _cell(row[key]) for key in EXCEPTION_LINE + EXCEPTION_DETAIL},
             "due_at": _due_label(row["due_at"], row["status"], now)}
            for row in frame.astype(object).where(frame.notna(), None).to_dict(orient="records")]
    _print_exceptions(f"exceptions ({len(rows)}), soonest due first; times in UTC", rows)


def _age(delta: pd.Timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes}m"
    if minutes < 48 * 60:
        return f"{minutes // 60}h"
    return f"{minutes // (24 * 60)}d"


def _due_label(due_at, status: str, now: pd.Timestamp) -> str:
    """Return the due time, or how long ago it passed for an exception that is still active."""
    if due_at is None or pd.isna(due_at):
        return ""
    if status in ACTIVE_STATUSES and due_at < now:
        return f"overdue {_age(now - due_at)}"
    return due_at.strftime("%Y-%m-%d %H:%M")


def _aligned(cells: list[Text], widths: list[int], indent: int = 0) -> Text:
    """Join cells into one line of columns; a cell longer than its width ends in an ellipsis."""
    for cell, width in zip(cells, widths):
        cell.truncate(width, overflow="ellipsis", pad=True)
    line = Text(" " * indent) + Text(GAP).join(cells)
    line.rstrip()
    return line


def _print_exceptions(title: str, rows: list[dict]) -> None:
    """Print the exception list so that no line is wider than the output.

    One line per exception when every column fits with REASON_WIDTH left for the reason, the
    account being the first to go. Otherwise two lines: the exception and its record, then, indented,
    its status, owner, due time and reason. Identifiers shorten last; the reason takes what width is left.
    """
    width = _output_width()
    heading = Text(title)
    heading.truncate(width, overflow="ellipsis")
    console.print(heading, soft_wrap=True)
    if not rows:
        console.print("No exceptions.")
        return
    natural = {key: max([cell_len(key), *(cell_len(row[key]) for row in rows)])
               for key in EXCEPTION_LINE + EXCEPTION_DETAIL}
    # The reason, owner, account and kind may be shortened. The record ID is shortened only when that is not enough.
    floors = {key: min(natural[key], SHRUNK_WIDTH) if key in ("kind", "account", "owner", "reason")
              else natural[key] for key in natural}
    last_resort = {**floors, "record_id": min(natural["record_id"], SHRUNK_WIDTH)}

    def span(keys: list[str]) -> int:
        return sum(natural[key] for key in keys) + len(GAP) * len(keys)

    everything = EXCEPTION_ONE_LINE[:-1]
    without_account = [key for key in everything if key != "account"]
    if span(everything) + REASON_WIDTH <= width:
        lines = [(everything + ["reason"], 0)]
    elif span(without_account) + REASON_WIDTH <= width:
        lines = [(without_account + ["reason"], 0)]
    else:
        first = EXCEPTION_LINE if span(EXCEPTION_LINE) - len(GAP) <= width else [
            key for key in EXCEPTION_LINE if key != "account"]
        lines = [(first, 0), (EXCEPTION_DETAIL, natural["id"] + len(GAP))]

    layout = []
    for keys, indent in lines:
        room = width - indent - len(GAP) * (len(keys) - 1)
        widths = _fit_widths([natural[key] for key in keys], [floors[key] for key in keys], room)
        if sum(widths) > room:
            widths = _fit_widths(widths, [last_resort[key] for key in keys], room)
        layout.append((keys, indent, widths))
    for keys, indent, widths in layout:
        console.print(_aligned([Text(key, style="bold") for key in keys], widths, indent), soft_wrap=True)
    rule = max(indent + sum(widths) + len(GAP) * (len(keys) - 1) for keys, indent, widths in layout)
    console.print(Text("─" * min(rule, width)), soft_wrap=True)
    for row in rows:
        for keys, indent, widths in layout:
            cells = [Text(row[key], style="red" if key == "due_at" and row[key].startswith("overdue") else "")
                     for key in keys]
            console.print(_aligned(cells, widths, indent), soft_wrap=True)


ACTOR_OPTION = typer.Option(None, "--actor", help="Who decides; default: the operating-system user.")


def _reason_option(action: str):
    """Return the --reason option of a decision, with help that states whether the queue requires a reason."""
    required = f"; required, because {REASON_REQUIRED[action]}" if action in REASON_REQUIRED else "; optional"
    return typer.Option(None, "--reason", "-r", help=f"Why, recorded with the decision{required}.")


def _checked_reason(action: str, exception_id: int, reason: str | None) -> str | None:
    """Apply the queue's reason rule before anything changes. A missing required reason exits with code 2."""
    from meshline_pipelines.queue import ReasonRequired, checked_reason

    try:
        return checked_reason(action, reason, exception_id)
    except ReasonRequired as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _decide(action, *arguments, **options) -> None:
    """Apply a queue action and print the transition; a forbidden one exits with its reason."""
    from meshline_pipelines.queue import ExceptionNotFound, TransitionError

    try:
        done = action(*arguments, **options)
    except (TransitionError, ExceptionNotFound) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    for step in done if isinstance(done, list) else [done]:
        owner = f", owner {step.from_owner} -> {step.to_owner}" if step.to_owner != step.from_owner else ""
        console.print(f"exception {step.exception_id}: {step.action}, {step.from_status} -> {step.to_status}{owner}")


def _release_deliveries(ledger, exception_id: int) -> None:
    """Release the record's held outbox rows once no exception holds it, and print the outcome."""
    from meshline_pipelines.delivery.outbox import DRY, DRY_RUN, PENDING, delivery_mode, holding_exceptions, release
    from meshline_pipelines.queue import get_exception

    decided = get_exception(ledger, exception_id)
    released = release(ledger, decided["system"], decided["record_id"])
    still = holding_exceptions(ledger, decided["system"], decided["record_id"])
    if released:
        status = DRY_RUN if delivery_mode() == DRY else PENDING
        console.print(f"released {_plural(released, 'held delivery')} of {decided['system']} record "
                      f"{decided['record_id']}; `meshline outbox list --status {status}` shows them")
    elif still:
        console.print(f"{decided['system']} record {decided['record_id']} stays held by exception "
                      f"{', '.join(map(str, still))}")


@exceptions_app.command("show")
def show_exception(
    exception_id: int = typer.Argument(..., help="The exception's ID, from `meshline exceptions list`."),
    output: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="table or json."),
) -> None:
    """Show one exception with every decision taken on it."""
    from meshline_pipelines.queue import ExceptionNotFound, allowed_actions, get_exception, read_transitions

    ledger = _ledger()
    try:
        exception = get_exception(ledger, exception_id)
    except ExceptionNotFound as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    transitions = read_transitions(ledger, exception_id)
    record = {key: (value.isoformat() if isinstance(value, pd.Timestamp) else value)
              for key, value in exception.items()
              if not (value is None or (not isinstance(value, str) and pd.isna(value)))}
    history = [{key: (value.isoformat() if isinstance(value, pd.Timestamp) else value) for key, value in row.items()}
               for row in transitions.astype(object).where(transitions.notna(), None).to_dict(orient="records")]
    if output is OutputFormat.json:
        typer.echo(json.dumps({**record, "allowed_actions": allowed_actions(exception["status"]),
                               "transitions": history}, indent=2, ensure_ascii=False, default=str))
        return
    _print_table(f"exception {exception_id}", [{"field": key, "value": value} for key, value in record.items()],
                 [Column("field", shrink=False), Column("value", wrap=True)])
    console.print(f"Allowed actions: {', '.join(allowed_actions(exception['status'])) or 'none (closed)'}")
    _print_table("decisions", [{**step, "at": _short_time(step["at"])} for step in history],
                 # The reason wraps within its row: it is the decision's record, and shortening would lose it.
                 ["at", "action", "from_status", "to_status", "to_owner", "actor", Column("reason", wrap=True),
                  Column("run_id", hide=1)])


@exceptions_app.command("assign")
def assign_exception(exception_id: int = typer.Argument(...),
                     owner: str = typer.Argument(..., help="The new owner: team:NAME or an email address."),
                     actor: str = ACTOR_OPTION, reason: str = _reason_option("route")) -> None:
    """Route an exception to another owner."""
    from meshline_pipelines.queue import transition
    from meshline_pipelines.routing import RoutingError, validate_owner

    reason = _checked_reason("route", exception_id, reason)
    try:
        validate_owner(owner)
    except RoutingError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    _decide(transition, _ledger(), exception_id, "route", actor=actor, reason=reason, owner=owner)


@exceptions_app.command("approve")
def approve_exception(exception_id: int = typer.Argument(...), actor: str = ACTOR_OPTION,
                      reason: str = _reason_option("approve")) -> None:
    """Release the record for delivery despite the problem."""
    from meshline_pipelines.queue import transition

    reason = _checked_reason("approve", exception_id, reason)
    ledger = _ledger()
    _decide(transition, ledger, exception_id, "approve", actor=actor, reason=reason)
    _release_deliveries(ledger, exception_id)


@exceptions_app.command("reject")
def reject_exception(exception_id: int = typer.Argument(...), actor: str = ACTOR_OPTION,
                     reason: str = _reason_option("reject")) -> None:
    """Hold the record: it is not delivered until the exception is approved or fixed."""
    from meshline_pipelines.queue import transition

    reason = _checked_reason("reject", exception_id, reason)
    _decide(transition, _ledger(), exception_id, "reject", actor=actor, reason=reason)


@exceptions_app.command("escalate")
def escalate_exception(exception_id: int = typer.Argument(...), actor: str = ACTOR_OPTION,
                       reason: str = _reason_option("escalate")) -> None:
    """Pass the exception to its route's escalation target."""
    from meshline_pipelines.queue import escalate
    from meshline_pipelines.resources import RoutingResource

    reason = _checked_reason("escalate", exception_id, reason)
    _decide(escalate, _ledger(), RoutingResource().load(), exception_id, actor=actor, reason=reason)


@exceptions_app.command("close")
def close_exception(exception_id: int = typer.Argument(...), actor: str = ACTOR_OPTION,
                    reason: str = _reason_option("close")) -> None:
    """Close an exception; it reopens if the problem is seen again."""
    from meshline_pipelines.queue import transition

    reason = _checked_reason("close", exception_id, reason)
    ledger = _ledger()
    _decide(transition, ledger, exception_id, "close", actor=actor, reason=reason)
    _release_deliveries(ledger, exception_id)


def _rerun(exception_id: int, action: str, actor: str | None, reason: str | None) -> None:
    import dagster as dg

    from meshline_pipelines.definitions import MAIN_JOB, STREAMS, defs
    from meshline_pipelines.queue import ExceptionNotFound, TransitionError
    from meshline_pipelines.replay import rerun_exception

    reason = _checked_reason(action, exception_id, reason)
    _ensure_dagster_home()
    try:
        with dg.DagsterInstance.get() as instance:
            outcome = rerun_exception(_ledger(), defs, instance, STREAMS, exception_id, action, job_name=MAIN_JOB,
                                      actor=actor, reason=reason)
    except (TransitionError, ExceptionNotFound) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    state = "succeeded" if outcome.success else "failed"
    verdict = "fixed: the exception is closed" if outcome.fixed else "not fixed: the exception is open again"
    console.print(f"exception {exception_id}: {action} run {outcome.run_id} {state}; {verdict}")
    if not outcome.fixed:
        raise typer.Exit(1)


@exceptions_app.command("retry")
def retry_exception(exception_id: int = typer.Argument(...), actor: str = ACTOR_OPTION,
                    reason: str = _reason_option("retry")) -> None:
    """Run the exception's partition again from the source, and close the exception if that fixed it."""
    _rerun(exception_id, "retry", actor, reason)


@exceptions_app.command("replay")
def replay_exception(exception_id: int = typer.Argument(...), actor: str = ACTOR_OPTION,
                     reason: str = _reason_option("replay")) -> None:
    """Run the exception's partition again from its landed raw payloads, and close it if that fixed it."""
    _rerun(exception_id, "replay", actor, reason)


@app.command()
def trace(
    system: str = typer.Argument(..., help=f"System: {', '.join(SYSTEMS)}."),
    record_id: str = typer.Argument(..., help="The record's source ID, e.g. a Shopify order ID."),
    output: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="table or json."),
) -> None:
    """Print a record's path: triggers, landed payloads, validation, exceptions, decisions and replays."""
    from meshline_pipelines.trace import trace_record

    _check_system(system)
    path = trace_record(_ledger(), system, record_id)
    if path.empty:
        console.print(f"[red]error:[/red] no {system} record {record_id!r} in the ledger: check the ID, "
                      f"for example with `meshline records orders --system {system}`")
        raise typer.Exit(1)
    path["at"] = path["at"].map(lambda value: None if pd.isna(value) else value.isoformat())
    rows = path.astype(object).where(path.notna(), None).to_dict(orient="records")
    if output is OutputFormat.json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False, default=str))
        return
    _print_table(f"{system} record {record_id}", [{**row, "at": _short_time(row["at"])} for row in rows],
                 [Column("at", shrink=False), "step", "what", Column("run_id", hide=1)])


TARGETS = ["netsuite", "hubspot", "shipstation", "shopify"]
# On a narrow terminal the time is hidden first, then the attempts and the target's ID.
OUTBOX_COLUMNS = ["id", "target", "entity", "record_key", "source_system", Column("source_id", shrink=False), "status",
                  Column("attempts", hide=2), Column("target_id", hide=1), Column("updated_at", hide=3)]


@outbox_app.command("list")
def list_outbox(
    status: str = typer.Option(None, "--status", help="Only rows with this status: pending, held, dry_run, "
                                                      "sending, delivered, rejected."),
    target: str = typer.Option(None, "--target", "-t", help=f"Only this target: {', '.join(TARGETS)}."),
    limit: int = typer.Option(None, "--limit", "-n", min=1, help="Print at most this many rows."),
    output: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="table, or json with payloads."),
) -> None:
    """List outbox rows, oldest first."""
    from meshline_pipelines.delivery.outbox import STATUSES, read_outbox

    if status is not None and status not in STATUSES:
        console.print(f"[red]error:[/red] unknown status {status!r}: expected one of {', '.join(STATUSES)}")
        raise typer.Exit(2)
    if target is not None and target not in TARGETS:
        console.print(f"[red]error:[/red] unknown target {target!r}: expected one of {', '.join(TARGETS)}")
        raise typer.Exit(2)
    frame = read_outbox(_ledger(), status=status, target=target)
    if limit:
        frame = frame.head(limit)
    for column in ("created_at", "updated_at", "delivered_at"):
        frame[column] = frame[column].map(lambda value: None if pd.isna(value) else value.isoformat())
    rows = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    if output is OutputFormat.json:
        for row in rows:
            row["payload"] = json.loads(row["payload"])
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False, default=str))
        return
    _print_table(f"outbox ({len(rows)})", rows, OUTBOX_COLUMNS)


@outbox_app.command("show")
def show_outbox(outbox_id: int = typer.Argument(..., help="The row's ID, from `meshline outbox list`.")) -> None:
    """Show one outbox row with the exact payload sent, or to be sent."""
    from meshline_pipelines.delivery.outbox import holding_exceptions, read_outbox

    ledger = _ledger()
    frame = read_outbox(ledger)
    found = frame[frame["id"] == outbox_id]
    if found.empty:
        console.print(f"[red]error:[/red] no outbox row with ID {outbox_id}: `meshline outbox list` shows the IDs")
        raise typer.Exit(1)
    row = {key: (None if not isinstance(value, str) and pd.isna(value) else
                 value.isoformat() if isinstance(value, pd.Timestamp) else value)
           for key, value in found.iloc[0].to_dict().items()}
    row["payload"] = json.loads(row["payload"])
    if row["status"] == "held":
        row["held_by_exceptions"] = holding_exceptions(ledger, row["source_system"], row["source_id"])
    typer.echo(json.dumps(row, indent=2, ensure_ascii=False, default=str))


# Webhooks and the inbox

WEBHOOK_SYSTEMS = ["shopify", "stripe"]
INBOX_COLUMNS = ["id", "system", Column("account", hide=1), "topic", "event_id", "status", "deliveries", "received_at"]


@webhooks_app.command("serve")
def serve_webhooks(
    host: str = typer.Option("127.0.0.1", help="Address to listen on; 0.0.0.0 listens on every interface."),
    port: int = typer.Option(8787, min=1, max=65535, help="TCP port to listen on."),
) -> None:
    """Run the webhook receiver until interrupted: POST /webhooks/shopify, POST /webhooks/stripe, GET /healthz.

    Secrets come from SHOPIFY_WEBHOOK_SECRET and STRIPE_WEBHOOK_SECRET, comma-separated during a rotation.
    A route without its secret responds with 503.
    """
    import logging

    import sqlalchemy as sa
    import uvicorn

    from meshline_pipelines.webhooks.app import create_app

    # Uvicorn configures only its own loggers, so the receiver's lines need a root handler.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("meshline_pipelines").setLevel(logging.INFO)

    database_url = settings.database_url()
    try:
        receiver = create_app(database_url)
    except sa.exc.SQLAlchemyError as exc:
        console.print(f"[red]error:[/red] could not open the ledger at {_redacted(database_url)}: {exc}")
        raise typer.Exit(1) from None
    console.print(f"Ledger: {_redacted(database_url)}\nReceiver: http://{host}:{port}/webhooks/shopify "
                  f"and http://{host}:{port}/webhooks/stripe")
    uvicorn.run(receiver, host=host, port=port, log_level="info")


def _parsed_payload(text: str):
    try:
        return json.loads(text)
    except ValueError:
        # The receiver stores JSON only, but rows written through `inbox.receive` directly may not be.
        return text


@inbox_app.command("list")
def list_inbox(
    status: str = typer.Option(None, "--status", help=f"Only events with this status: {', '.join(INBOX_STATUSES)}."),
    system: str = typer.Option(None, "--system", "-s",
                               help=f"Only events of this system: {', '.join(WEBHOOK_SYSTEMS)}."),
    output: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f",
                                        help="table, or json with every column and the payload parsed."),
) -> None:
    """List webhook inbox events, oldest first."""
    if status is not None and status not in INBOX_STATUSES:
        console.print(f"[red]error:[/red] unknown status {status!r}: expected one of {', '.join(INBOX_STATUSES)}")
        raise typer.Exit(2)
    if system is not None and system not in WEBHOOK_SYSTEMS:
        console.print(f"[red]error:[/red] unknown system {system!r}: expected one of {', '.join(WEBHOOK_SYSTEMS)}")
        raise typer.Exit(2)
    frame = read_inbox(_ledger(), status=status, system=system)

    if output is OutputFormat.json:
        for column in ("triggered_at", "received_at", "processed_at"):
            frame[column] = frame[column].map(lambda value: None if pd.isna(value) else value.isoformat())
        rows = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
        for row in rows:
            row["payload"] = _parsed_payload(row["payload"])
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False, default=str))
        return
    frame["received_at"] = frame["received_at"].dt.strftime("%Y-%m-%d %H:%M:%S UTC")
    rows = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    _print_table(f"inbox events ({len(rows)})", rows, INBOX_COLUMNS)


# The weekly review


@app.command()
def review(
    week: str = typer.Option(None, "--week", "-w",
                             help="ISO week as YYYY-Www, Monday 00:00 UTC to the next Monday. "
                                  "Default: the last complete week."),
    output: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f",
                                        help="table, or json with every measure; durations in seconds."),
) -> None:
    """Print the execution-quality review of one week: yield, exceptions, reruns, triggers, deliveries."""
    from meshline_pipelines.review import last_complete_week, parse_week, weekly_review

    try:
        iso_week = parse_week(week) if week is not None else last_complete_week()
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    measured = weekly_review(_ledger(), iso_week)

    if output is OutputFormat.json:
        typer.echo(json.dumps(measured.as_dict(), indent=2, ensure_ascii=False))
        return
    title = f"weekly review {measured.week} ({measured.start:%Y-%m-%d} to {measured.end:%Y-%m-%d} UTC, end excluded)"
    _print_table(title, measured.summary_rows(), MEASURE_COLUMNS)


if __name__ == "__main__":
    app()
