"""The exception queue: allowed and forbidden transitions, reopening, escalation, retry and replay runs."""

import copy
import json
from datetime import timedelta

import dagster as dg
import pytest
from typer.testing import CliRunner

from meshline_pipelines.cli import app
from meshline_pipelines.definitions import MAIN_JOB, STREAMS, build_definitions
from meshline_pipelines.ledger import Ledger
from meshline_pipelines.ledger.store import utc_now
from meshline_pipelines.ledger.tables import exceptions
from meshline_pipelines.queue import (
    ACTIONS, CLOSED, ESCALATED, OPEN, REASON_REQUIRED, STATUSES, TRANSITIONS, ReasonRequired, TransitionError,
    checked_reason, escalate, escalate_overdue, get_exception, read_transitions, transition,
)
from meshline_pipelines.queue_asset import exception_queue
from meshline_pipelines.replay import rerun_exception
from meshline_pipelines.resources import LedgerResource, RoutingResource
from meshline_pipelines.routing import load_routing
from meshline_pipelines_tests.conftest import drop_file, sample_json
from meshline_pipelines_tests.helpers import clients, run

ROUTING_WITH_ESCALATION = """
systems:
  shopify: {owner: "team:storefront"}
default: {owner: "team:data-ops", decision_owner: "team:operations", due: 24h, escalate_to: "team:ops-leads"}
routes:
  - {kind: missing_field, owner: "team:data-ops", decision_owner: "team:order-ops", due: 8h,
     escalate_to: "head-of-ops@example.com"}
"""


def _order(order_id: int, *, total: bool = True) -> dict:
    order = copy.deepcopy(sample_json("shopify", "orders.json")["orders"][0])
    order["id"] = order_id
    order["name"] = f"#{order_id}"
    for position, line in enumerate(order["line_items"]):
        line["id"] = order_id * 10 + position
    if not total:
        del order["total_price_set"]
    return order


def _open_exception(ledger, routing, import_dir) -> int:
    """Import one order without its total among five good ones; return the missing_field exception's ID."""
    orders = [_order(order_id) for order_id in range(9002, 9007)] + [_order(9001, total=False)]
    drop_file(import_dir, "shopify", "orders.json", content=json.dumps({"orders": orders}).encode())
    run("shopify", "orders", import_dir, ledger, routing)
    exceptions = ledger.read_exceptions()
    return int(exceptions[exceptions["field"] == "total_price_set.shop_money.amount"].iloc[0]["id"])


def _put_in_status(ledger, exception_id: int, status: str) -> None:
    path = {OPEN: [], ESCALATED: [("route", None)], "approved": [("approve", None)], "rejected": [("reject", None)],
            "retrying": [("retry", None)], CLOSED: [("close", None)]}[status]
    for action, _ in path:
        transition(ledger, exception_id, action, actor="setup")
    if status == ESCALATED:
        transition(ledger, exception_id, "escalate", actor="setup", owner="team:ops-leads")


@pytest.mark.parametrize("action, start", [(action, start) for action, (sources, _) in TRANSITIONS.items()
                                           for start in sorted(sources)])
def test_allowed_transition_is_recorded(action, start, ledger, routing, import_dir):
    exception_id = _open_exception(ledger, routing, import_dir)
    _put_in_status(ledger, exception_id, start)

    step = transition(ledger, exception_id, action, actor="ana@example.com", reason="checked in Shopify")

    expected = TRANSITIONS[action][1] or start
    assert (step.from_status, step.to_status) == (start, expected)
    assert get_exception(ledger, exception_id)["status"] == expected
    last = read_transitions(ledger, exception_id).iloc[-1]
    assert (last["action"], last["actor"], last["reason"]) == (action, "ana@example.com", "checked in Shopify")


@pytest.mark.parametrize("action, start", [
    ("approve", CLOSED), ("retry", "approved"), ("reject", "rejected"), ("escalate", "approved"),
    ("close", CLOSED), ("replay", "retrying"),
])
def test_forbidden_transition_names_status_and_allowed_actions(action, start, ledger, routing, import_dir):
    exception_id = _open_exception(ledger, routing, import_dir)
    _put_in_status(ledger, exception_id, start)

    with pytest.raises(TransitionError) as failure:
        transition(ledger, exception_id, action, actor="ana@example.com")

    assert f"is {start}: {action} is not allowed from {start}" in str(failure.value)
    assert "allowed:" in str(failure.value)
    assert get_exception(ledger, exception_id)["status"] == start


def test_statuses_are_all_reachable():
    reachable = {OPEN} | {result for _, result in TRANSITIONS.values() if result}
    assert reachable == set(STATUSES)


