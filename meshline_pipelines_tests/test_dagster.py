"""The code location through Dagster's own APIs: definitions, partitioned assets, checks, the main job."""

import copy
import json
import shutil
from pathlib import Path

import dagster as dg
from sqlalchemy.engine import make_url

from meshline_pipelines.definitions import MAIN_JOB, build_definitions, defs
from meshline_pipelines.demo import DEMO_WEEK, stage_demo_week
from meshline_pipelines.ledger import Ledger
from meshline_pipelines.resources import LedgerResource, RoutingResource
from meshline_pipelines.runner import partitions_with_data, run_main_job
from meshline_pipelines_tests.conftest import drop_file, sample_json
from meshline_pipelines_tests.helpers import clients
from meshline_pipelines_tests.snapshots import end_state

REPOSITORY = Path(__file__).resolve().parents[1]


def _definitions(import_dir, ledger_url) -> dg.Definitions:
    return build_definitions({**clients(import_dir), "ledger": LedgerResource(database_url=ledger_url),
                              "routing": RoutingResource()})


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    keys = {key.to_user_string() for key in defs.resolve_all_asset_keys()}

    assert {"shopify/orders", "shopify/refunds", "shopify/customers", "shopify/inventory_levels",
            "shopify/payouts", "amazon/orders", "amazon/settlements", "amazon/inventory", "stripe/charges",
            "stripe/payouts", "stripe/balance_transactions"} <= keys


def test_assets_carry_owners_groups_and_blocking_checks():
    orders = defs.resolve_assets_def(dg.AssetKey(["shopify", "orders"]))
    spec = next(iter(orders.specs))

    assert spec.group_name == "shopify"
    assert spec.owners == ["team:storefront"]
    assert "shopify" in spec.kinds
    assert orders.partitions_def.get_first_partition_key() == "2026-10-01"
    check_names = {check.name for check in orders.check_specs}
    assert check_names == {"orders_schema", "order_lines_schema"}
    assert all(check.blocking for check in orders.check_specs)


def test_partition_materializes_with_check_results(ledger_url, import_dir):
    drop_file(import_dir, "shopify", "orders.json")
    definitions = _definitions(import_dir, ledger_url)

    with dg.instance_for_test() as instance:
        result = definitions.resolve_job_def(MAIN_JOB).execute_in_process(
            partition_key="2026-11-24", instance=instance, asset_selection=[dg.AssetKey(["shopify", "orders"])])

    assert result.success
    evaluations = {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}
    assert evaluations["orders_schema"].passed
    assert evaluations["orders_schema"].metadata["records"].value == 1
    materialization = result.get_asset_materialization_events()[0].materialization
    assert materialization.partition == "2026-11-24"
    assert materialization.metadata["dagster/row_count"].value == 1
    column_names = [column.name for column in materialization.metadata["dagster/column_schema"].value.columns]
    assert "total_presentment_amount" in column_names


def test_blocking_check_fails_the_partition(ledger_url, import_dir):
    order = sample_json("shopify", "orders.json")["orders"][0]
    broken = copy.deepcopy(order)
    del broken["updated_at"]
    drop_file(import_dir, "shopify", "orders.json", content=json.dumps({"orders": [broken]}).encode())
    definitions = _definitions(import_dir, ledger_url)

    with dg.instance_for_test() as instance:
        result = definitions.resolve_job_def(MAIN_JOB).execute_in_process(
            partition_key="2026-11-24", instance=instance, raise_on_error=False,
            asset_selection=[dg.AssetKey(["shopify", "orders"])])

        assert not result.success
        evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "orders_schema")
        assert not evaluation.passed
        assert evaluation.severity == dg.AssetCheckSeverity.ERROR
        assert "nothing was stored" in evaluation.description
        assert evaluation.metadata["held_records"].value == ["450789469"]
        assert "meshline exceptions list --system shopify" in evaluation.metadata["exception_queue"].value
        status = instance.get_status_by_partition(dg.AssetKey(["shopify", "orders"]),
                                                  ["2026-11-24"], defs.resolve_assets_def(dg.AssetKey(["shopify", "orders"])).partitions_def)
        assert status["2026-11-24"] == dg.AssetPartitionStatus.FAILED

    ledger = Ledger.connect(ledger_url)
    assert ledger.read_table("orders").empty
    assert list(ledger.read_exceptions()["kind"]) == ["missing_field"]
    ledger.dispose()


