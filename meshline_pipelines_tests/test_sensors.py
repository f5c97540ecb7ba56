"""Sensors as triggers: evaluated twice they request nothing twice, and a new version always runs."""

import json
import os
from datetime import datetime, timezone

import dagster as dg
import httpx
import pytest

from meshline_pipelines import sensors
from meshline_pipelines.definitions import MAIN_JOB, build_definitions
from meshline_pipelines.jobs import EXTRACT_JOB, extract_run_config
from meshline_pipelines.ledger import Ledger, Watermark
from meshline_pipelines.normalize import empty_table
from meshline_pipelines.resources import LedgerResource, RoutingResource
from meshline_pipelines.stripe.api import StripeApiClient
from meshline_pipelines.triggers import read_triggers
from meshline_pipelines_tests.conftest import drop_file
from meshline_pipelines_tests.helpers import clients
from meshline_pipelines_tests.loopback import serve
from meshline_pipelines_tests.stripe_mock import StripeDouble, charge

NOV_2 = int(datetime(2026, 11, 2, tzinfo=timezone.utc).timestamp())


def _resources(import_dir, ledger_url, **overrides) -> dict:
    return {**clients(import_dir), "ledger": LedgerResource(database_url=ledger_url), "routing": RoutingResource(),
            **overrides}


def _evaluate(sensor_name: str, resources: dict, cursor: str | None, instance=None):
    definitions = build_definitions(resources)
    context = dg.build_sensor_context(cursor=cursor, resources=resources, instance=instance, definitions=definitions)
    return definitions.resolve_sensor_def(sensor_name).evaluate_tick(context)


def test_import_folder_sensor_requests_each_day_once(import_dir, ledger_url):
    drop_file(import_dir, "shopify", "orders.json", partition="2026-11-24")
    drop_file(import_dir, "shopify", "products.json", partition="2026-11-24")
    drop_file(import_dir, "stripe", "charges.json", partition="2026-11-25")
    resources = _resources(import_dir, ledger_url)

    first = _evaluate("import_folder_sensor", resources, None)
    second = _evaluate("import_folder_sensor", resources, first.cursor)

    requested = {(request.partition_key, request.tags["connector"]) for request in first.run_requests}
    assert requested == {("2026-11-24", "shopify"), ("2026-11-25", "stripe")}
    assert second.run_requests == []
    shopify = next(request for request in first.run_requests if request.tags["connector"] == "shopify")
    assert dg.AssetKey(["shopify", "orders"]) in shopify.asset_selection
    assert dg.AssetKey(["stripe", "charges"]) not in shopify.asset_selection
    assert shopify.run_key.startswith("files:2026-11-24/shopify@")
    recorded = read_triggers(Ledger.connect(ledger_url))
    assert sorted(recorded["kind"]) == ["file", "file"]
    assert set(recorded["owner"]) == {"team:storefront", "team:finance"}


def test_import_folder_sensor_reruns_changed_day(import_dir, ledger_url):
    target = drop_file(import_dir, "shopify", "orders.json", partition="2026-11-24")
    resources = _resources(import_dir, ledger_url)
    first = _evaluate("import_folder_sensor", resources, None)

    order = json.loads(target.read_text())
    order["orders"][0]["note"] = "gift wrap, please"
    target.write_text(json.dumps(order))
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 1_000_000))
    changed = _evaluate("import_folder_sensor", resources, first.cursor)
    again = _evaluate("import_folder_sensor", resources, changed.cursor)

    assert len(changed.run_requests) == 1
    assert changed.run_requests[0].run_key != first.run_requests[0].run_key
    assert again.run_requests == []


def test_poll_sensor_once_per_interval(ledger_url, import_dir, monkeypatch):
    live = StripeApiClient(account_id="acct_1POLL", api_key="sk_test_double", base_url="http://127.0.0.1:9")
    resources = _resources(import_dir, ledger_url, stripe=live)
    clock = [datetime(2026, 11, 2, 10, 0, tzinfo=timezone.utc)]
    monkeypatch.setattr(sensors, "utc_now", lambda: clock[0])

    with dg.instance_for_test() as instance:
        first = _evaluate("stripe_charges_poll", resources, None, instance)
        same_interval = _evaluate("stripe_charges_poll", resources, first.cursor, instance)

        ledger = Ledger.connect(ledger_url)
        ledger.store("payments", empty_table("payments"), partition_key="2026-11-02", run_id="test",
                     watermark=Watermark("stripe", "acct_1POLL", "charges",
                                         datetime(2026, 11, 2, 9, 58, tzinfo=timezone.utc), frozenset({"ch_1"})))
        clock[0] = datetime(2026, 11, 2, 10, 5, tzinfo=timezone.utc)
        next_interval = _evaluate("stripe_charges_poll", resources, first.cursor, instance)

    assert len(first.run_requests) == 1
    assert first.run_requests[0].run_config == extract_run_config("stripe", "charges")
    assert first.run_requests[0].tags["connector"] == "stripe"
    assert "charges@start#" in first.run_requests[0].run_key
    assert same_interval.run_requests == []
    assert "already requested" in same_interval.skip_message
    assert len(next_interval.run_requests) == 1
    assert "charges@2026-11-02T09:58:00Z#" in next_interval.run_requests[0].run_key


