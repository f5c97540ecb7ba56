"""The `meshline` command on the demo week, as an operator runs it."""

import json
import os
from datetime import datetime, timezone

import httpx
import pytest
from typer.testing import CliRunner

from meshline_pipelines.cli import app
from meshline_pipelines.demo import stage_demo_week
from meshline_pipelines.generator.findings import found_counts
from meshline_pipelines.ledger import Ledger
from meshline_pipelines.triggers import read_triggers
from meshline_pipelines_tests.loopback import serve
from meshline_pipelines_tests.snapshots import end_state
from meshline_pipelines_tests.stripe_mock import StripeDouble, charge


@pytest.fixture
def meshline_home(tmp_path, monkeypatch, ledger_url):
    monkeypatch.setenv("MESHLINE_HOME", str(tmp_path / ".meshline"))
    monkeypatch.setenv("MESHLINE_DATABASE_URL", ledger_url)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("MESHLINE_IMPORT_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path / ".meshline"


DEMO = ("demo", "--shopify-orders", "150", "--amazon-orders", "50")


def _invoke(*arguments):
    result = CliRunner().invoke(app, list(arguments))
    assert result.exit_code == 0, result.output
    return result.output


def test_demo_then_run_keeps_the_end_state(meshline_home, ledger_url):
    output = _invoke(*DEMO)

    assert "Staged 16 sample files and a generated week" in output
    assert "13 partitions, 13 succeeded, 0 failed" in output
    assert "unmapped_reference" in output
    ledger = Ledger.connect(ledger_url)
    first = end_state(ledger)

    _invoke("run")

    assert end_state(ledger) == first
    triggers = read_triggers(ledger)
    assert set(triggers["kind"]) == {"manual"}
    assert set(triggers["status"]) == {"succeeded"}
    assert set(triggers["system"]) == {"shopify", "amazon", "stripe", "netsuite", "hubspot", "shipstation"}

    path = json.loads(_invoke("trace", "shopify", "450789469", "--format", "json"))
    steps = [step["step"] for step in path]
    assert {"trigger: manual", "landed raw", "stored", "current state", "mapped: order", "delivery: dry_run"} <= set(
        steps)
    assert steps.index("landed raw") < steps.index("stored")
    held = ledger.read_exceptions().iloc[0]
    held_path = json.loads(_invoke("trace", held["system"], held["record_id"], "--format", "json"))
    assert f"exception {held['id']} opened" in [step["step"] for step in held_path]
    assert (meshline_home / "dagster_home" / "dagster.yaml").exists()
    ledger.dispose()


def test_records_show_exact_decimals_and_identity(meshline_home):
    _invoke(*DEMO)

    orders = json.loads(_invoke("records", "orders", "--format", "json"))
    refunds = json.loads(_invoke("records", "refunds", "--system", "shopify", "--format", "json"))
    table = _invoke("records", "orders")

    totals = {(row["system"], row["source_id"]): (row["total_amount"], row["total_currency"]) for row in orders}
    assert totals[("shopify", "450789469")] == ("598.94", "USD")
    assert totals[("amazon", "123-4567890-1234567")] == ("149.99", "USD")
    shopify_order = next(row for row in orders if row["system"] == "shopify")
    assert shopify_order["extra"]["po_number"] == "ABC123"
    sample_refund = [row for row in refunds if row["source_id"] == "509562969"]
    assert [(row["amount"], row["currency"]) for row in sample_refund] == [("209.00", "USD")]
    assert "598.94" in table


def test_exceptions_list_names_owner_and_fix(meshline_home):
    drop = meshline_home / "imports" / "2026-11-30" / "stripe"
    drop.mkdir(parents=True)
    (drop / "charges.json").write_text('{"object": "list", "data": [')

    _invoke("run")
    listed = json.loads(_invoke("exceptions", "list", "--format", "json"))

    assert len(listed) == 1
    assert listed[0]["kind"] == "connector_failure"
    assert listed[0]["owner"] == "team:finance"
    assert listed[0]["partition_key"] == "2026-11-30"
    assert "charges.json is not valid JSON" in listed[0]["reason"]


def _line_of(lines: list[str], exception_id: int) -> str:
    return next(line for line in lines if line.startswith(f"{exception_id} "))


def test_exceptions_table_fits_80_columns(meshline_home, monkeypatch):
    stage_demo_week()
    drop = meshline_home / "imports" / "2026-11-30" / "stripe"
    drop.mkdir(parents=True)
    (drop / "charges.json").write_text("[")
    _invoke("run")
    listed = json.loads(_invoke("exceptions", "list", "--format", "json"))

    monkeypatch.setenv("COLUMNS", "80")
    lines = _invoke("exceptions", "list").splitlines()

    assert len(listed) >= 3
    assert {"connector_failure", "reconciliation_mismatch"} <= {row["kind"] for row in listed}
    assert max(len(line) for line in lines) <= 80
    for exception in listed:
        line = _line_of(lines, exception["id"])
        assert exception["kind"] in line
        assert exception["record_id"] in line
        # The owner, due time and shortened reason are on the next line, which starts blank under the ID.
        detail = lines[lines.index(line) + 1]
        assert detail.startswith("    ")
        assert exception["owner"] in detail
        assert exception["reason"][:20] in detail
        assert detail.endswith("…")
    assert json.loads(_invoke("exceptions", "list", "--format", "json")) == listed


def test_exceptions_table_wide_one_line(meshline_home, monkeypatch):
    stage_demo_week()
    _invoke("run")
    listed = json.loads(_invoke("exceptions", "list", "--format", "json"))

    monkeypatch.setenv("COLUMNS", "200")
    lines = _invoke("exceptions", "list").splitlines()

    assert max(len(line) for line in lines) <= 200
    assert len(lines) == 3 + len(listed)  # title, header and rule, then one line per exception
    for exception in listed:
        line = _line_of(lines, exception["id"])
        assert all(exception[key] in line for key in ("kind", "account", "record_id", "owner"))


def test_other_tables_fit_80_columns(meshline_home, monkeypatch):
    stage_demo_week()
    _invoke("run")
    monkeypatch.setenv("COLUMNS", "80")

    for command in (["records", "orders"], ["outbox", "list"], ["inbox", "list"], ["trace", "shopify", "450789469"]):
        output = _invoke(*command)
        assert max(len(line) for line in output.splitlines()) <= 80, command
    orders = _invoke("records", "orders")
    assert "123-4567890-1234567" in orders  # identifiers keep their full width
    assert "hidden to fit 80 columns: account" in orders


def test_unknown_entity_is_rejected(meshline_home):
    result = CliRunner().invoke(app, ["records", "invoices"])

    assert result.exit_code == 2
    assert "unknown entity 'invoices'" in result.output


def test_run_of_a_partition_without_data(meshline_home):
    result = CliRunner().invoke(app, ["run", "--partition", "2026-11-02"])

    assert result.exit_code == 2
    assert "no data for partitions 2026-11-02" in result.output


def test_invalid_partition_key_is_named(meshline_home):
    result = CliRunner().invoke(app, ["run", "--partition", "2026-13-01"])

    assert result.exit_code == 2
    assert "invalid partition key 2026-13-01: write a day as YYYY-MM-DD" in result.output


def test_unknown_system_is_rejected(meshline_home):
    result = CliRunner().invoke(app, ["records", "orders", "--system", "shopfy"])

    assert result.exit_code == 2
    assert "unknown system 'shopfy'" in result.output


def test_exceptions_filter_by_kind_and_system(meshline_home):
    drop = meshline_home / "imports" / "2026-11-30" / "stripe"
    drop.mkdir(parents=True)
    (drop / "charges.json").write_text("[")
    _invoke("run")

    stripe = json.loads(_invoke("exceptions", "list", "--system", "stripe", "--kind", "connector_failure",
                                "--format", "json"))
    shopify = json.loads(_invoke("exceptions", "list", "--system", "shopify", "--format", "json"))

    assert [row["record_id"] for row in stripe] == ["file:2026-11-30/stripe/charges.json"]
    assert stripe[0]["details"]["stream"] == "charges"
    assert shopify == []


def test_demo_finds_each_planted_case(meshline_home, ledger_url):
    output = _invoke(*DEMO)

    manifest = json.loads((meshline_home / "imports" / "manifest.json").read_text())
    found = found_counts(Ledger.connect(ledger_url), manifest)
    assert "Cases planted in the generated week 2026-10-26" in output
    for kind, planted in manifest["defects"].items():
        assert planted["count"] >= 1, kind
        assert found[kind] == planted["count"], kind


def _measures(output: str) -> dict[str, str]:
    """The measure and value columns of the extraction summary table."""
    cells = [[cell.strip() for cell in line.strip("│ ").split("│")] for line in output.splitlines() if "│" in line]
    return {row[0]: row[1] for row in cells if len(row) == 2}


def test_extract_twice_stores_once(meshline_home, monkeypatch):
    monkeypatch.setenv("STRIPE_ACCOUNT_ID", "acct_1CLI")
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_double")
    double = StripeDouble()
    start = int(datetime(2026, 11, 2, 9, tzinfo=timezone.utc).timestamp())
    double.objects["charges"] = [charge(f"ch_cli_{n:03d}", start + 90 * n) for n in range(130)]
    window = ("--since", "2026-11-02", "--until", "2026-11-03T00:00:00Z")

    with serve(double) as base_url:
        first = _invoke("extract", "stripe", "charges", "--base-url", base_url, *window)
        second = _invoke("extract", "stripe", "charges", "--base-url", base_url, *window)

    assert "GET /v1/charges page 2: 30 records" in first
    assert _measures(first)["stored (new or changed)"] == "130"
    assert _measures(second)["stored (new or changed)"] == "0"
    assert _measures(second)["unchanged"] == "130"
    assert _measures(second)["already stored at the watermark"] == "1"
    assert _measures(second)["watermark after"] == "2026-11-02T12:13:30Z"
    payments = json.loads(_invoke("records", "payments", "--system", "stripe", "--format", "json"))
    assert len(payments) == 130
    assert {row["account"] for row in payments} == {"acct_1CLI"}


def test_run_exits_1_when_a_partition_fails(meshline_home):
    folder = meshline_home / "imports" / "2026-11-24" / "shopify"
    folder.mkdir(parents=True)
    # Every order lacks its required fields, so the partition fails validation as a whole.
    (folder / "orders.json").write_text(json.dumps({"orders": [{"id": 1}, {"id": 2}]}))

    result = CliRunner().invoke(app, ["run", "--partition", "2026-11-24"])

    assert result.exit_code == 1, result.output
    assert "1 partition, 0 succeeded, 1 failed (2026-11-24)" in result.output


def test_extract_names_a_missing_credential(meshline_home, monkeypatch):
    monkeypatch.setenv("STRIPE_ACCOUNT_ID", "acct_1CLI")
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)

    result = CliRunner().invoke(app, ["extract", "stripe", "charges"])

    assert result.exit_code == 2
    assert "STRIPE_API_KEY is not set" in result.output


