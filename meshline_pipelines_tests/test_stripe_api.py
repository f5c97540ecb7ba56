"""The Stripe API client and incremental extraction: paging, retries, watermarks and cursor ties."""

from datetime import datetime, timedelta, timezone

import dagster as dg
import httpx
import pytest

from meshline_pipelines.clients import SettingError, source_clients
from meshline_pipelines.definitions import MAIN_JOB, build_definitions
from meshline_pipelines.extract import extract_stream
from meshline_pipelines.ledger import Ledger
from meshline_pipelines.resources import LedgerResource, RoutingResource
from meshline_pipelines.sources.http import ApiAuthError, ApiResponseError
from meshline_pipelines.sources.live import Window
from meshline_pipelines.stripe.api import StripeApiClient
from meshline_pipelines_tests.helpers import clients, stream
from meshline_pipelines_tests.loopback import serve
from meshline_pipelines_tests.stripe_mock import StripeDouble, balance_transaction, charge, payout, refund

NOV_2 = int(datetime(2026, 11, 2, tzinfo=timezone.utc).timestamp())
NOV_3 = int(datetime(2026, 11, 3, tzinfo=timezone.utc).timestamp())
CHARGES = stream("stripe", "charges")


def client(double: StripeDouble, waits: list | None = None, **options) -> StripeApiClient:
    settings = {"account_id": "acct_1TEST", "api_key": "sk_test_double", "base_url": "https://api.stripe.test",
                "page_size": 100, **options}
    return StripeApiClient(**settings).with_transport(double.transport(), sleep=(waits if waits is not None else []).append)


def extract(double, ledger, routing, *, until: int, since: int | None = None, **options):
    return extract_stream(
        CHARGES, client(double, **options), ledger, routing,
        since=datetime.fromtimestamp(since, timezone.utc) if since is not None else None,
        until=datetime.fromtimestamp(until, timezone.utc), lookback=timedelta(minutes=15), run_id="test",
    )


def stored_charge_ids(ledger: Ledger) -> list[str]:
    return ledger.read_table("payments", system="stripe")["source_id"].tolist()


def test_pages_follow_starting_after_with_the_same_filters():
    double = StripeDouble()
    double.objects["charges"] = [charge(f"ch_{n:04d}", NOV_2 + n) for n in range(250)]

    batches = list(client(double).fetch("charges", Window.for_day("2026-11-02")))

    assert [len(batch.records) for batch in batches] == [100, 100, 50]
    second = double.requests[1].url.params
    assert second["starting_after"] == batches[0].records[-1]["id"]
    assert second["created[gte]"] == str(NOV_2)
    assert second["created[lt]"] == str(NOV_3)
    assert second["limit"] == "100"
    assert len({record["id"] for batch in batches for record in batch.records}) == 250


def test_paging_ten_charge_tie_arrives_once():
    double = StripeDouble()
    double.objects["charges"] = [charge(f"ch_tie_{n}", NOV_2 + 3600) for n in range(10)]

    batches = list(client(double, page_size=4).fetch("charges", Window.for_day("2026-11-02")))

    ids = [record["id"] for batch in batches for record in batch.records]
    assert [len(batch.records) for batch in batches] == [4, 4, 2]
    assert sorted(ids) == sorted(f"ch_tie_{n}" for n in range(10))


def test_stripe_retry_headers_are_honoured():
    double = StripeDouble()
    double.objects["charges"] = [charge("ch_1", NOV_2 + 10)]
    double.answers = [httpx.Response(429, headers={"Retry-After": "3"}, json={"error": {"type": "rate_limit_error"}})]
    waits = []

    records = [r for batch in client(double, waits).fetch("charges", Window.for_day("2026-11-02")) for r in batch.records]

    assert [record["id"] for record in records] == ["ch_1"]
    assert waits == [3.0]

    double.answers = [httpx.Response(500, headers={"Stripe-Should-Retry": "false"},
                                     json={"error": {"type": "api_error", "message": "idempotency key reused"}})]
    with pytest.raises(Exception, match="idempotency key reused"):
        list(client(double).fetch("charges", Window.for_day("2026-11-02")))


def test_wrong_key_names_setting_hides_key():
    double = StripeDouble()

    with pytest.raises(ApiAuthError) as failure:
        list(client(double, api_key="sk_live_wrong_key").fetch("charges", Window.for_day("2026-11-02")))

    assert "STRIPE_API_KEY" in str(failure.value)
    assert "/v1/charges" in str(failure.value)
    assert "sk_live_wrong_key" not in str(failure.value)


def test_fetch_drops_charges_outside_window():
    double = StripeDouble()
    double.objects["charges"] = [charge("ch_before", NOV_2 - 1), charge("ch_in", NOV_2), charge("ch_after", NOV_3)]

    ids = [r["id"] for batch in client(double).fetch("charges", Window.for_day("2026-11-02")) for r in batch.records]

    assert ids == ["ch_in"]