def test_replaying_a_fixed_partition_loads_it(ledger_url, import_dir):
    order = sample_json("shopify", "orders.json")["orders"][0]
    broken = copy.deepcopy(order)
    del broken["updated_at"]
    target = drop_file(import_dir, "shopify", "orders.json", content=json.dumps({"orders": [broken]}).encode())
    definitions = _definitions(import_dir, ledger_url)
    job = definitions.resolve_job_def(MAIN_JOB)
    selection = [dg.AssetKey(["shopify", "orders"])]

    with dg.instance_for_test() as instance:
        first = job.execute_in_process(partition_key="2026-11-24", instance=instance, raise_on_error=False,
                                       asset_selection=selection)
        target.write_text(json.dumps({"orders": [order]}))
        replay = job.execute_in_process(partition_key="2026-11-24", instance=instance, asset_selection=selection)

    assert not first.success
    assert replay.success
    ledger = Ledger.connect(ledger_url)
    assert list(ledger.read_table("orders")["source_id"]) == ["450789469"]
    ledger.dispose()


def test_main_job_twice_leaves_the_same_end_state(ledger_url, tmp_path):
    import_dir = tmp_path / "imports"
    stage_demo_week(import_dir)
    definitions = _definitions(import_dir, ledger_url)
    ledger = Ledger.connect(ledger_url)

    with dg.instance_for_test() as instance:
        first_runs = run_main_job(definitions, instance)
        first = end_state(ledger)
        second_runs = run_main_job(definitions, instance)
        second = end_state(ledger)
        recorded = instance.get_runs()

    assert [run.partition_key for run in first_runs] == sorted(DEMO_WEEK)
    assert all(run.success for run in first_runs + second_runs)
    assert first == second
    assert len(first["orders"]) == 2
    assert len(first["payout_lines"]) == 52
    assert len(recorded) == 2 * len(DEMO_WEEK)
    ledger.dispose()


def test_partitions_with_data_follow_the_day_folders(tmp_path):
    import_dir = tmp_path / "imports"
    stage_demo_week(import_dir)
    definitions = _definitions(import_dir, f"sqlite:///{tmp_path / 'ledger.db'}")

    planned = partitions_with_data(definitions)

    assert list(planned) == sorted(DEMO_WEEK)
    assert [key.to_user_string() for key in planned["2026-11-28"]] == ["amazon/settlements"]


def test_production_instance_config_uses_postgres(postgres_database, tmp_path, monkeypatch):
    url = make_url(postgres_database)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPOSITORY / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_PG_HOST", url.host or "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(url.port or 5432))
    monkeypatch.setenv("DAGSTER_PG_USERNAME", url.username or "postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", url.password or "")
    monkeypatch.setenv("DAGSTER_PG_DB", url.database)
    import_dir = tmp_path / "imports"
    drop_file(import_dir, "stripe", "charges.json", partition="2026-11-25")
    definitions = _definitions(import_dir, postgres_database)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = run_main_job(definitions, instance)
        stored_runs = instance.get_runs()
        storage = type(instance.run_storage).__name__
        coordinator = type(instance.run_coordinator).__name__

    assert storage == "PostgresRunStorage"
    assert coordinator == "QueuedRunCoordinator"
    assert [run.success for run in runs] == [True]
    assert [run.run_id for run in stored_runs] == [runs[0].run_id]


def test_day_folder_before_the_start_is_skipped(tmp_path, caplog):
    import_dir = tmp_path / "imports"
    drop_file(import_dir, "shopify", "orders.json", partition="2026-09-30")
    drop_file(import_dir, "shopify", "orders.json", partition="2026-10-01")
    definitions = _definitions(import_dir, f"sqlite:///{tmp_path / 'ledger.db'}")

    planned = partitions_with_data(definitions)

    assert list(planned) == ["2026-10-01"]
    assert "day folder 2026-09-30 is outside the partitions" in caplog.text