def test_extract_reports_an_unreachable_api_and_stores_nothing(meshline_home, monkeypatch, ledger_url):
    monkeypatch.setenv("STRIPE_ACCOUNT_ID", "acct_1CLI")
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_double")
    double = StripeDouble()
    double.answers = [httpx.Response(503, headers={"Retry-After": "0"}) for _ in range(5)]

    with serve(double) as base_url:
        result = CliRunner().invoke(app, ["extract", "stripe", "charges", "--base-url", base_url,
                                          "--since", "2026-11-02", "--until", "2026-11-02T00:00:01Z"])

    assert result.exit_code == 1
    assert "GET /v1/charges failed (HTTP 503)" in result.output
    assert "check --base-url" in result.output
    assert Ledger.connect(ledger_url).read_watermark("stripe", "acct_1CLI", "charges").cursor is None


def test_extract_reads_credentials_from_dotenv(meshline_home, monkeypatch, tmp_path):
    # The command loads .env into the process environment; a copy keeps that from leaking into other tests.
    monkeypatch.setattr(os, "environ", os.environ.copy())
    for name in ("STRIPE_ACCOUNT_ID", "STRIPE_API_KEY"):
        os.environ.pop(name, None)
    double = StripeDouble()
    double.objects["charges"] = [charge("ch_env_1", int(datetime(2026, 11, 2, 9, tzinfo=timezone.utc).timestamp()))]

    with serve(double) as base_url:
        (tmp_path / ".env").write_text(f"STRIPE_ACCOUNT_ID=acct_1DOTENV\nSTRIPE_API_KEY=sk_test_double\n"
                                       f"STRIPE_API_BASE_URL={base_url}\n")
        output = _invoke("extract", "stripe", "charges", "--since", "2026-11-02", "--until", "2026-11-03")

    assert _measures(output)["stored (new or changed)"] == "1"
    assert "acct_1DOTENV" in output


def test_extract_records_a_manual_trigger(meshline_home, monkeypatch, ledger_url):
    monkeypatch.setenv("STRIPE_ACCOUNT_ID", "acct_1TRIG")
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_double")
    double = StripeDouble()

    with serve(double) as base_url:
        _invoke("extract", "stripe", "refunds", "--base-url", base_url, "--since", "2026-11-02", "--until", "2026-11-03")

    triggers = read_triggers(Ledger.connect(ledger_url))
    assert triggers[["kind", "system", "stream", "status", "owner"]].values.tolist() == [
        ["manual", "stripe", "refunds", "succeeded", "team:finance"]]