def test_extract_twice_stores_once(ledger, routing):
    double = StripeDouble()
    double.objects["charges"] = [charge(f"ch_{n:03d}", NOV_2 + 60 * n) for n in range(120)]

    first = extract(double, ledger, routing, since=NOV_2, until=NOV_3)
    second = extract(double, ledger, routing, since=NOV_2, until=NOV_3)

    assert (first.fetched, first.stored) == (120, 120)
    assert (second.fetched, second.stored, second.already_stored, second.unchanged) == (120, 0, 1, 120)
    assert stored_charge_ids(ledger) == sorted(f"ch_{n:03d}" for n in range(120))
    assert len(ledger.read_raw(system="stripe")) == 120


def test_watermark_tie_across_runs_stored_once(ledger, routing):
    double = StripeDouble()
    tie = NOV_2 + 7200
    earlier = [charge(f"ch_early_{n}", tie - 60 * (n + 1)) for n in range(3)]
    double.objects["charges"] = earlier + [charge(f"ch_tie_{n}", tie) for n in range(5)]

    first = extract(double, ledger, routing, since=NOV_2, until=tie + 30)
    watermark = ledger.read_watermark("stripe", "acct_1TEST", "charges")
    assert watermark.cursor == datetime.fromtimestamp(tie, timezone.utc)
    assert watermark.ids_at_cursor == {f"ch_tie_{n}" for n in range(5)}
    assert first.stored == 8

    # Five more charges appear at the same second, after the first run read it.
    double.objects["charges"] += [charge(f"ch_tie_{n}", tie) for n in range(5, 10)]
    second = extract(double, ledger, routing, until=tie + 600)

    assert second.window.since == datetime.fromtimestamp(tie, timezone.utc) - timedelta(minutes=15)
    assert second.already_stored == 5
    assert second.stored == 5
    assert second.unchanged == 8
    assert stored_charge_ids(ledger).count("ch_tie_7") == 1
    assert len(stored_charge_ids(ledger)) == 13
    assert ledger.read_watermark("stripe", "acct_1TEST", "charges").ids_at_cursor == {
        f"ch_tie_{n}" for n in range(10)}


def test_malformed_page_stores_nothing(ledger, routing):
    double = StripeDouble()
    double.objects["charges"] = [charge(f"ch_{n:03d}", NOV_2 + n) for n in range(150)]
    double.answers = [lambda request: httpx.Response(200, json=double._list("charges", request.url.params)),
                      httpx.Response(200, text='{"object": "list", "data": [{"id": "ch_0')]

    with pytest.raises(ApiResponseError, match="STRIPE_API_BASE_URL"):
        extract(double, ledger, routing, since=NOV_2, until=NOV_3)

    assert stored_charge_ids(ledger) == []
    assert ledger.read_watermark("stripe", "acct_1TEST", "charges").cursor is None


def test_killed_run_completes_exactly_once(ledger, routing, monkeypatch):
    double = StripeDouble()
    # Two days of charges: the run stores the first day, then dies while storing the second.
    double.objects["charges"] = ([charge(f"ch_a{n:02d}", NOV_2 + 3600 + n) for n in range(20)]
                                 + [charge(f"ch_b{n:02d}", NOV_3 + 3600 + n) for n in range(20)])
    real_store = Ledger.store

    def dies_on_the_second_day(self, table_name, frame, *, partition_key, **options):
        if partition_key == "2026-11-03":
            raise KeyboardInterrupt("the worker was killed")
        return real_store(self, table_name, frame, partition_key=partition_key, **options)

    monkeypatch.setattr(Ledger, "store", dies_on_the_second_day)
    with pytest.raises(KeyboardInterrupt):
        extract(double, ledger, routing, since=NOV_2, until=NOV_3 + 86400)
    monkeypatch.setattr(Ledger, "store", real_store)

    watermark = ledger.read_watermark("stripe", "acct_1TEST", "charges")
    assert watermark.cursor == datetime.fromtimestamp(NOV_2 + 3619, timezone.utc)
    assert len(stored_charge_ids(ledger)) == 20

    again = extract(double, ledger, routing, until=NOV_3 + 86400)

    assert again.stored == 20
    assert stored_charge_ids(ledger) == sorted([f"ch_a{n:02d}" for n in range(20)] + [f"ch_b{n:02d}" for n in range(20)])
    assert len(ledger.read_raw(system="stripe")) == 40
    assert ledger.read_watermark("stripe", "acct_1TEST", "charges").cursor == datetime.fromtimestamp(
        NOV_3 + 3619, timezone.utc)


def test_blocked_day_holds_watermark(ledger, routing):
    double = StripeDouble()
    good = [charge(f"ch_good_{n}", NOV_2 + n) for n in range(5)]
    bad = [charge(f"ch_bad_{n}", NOV_3 + n, currency="zzz") for n in range(5)]
    double.objects["charges"] = good + bad

    extraction = extract(double, ledger, routing, since=NOV_2, until=NOV_3 + 86400)

    assert extraction.blocked_partitions == ["2026-11-03"]
    assert ledger.read_watermark("stripe", "acct_1TEST", "charges").cursor == datetime.fromtimestamp(
        NOV_2 + 4, timezone.utc)
    assert len(stored_charge_ids(ledger)) == 5