def test_closed_exception_reopens_when_the_problem_recurs(ledger, routing, import_dir):
    exception_id = _open_exception(ledger, routing, import_dir)
    before = len(ledger.read_exceptions())
    transition(ledger, exception_id, "close", actor="ana@example.com", reason="fixed in Shopify")

    run("shopify", "orders", import_dir, ledger, routing)

    reopened = get_exception(ledger, exception_id)
    assert reopened["status"] == OPEN
    assert reopened["occurrences"] == 2
    assert read_transitions(ledger, exception_id)["action"].tolist() == ["close", "reopen"]
    assert len(ledger.read_exceptions()) == before  # no new exception: the same one reopened


def test_overdue_exception_escalates_once(ledger, import_dir, tmp_path):
    routing_file = tmp_path / "routing.yaml"
    routing_file.write_text(ROUTING_WITH_ESCALATION)
    routing = load_routing(routing_file)
    exception_id = _open_exception(ledger, routing, import_dir)

    early = escalate_overdue(ledger, routing, now=utc_now() + timedelta(hours=7))
    late = escalate_overdue(ledger, routing, now=utc_now() + timedelta(hours=9))
    again = escalate_overdue(ledger, routing, now=utc_now() + timedelta(hours=10))

    assert early == []
    assert [(step.exception_id, step.to_owner) for step in late if step.exception_id == exception_id] == [
        (exception_id, "head-of-ops@example.com")]
    assert again == []
    assert get_exception(ledger, exception_id)["status"] == ESCALATED


def test_escalation_without_target_fails(ledger, routing, import_dir):
    exception_id = _open_exception(ledger, routing, import_dir)
    bare = load_routing()
    bare.default = bare.default.__class__(bare.default.owner, bare.default.decision_owner, bare.default.due_after)
    bare.rules = [rule.__class__(**{**rule.__dict__, "escalate_to": None}) for rule in bare.rules]

    with pytest.raises(TransitionError, match="set escalate_to"):
        escalate(ledger, bare, exception_id, actor="ana@example.com")


def _definitions(import_dir, ledger_url):
    return build_definitions({**clients(import_dir), "ledger": LedgerResource(database_url=ledger_url),
                              "routing": RoutingResource()})


def test_retry_after_fix_closes(ledger_url, ledger, routing, import_dir):
    exception_id = _open_exception(ledger, routing, import_dir)
    orders = [_order(order_id) for order_id in range(9001, 9007)]
    drop_file(import_dir, "shopify", "orders.json", content=json.dumps({"orders": orders}).encode())

    with dg.instance_for_test() as instance:
        outcome = rerun_exception(ledger, _definitions(import_dir, ledger_url), instance, STREAMS, exception_id,
                                  "retry", job_name=MAIN_JOB, actor="ana@example.com")
        launched = instance.get_run_by_id(outcome.run_id)

    assert outcome.success and outcome.fixed
    assert launched.tags["meshline/exception"] == str(exception_id)
    closed = get_exception(ledger, exception_id)
    assert (closed["status"], closed["outcome"], closed["attempts"]) == (CLOSED, "retry", 1)
    assert read_transitions(ledger, exception_id)[["action", "run_id"]].values.tolist()[-1] == ["close", outcome.run_id]
    assert "9001" in set(ledger.read_table("orders")["source_id"])


def test_retry_without_fix_reopens(ledger_url, ledger, routing, import_dir):
    exception_id = _open_exception(ledger, routing, import_dir)

    with dg.instance_for_test() as instance:
        outcome = rerun_exception(ledger, _definitions(import_dir, ledger_url), instance, STREAMS, exception_id,
                                  "retry", job_name=MAIN_JOB, actor="ana@example.com")

    assert outcome.success and not outcome.fixed
    assert get_exception(ledger, exception_id)["status"] == OPEN
    assert read_transitions(ledger, exception_id)["action"].tolist() == ["retry", "run_finished"]


def test_replay_closes_unmapped_reference(ledger_url, ledger, routing,
                                                                                 import_dir):
    products = sample_json("shopify", "products.json")
    partial = copy.deepcopy(products)
    partial["products"][0]["variants"] = [v for v in partial["products"][0]["variants"] if v["id"] != 457924702]
    drop_file(import_dir, "shopify", "products.json", partition="2026-11-23", content=json.dumps(partial).encode())
    run("shopify", "products", import_dir, ledger, routing, partition="2026-11-23")
    drop_file(import_dir, "shopify", "orders.json")
    run("shopify", "orders", import_dir, ledger, routing)
    exceptions = ledger.read_exceptions()
    exception_id = int(exceptions[exceptions["kind"] == "unmapped_reference"].iloc[0]["id"])

    drop_file(import_dir, "shopify", "products.json", partition="2026-11-25")
    run("shopify", "products", import_dir, ledger, routing, partition="2026-11-25")
    (import_dir / "2026-11-24" / "shopify" / "orders.json").unlink()  # the replay must not read the source
    with dg.instance_for_test() as instance:
        outcome = rerun_exception(ledger, _definitions(import_dir, ledger_url), instance, STREAMS, exception_id,
                                  "replay", job_name=MAIN_JOB, actor="ana@example.com")

    assert outcome.fixed
    assert get_exception(ledger, exception_id)["outcome"] == "replay"