def test_poll_sensors_only_in_api_mode(monkeypatch):
    monkeypatch.setenv("STRIPE_MODE", "api")
    monkeypatch.setenv("STRIPE_ACCOUNT_ID", "acct_1MODE")

    names = {sensor.name for sensor in build_definitions().sensors}

    assert {"stripe_charges_poll", "stripe_refunds_poll", "stripe_payouts_poll",
            "stripe_balance_transactions_poll"} <= names
    assert not any(name.startswith("shopify_") for name in names)


def test_extract_job_reports_each_stored_partition(ledger_url, import_dir):
    double = StripeDouble()
    double.objects["charges"] = [charge(f"ch_job_{n}", NOV_2 + 3600 * n) for n in range(3)]
    double.objects["charges"].append(charge("ch_job_next_day", NOV_2 + 86400 + 60))

    with serve(double) as base_url, dg.instance_for_test() as instance:
        live = StripeApiClient(account_id="acct_1JOB", api_key="sk_test_double", base_url=base_url)
        definitions = build_definitions(_resources(import_dir, ledger_url, stripe=live))
        config = extract_run_config("stripe", "charges")
        config["ops"]["extract_live_stream"]["config"].update(since="2026-11-02T00:00:00Z", until="2026-11-04T00:00:00Z")
        result = definitions.resolve_job_def(EXTRACT_JOB).execute_in_process(run_config=config, instance=instance)

    assert result.success
    materialized = [(event.asset_key.to_user_string(), event.partition) for event in result.get_asset_materialization_events()]
    assert materialized == [("stripe/charges", "2026-11-02"), ("stripe/charges", "2026-11-03")]
    assert len(Ledger.connect(ledger_url).read_table("payments")) == 4


def test_failed_partition_opens_connector_failure(ledger_url, import_dir):
    double = StripeDouble()
    double.answers = [httpx.Response(401, json={"error": {"message": "Invalid API Key provided: sk_live_****"}})]

    with serve(double) as base_url, dg.instance_for_test() as instance:
        live = StripeApiClient(account_id="acct_1FAIL", api_key="sk_live_revoked", base_url=base_url)
        resources = _resources(import_dir, ledger_url, stripe=live)
        definitions = build_definitions(resources)
        result = definitions.resolve_job_def(MAIN_JOB).execute_in_process(
            partition_key="2026-11-02", instance=instance, raise_on_error=False,
            asset_selection=[dg.AssetKey(["stripe", "charges"])], tags={"connector": "stripe"})
        failure = next(event for event in result.all_events if event.event_type == dg.DagsterEventType.RUN_FAILURE)
        context = dg.build_run_status_sensor_context(
            sensor_name="connector_failure_sensor", dagster_event=failure, dagster_instance=instance,
            dagster_run=result.dagster_run, resources=resources).for_run_failure()
        sensor = next(s for s in definitions.sensors if s.name == "connector_failure_sensor")
        sensor(context)
        sensor(context)

    assert not result.success
    assert len(double.requests) == 1  # a refused key is not retried
    exceptions = Ledger.connect(ledger_url).read_exceptions()
    assert len(exceptions) == 1
    row = exceptions.iloc[0]
    assert (row["kind"], row["system"], row["owner"]) == ("connector_failure", "stripe", "team:finance")
    assert row["record_id"] == "partition:2026-11-02"
    assert row["occurrences"] == 2
    assert "STRIPE_API_KEY" in row["reason"]
    assert "re-materialize partition 2026-11-02 of stripe/charges" in row["reason"]
    assert "sk_live_revoked" not in row["reason"]


@pytest.fixture(autouse=True)
def _file_mode(monkeypatch):
    for name in ("SHOPIFY_MODE", "AMAZON_MODE", "STRIPE_MODE"):
        monkeypatch.delenv(name, raising=False)


def test_catch_up_schedule_rereads_yesterday(ledger_url, import_dir):
    live = StripeApiClient(account_id="acct_1NIGHT", api_key="sk_test_double", base_url="http://127.0.0.1:9")
    resources = _resources(import_dir, ledger_url, stripe=live)
    definitions = build_definitions(resources)
    schedule = definitions.resolve_schedule_def("live_catch_up_schedule")

    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance, resources=resources,
                                            repository_def=definitions.get_repository_def(),
                                            scheduled_execution_time=datetime(2026, 11, 3, 2, 30, tzinfo=timezone.utc))
        requests = list(schedule.evaluate_tick(context).run_requests)

    assert [(request.partition_key, request.run_key) for request in requests] == [
        ("2026-11-02", "schedule:stripe:2026-11-02")]
    assert dg.AssetKey(["stripe", "balance_transactions"]) in requests[0].asset_selection
    assert dg.AssetKey(["shopify", "orders"]) not in requests[0].asset_selection
    assert read_triggers(Ledger.connect(ledger_url))["kind"].tolist() == ["schedule"]
