"""Delivery assets on Dagster: dry run by default, live upserts once per version, held records wait."""

import json
import re
from datetime import datetime, timezone

import dagster as dg
import httpx
import pytest

from meshline_pipelines.definitions import MAIN_JOB, build_definitions
from meshline_pipelines.delivery.outbox import LIVE, Planned, plan, read_outbox, send
from meshline_pipelines.identity import read_links
from meshline_pipelines.ledger import Ledger
from meshline_pipelines.resources import LedgerResource, RoutingResource
from meshline_pipelines.shopify.api import ShopifyRestClient
from meshline_pipelines.shopify.deliveries import DELIVERIES
from meshline_pipelines_tests.conftest import drop_file
from meshline_pipelines_tests.helpers import clients
from meshline_pipelines_tests.loopback import serve
from meshline_pipelines_tests.test_source_of_truth import _netsuite_level, _shopify_stock

SALES_ORDERS = dg.AssetKey(["netsuite", "sales_orders"])
SHOPIFY_ORDERS = dg.AssetKey(["shopify", "orders"])


class NetSuiteDouble:
    """NetSuite's REST record service for sales orders: PUT by external ID creates or updates, returns 204."""

    def __init__(self):
        self.records: dict[str, dict] = {}
        self.puts: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        match = re.fullmatch(r"/services/rest/record/v1/salesOrder/eid:([A-Za-z0-9_-]+)", request.url.path)
        if request.method != "PUT" or match is None:
            return httpx.Response(404, json={"type": "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.5",
                                             "title": "Not Found", "status": 404,
                                             "o:errorDetails": [{"detail": f"No route {request.url.path}",
                                                                 "o:errorCode": "NONEXISTENT_ID"}]})
        if not request.headers.get("Authorization", "").startswith("OAuth "):
            return httpx.Response(401, json={"title": "Unauthorized", "status": 401})
        external = match.group(1)
        self.puts.append(external)
        internal = self.records.setdefault(external, {"id": str(1000 + len(self.records))})["id"]
        self.records[external].update(json.loads(request.content))
        return httpx.Response(204, headers={"Location": "https://1234567.suitetalk.api.netsuite.com"
                                                        f"/services/rest/record/v1/salesOrder/{internal}"})


def _materialize(import_dir, ledger_url):
    definitions = build_definitions({**clients(import_dir), "ledger": LedgerResource(database_url=ledger_url),
                                     "routing": RoutingResource()})
    with dg.instance_for_test() as instance:
        return definitions.resolve_job_def(MAIN_JOB).execute_in_process(
            partition_key="2026-11-24", instance=instance, asset_selection=[SHOPIFY_ORDERS, SALES_ORDERS])


@pytest.fixture
def netsuite_env(monkeypatch):
    for name, value in {"NETSUITE_ACCOUNT_ID": "1234567", "NETSUITE_CONSUMER_KEY": "ck", "NETSUITE_CONSUMER_SECRET": "cs",
                        "NETSUITE_TOKEN_ID": "tid", "NETSUITE_TOKEN_SECRET": "ts"}.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_dry_run_sends_nothing(ledger_url, import_dir, monkeypatch):
    monkeypatch.delenv("MESHLINE_DELIVERY_MODE", raising=False)
    monkeypatch.delenv("NETSUITE_ACCOUNT_ID", raising=False)
    drop_file(import_dir, "shopify", "orders.json")

    result = _materialize(import_dir, ledger_url)

    assert result.success
    row = read_outbox(Ledger.connect(ledger_url)).iloc[0]
    assert (row["target"], row["target_account"], row["status"]) == ("netsuite", "dry-run", "dry_run")
    payload = json.loads(row["payload"])
    assert payload["externalId"] == row["record_key"]
    assert [item["quantity"] for item in payload["item"]["items"]] == [1, 1, 1]


def test_live_mode_upserts_each_version_once_across_replays(ledger_url, import_dir, netsuite_env):
    drop_file(import_dir, "shopify", "orders.json")
    double = NetSuiteDouble()

    with serve(double) as base_url:
        netsuite_env.setenv("NETSUITE_API_BASE_URL", base_url)
        netsuite_env.setenv("MESHLINE_DELIVERY_MODE", "live")
        first = _materialize(import_dir, ledger_url)
        replay = _materialize(import_dir, ledger_url)

    assert first.success and replay.success
    assert len(double.puts) == 1
    ledger = Ledger.connect(ledger_url)
    row = read_outbox(ledger).iloc[0]
    assert (row["status"], row["target_id"], row["attempts"]) == ("delivered", "1000", 1)
    links = read_links(ledger, entity="order")
    assert ("netsuite", "1000") in set(zip(links["system"], links["system_id"]))


def test_shopify_stock_set_once_per_version(ledger, routing, import_dir, monkeypatch):
    monkeypatch.setenv("SHOPIFY_INVENTORY_LOCATION_ID", "655441491")
    _shopify_stock(ledger, routing, import_dir)
    _netsuite_level(ledger, "IPOD2008RED", 7, datetime(2026, 11, 24, 8, tzinfo=timezone.utc))
    posted = []

    def shopify(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        posted.append((request.url.path, body))
        return httpx.Response(200, json={"inventory_level": {**body, "updated_at": "2026-11-24T09:00:00-05:00",
                                                             "admin_graphql_api_id": "gid://shopify/InventoryLevel/1"}})

    delivery = DELIVERIES[0]
    client = ShopifyRestClient(shop="jsmith.myshopify.com", access_token="shpat_test",
                               base_url="https://jsmith.myshopify.com").with_transport(httpx.MockTransport(shopify))
    rows = delivery.rows(ledger, "2026-11-24")
    planned = []
    for row in rows.to_dict(orient="records"):
        key, payload = delivery.build(ledger, row, {"product_variants": ledger.read_table("product_variants")})
        planned.append(Planned("netsuite", row["account"], row["source_id"], row["version"], key, payload, "2026-11-24"))
    for _ in range(2):  # a replay plans the same version again
        plan(ledger, "shopify", client.account, "inventory_level", planned, mode=LIVE)
        send(ledger, client, routing, target="shopify", entity="inventory_level")

    assert posted == [("/admin/api/2026-07/inventory_levels/set.json",
                       {"location_id": 655441491, "inventory_item_id": 49148385, "available": 7})]
    assert read_outbox(ledger).iloc[0]["target_id"] == "49148385@655441491"
