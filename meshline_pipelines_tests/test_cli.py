"""The `meshline` command on the demo week, as an operator runs it."""

import json

import pytest
from typer.testing import CliRunner

from meshline_pipelines.cli import app
from meshline_pipelines.generator.findings import found_counts
from meshline_pipelines.ledger import Ledger
from meshline_pipelines_tests.snapshots import end_state


@pytest.fixture
def meshline_home(tmp_path, monkeypatch, ledger_url):
    monkeypatch.setenv("MESHLINE_HOME", str(tmp_path / ".meshline"))
    monkeypatch.setenv("MESHLINE_DATABASE_URL", ledger_url)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("MESHLINE_IMPORT_DIR", raising=False)
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