def test_dagster_partition_reads_the_live_api(ledger_url, import_dir):
    double = StripeDouble()
    double.objects["charges"] = [charge(f"ch_day_{n}", NOV_2 + 600 * n) for n in range(6)]
    double.objects["charges"].append(charge("ch_next_day", NOV_3 + 5))

    # Dagster builds resources again from their configuration, so the API double is a real loopback server.
    with serve(double) as base_url, dg.instance_for_test() as instance:
        live = StripeApiClient(account_id="acct_1TEST", api_key="sk_test_double", base_url=base_url)
        definitions = build_definitions({**clients(import_dir), "stripe": live,
                                         "ledger": LedgerResource(database_url=ledger_url), "routing": RoutingResource()})
        result = definitions.resolve_job_def(MAIN_JOB).execute_in_process(
            partition_key="2026-11-02", instance=instance, asset_selection=[dg.AssetKey(["stripe", "charges"])])

    assert result.success
    ledger = Ledger.connect(ledger_url)
    assert stored_charge_ids(ledger) == [f"ch_day_{n}" for n in range(6)]
    assert set(ledger.read_table("payments")["partition_key"]) == {"2026-11-02"}
    ledger.dispose()


def test_api_mode_uses_env_var_secrets(monkeypatch):
    monkeypatch.setenv("STRIPE_MODE", "api")
    monkeypatch.setenv("STRIPE_ACCOUNT_ID", "acct_1MODE")
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)

    built = source_clients()

    assert isinstance(built["stripe"], StripeApiClient)
    assert built["stripe"].api_key == dg.EnvVar("STRIPE_API_KEY")
    assert built["stripe"].base_url == "https://api.stripe.com"
    assert not isinstance(built["shopify"], StripeApiClient)


def test_unknown_mode_names_the_setting(monkeypatch):
    monkeypatch.setenv("STRIPE_MODE", "live")

    with pytest.raises(SettingError, match="STRIPE_MODE='live' is not a mode"):
        source_clients()


def test_late_refund_update_stored(ledger, routing):
    double = StripeDouble()
    double.objects["refunds"] = [refund("re_old", NOV_2 - 3600, status="pending"),
                                 refund("re_new", NOV_2 + 60, status="succeeded")]
    # The older refund succeeds on Nov 2; an earlier event of the same refund is superseded.
    double.update("refunds", "re_old", "refund.updated", NOV_2 + 100, status="requires_action")
    double.update("refunds", "re_old", "refund.updated", NOV_2 + 7200, status="succeeded")

    batches = list(client(double).fetch("refunds", Window.for_day("2026-11-02")))
    extraction = extract_stream(stream("stripe", "refunds"), client(double), ledger, routing,
                                since=datetime.fromtimestamp(NOV_2, timezone.utc),
                                until=datetime.fromtimestamp(NOV_3, timezone.utc), lookback=timedelta(0))

    fetched = [record["id"] for batch in batches for record in batch.records]
    assert sorted(fetched) == ["re_new", "re_old"]
    assert sum(request.url.path == "/v1/refunds/re_old" for request in double.requests) == 2
    refunds = ledger.read_table("refunds").set_index("source_id")
    assert refunds.loc["re_old", "status"] == "succeeded"
    assert refunds.loc["re_old", "partition_key"] == "2026-11-02"
    assert extraction.watermark_after.cursor == datetime.fromtimestamp(NOV_2 + 7200, timezone.utc)


def test_balance_transactions_are_read_per_payout(ledger, routing):
    double = StripeDouble()
    double.objects["payouts"] = [payout("po_a", NOV_2 + 3600), payout("po_b", NOV_2 + 7200), payout("po_c", NOV_3 + 60)]
    for payout_id in ("po_a", "po_b", "po_c"):
        for n in range(3):
            transaction_id = f"txn_{payout_id}_{n}"
            double.objects["balance_transactions"].append(balance_transaction(transaction_id, NOV_2 - 86400 + n))
            double.payout_of[transaction_id] = payout_id

    extraction = extract_stream(stream("stripe", "balance_transactions"), client(double, page_size=2), ledger, routing,
                                since=datetime.fromtimestamp(NOV_2, timezone.utc),
                                until=datetime.fromtimestamp(NOV_3, timezone.utc), lookback=timedelta(0))

    lines = ledger.read_table("payout_lines").set_index("source_id")
    assert extraction.fetched == 6
    assert sorted(lines.index) == [f"txn_po_{p}_{n}" for p in "ab" for n in range(3)]
    assert lines.loc["txn_po_a_2", "payout_source_id"] == "po_a"
    assert lines.loc["txn_po_b_0", "payout_source_id"] == "po_b"
    assert set(lines["partition_key"]) == {"2026-11-02"}
    by_payout = [request.url.params.get("payout") for request in double.requests
                 if request.url.path == "/v1/balance_transactions"]
    assert by_payout == ["po_b", "po_b", "po_a", "po_a"]  # payouts come newest first, two pages each