def test_cli_decisions_and_a_forbidden_one(ledger_url, routing, import_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("MESHLINE_DATABASE_URL", ledger_url)
    monkeypatch.setenv("MESHLINE_HOME", str(tmp_path / "home"))
    ledger = Ledger.connect(ledger_url)
    exception_id = _open_exception(ledger, routing, import_dir)
    cli = CliRunner()

    assigned = cli.invoke(app, ["exceptions", "assign", str(exception_id), "team:order-ops", "--actor", "ana@example.com"])
    approved = cli.invoke(app, ["exceptions", "approve", str(exception_id), "--reason", "total checked by hand"])
    forbidden = cli.invoke(app, ["exceptions", "retry", str(exception_id)])
    detail = cli.invoke(app, ["exceptions", "show", str(exception_id), "--format", "json"])
    listed = cli.invoke(app, ["exceptions", "list", "--status", "approved", "--format", "json"])

    assert assigned.exit_code == 0, assigned.output
    assert "route, open -> open, owner team:data-ops -> team:order-ops" in assigned.output
    assert approved.exit_code == 0
    assert forbidden.exit_code == 1
    assert "is approved: retry is not allowed from approved; allowed: assign, reject, close" in forbidden.output
    details = json.loads(detail.output)
    assert [step["action"] for step in details["transitions"]] == ["route", "approve"]
    assert details["transitions"][1]["reason"] == "total checked by hand"
    assert [row["id"] for row in json.loads(listed.output)] == [exception_id]


def test_show_keeps_long_reason_whole(ledger_url, routing, import_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("MESHLINE_DATABASE_URL", ledger_url)
    monkeypatch.setenv("MESHLINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "80")
    exception_id = _open_exception(Ledger.connect(ledger_url), routing, import_dir)
    reason = "EUR test payout checked against the bank statement of 2026-12-01 by the finance team"
    cli = CliRunner()
    cli.invoke(app, ["exceptions", "approve", str(exception_id), "--reason", reason])

    shown = cli.invoke(app, ["exceptions", "show", str(exception_id)])

    assert shown.exit_code == 0, shown.output
    assert all(len(line) <= 80 for line in shown.output.splitlines())
    decision_text = " ".join(shown.output.split())
    for word in reason.split():
        assert word in decision_text


def test_reason_rule_required_actions():
    assert set(REASON_REQUIRED) == {"approve", "reject", "close"}
    for action in ACTIONS:
        assert checked_reason(action, "  checked in Shopify ") == "checked in Shopify"
        if action in REASON_REQUIRED:
            for missing in (None, "", "   "):
                with pytest.raises(ReasonRequired, match=f"missing reason: {action} requires one"):
                    checked_reason(action, missing, 12)
        else:
            assert checked_reason(action, None) is None


@pytest.mark.parametrize("action", sorted(REASON_REQUIRED))
def test_cli_decision_without_reason_changes_nothing(action, ledger_url, routing, import_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("MESHLINE_DATABASE_URL", ledger_url)
    monkeypatch.setenv("MESHLINE_HOME", str(tmp_path / "home"))
    ledger = Ledger.connect(ledger_url)
    exception_id = _open_exception(ledger, routing, import_dir)
    cli = CliRunner()

    missing = cli.invoke(app, ["exceptions", action, str(exception_id)])
    blank = cli.invoke(app, ["exceptions", action, str(exception_id), "--reason", " "])

    for result in (missing, blank):
        assert result.exit_code == 2, result.output
        assert f"missing reason: {action} requires one" in result.output
        assert f'meshline exceptions {action} {exception_id} --reason "' in result.output
    assert get_exception(ledger, exception_id)["status"] == OPEN
    assert read_transitions(ledger, exception_id).empty


def test_cli_approve_records_its_reason(ledger_url, routing, import_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("MESHLINE_DATABASE_URL", ledger_url)
    monkeypatch.setenv("MESHLINE_HOME", str(tmp_path / "home"))
    ledger = Ledger.connect(ledger_url)
    exception_id = _open_exception(ledger, routing, import_dir)

    approved = CliRunner().invoke(app, ["exceptions", "approve", str(exception_id), "-r", "total checked by hand",
                                        "--actor", "ana@example.com"])

    assert approved.exit_code == 0, approved.output
    assert "approve, open -> approved" in approved.output
    last = read_transitions(ledger, exception_id).iloc[-1]
    assert (last["action"], last["to_status"], last["actor"], last["reason"]) == (
        "approve", "approved", "ana@example.com", "total checked by hand")


def test_cli_optional_reason_actions(ledger_url, routing, import_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("MESHLINE_DATABASE_URL", ledger_url)
    monkeypatch.setenv("MESHLINE_HOME", str(tmp_path / "home"))
    ledger = Ledger.connect(ledger_url)
    exception_id = _open_exception(ledger, routing, import_dir)
    cli = CliRunner()

    assigned = cli.invoke(app, ["exceptions", "assign", str(exception_id), "team:order-ops"])
    escalated = cli.invoke(app, ["exceptions", "escalate", str(exception_id), "--reason", "needs a lead"])

    assert assigned.exit_code == 0, assigned.output
    assert escalated.exit_code == 0, escalated.output
    assert read_transitions(ledger, exception_id)["reason"].tolist() == [None, "needs a lead"]
    for command in ("retry", "replay", "assign", "escalate"):
        help_text = cli.invoke(app, ["exceptions", command, "--help"]).output
        assert "--reason" in help_text, command
        assert "optional" in help_text, command


def test_queue_asset_escalates_overdue_and_reports_the_queue(ledger_url, ledger, import_dir, tmp_path):
    routing_file = tmp_path / "routing.yaml"
    routing_file.write_text(ROUTING_WITH_ESCALATION)
    exception_id = _open_exception(ledger, load_routing(routing_file), import_dir)
    with ledger.engine.begin() as connection:
        connection.execute(exceptions.update().where(exceptions.c.id == exception_id).values(
            due_at=utc_now() - timedelta(hours=1)))

    result = dg.materialize([exception_queue], resources={
        "ledger": LedgerResource(database_url=ledger_url), "routing": RoutingResource(routing_file=str(routing_file))})

    metadata = result.asset_materializations_for_node("meshline__exception_queue")[0].metadata
    assert metadata["escalated_now"].value == 1
    assert metadata["by_owner"].value["head-of-ops@example.com"] == 1
    assert f"| {exception_id} | missing_field |" in metadata["oldest_active"].value
    assert get_exception(ledger, exception_id)["status"] == ESCALATED


ROUTING_WITH_SLACK = ROUTING_WITH_ESCALATION.replace(
    'default: {owner: "team:data-ops", decision_owner: "team:operations", due: 24h, escalate_to: "team:ops-leads"}',
    'default: {owner: "team:data-ops", decision_owner: "team:operations", due: 24h, escalate_to: "team:ops-leads",\n'
    '          notify: [ops-slack]}',
) + """
channels:
  ops-slack: {type: slack, url_env: MESHLINE_TEST_SLACK_URL}
"""


class SlackDouble:
    def __init__(self):
        self.messages: list[dict] = []

    def __call__(self, request):
        import httpx

        self.messages.append(json.loads(request.content))
        return httpx.Response(200, text="ok")


def test_queue_and_blocked_checks_alert_their_owners_once(ledger_url, ledger, import_dir, tmp_path, monkeypatch):
    from meshline_pipelines_tests.loopback import serve

    routing_file = tmp_path / "routing.yaml"
    routing_file.write_text(ROUTING_WITH_SLACK)
    routing = load_routing(routing_file)
    resources = {"ledger": LedgerResource(database_url=ledger_url), "routing": RoutingResource(routing_file=str(routing_file))}
    slack = SlackDouble()

    with serve(slack) as url:
        monkeypatch.setenv("MESHLINE_TEST_SLACK_URL", url + "/services/T000/B000/XXXX")
        exception_id = _open_exception(ledger, routing, import_dir)
        dg.materialize([exception_queue], resources=resources)
        dg.materialize([exception_queue], resources=resources)
        opened = list(slack.messages)

        broken = [_order(order_id, total=False) for order_id in range(9101, 9104)]
        drop_file(import_dir, "shopify", "orders.json", partition="2026-11-25",
                  content=json.dumps({"orders": broken}).encode())
        definitions = build_definitions({**clients(import_dir), **resources})
        with dg.instance_for_test() as instance:
            definitions.resolve_job_def(MAIN_JOB).execute_in_process(
                partition_key="2026-11-25", instance=instance, raise_on_error=False,
                asset_selection=[dg.AssetKey(["shopify", "orders"])])

    assert len(opened) == 2  # the two exceptions of the order without its total, each alerted once
    assert all("New exception: missing_field on shopify orders record 9001" in message["text"] for message in opened)
    assert exception_id
    blocked = slack.messages[len(opened):]
    assert len(blocked) == 1
    assert "Check failed" in blocked[0]["text"]
    assert "partition 2026-11-25" in blocked[0]["text"]
