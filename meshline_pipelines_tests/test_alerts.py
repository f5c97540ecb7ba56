"""Alerts end to end: Slack, webhook and SMTP servers on 127.0.0.1 receive what `notify` sends.

Dedupe, rate-limit and claim tests run on SQLite and PostgreSQL through the `ledger` fixture.
"""

import base64
import email
import email.policy
import json
import socket
import socketserver
import threading
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import httpx
import pandas as pd
import pytest
import yaml

from meshline_pipelines import alerts
from meshline_pipelines.alerts import notify, parse_rate_limit, read_alerts
from meshline_pipelines.ledger.tables import alerts_sent
from meshline_pipelines.routing import parse_routing
from meshline_pipelines_tests.loopback import serve

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
DUE = datetime(2026, 11, 24, 20, 0, tzinfo=timezone.utc)
SLACK_ENV = "TEST_ALERTS_SLACK_URL"
WEBHOOK_ENV = "TEST_ALERTS_WEBHOOK_URL"
RECIPIENTS = ["ops@example.com", "lead@example.com"]
RUN_LINK = "http://127.0.0.1:3999/runs/run-abc"
# A reason with the characters Slack mrkdwn treats as markup.
REASON = "order total <120.00> differs from lines & tax"

ROUTING_DOCUMENT = {
    "systems": {
        "shopify": {"owner": "team:storefront"},
        "stripe": {"owner": "team:finance", "notify": ["ops-slack", "ops-webhook"]},
    },
    "channels": {
        "ops-slack": {"type": "slack", "url_env": SLACK_ENV},
        "ops-webhook": {"type": "webhook", "url_env": WEBHOOK_ENV},
        "ops-email": {"type": "email", "to": RECIPIENTS},
    },
    "default": {"owner": "team:data-ops", "decision_owner": "team:operations", "due": "24h",
                "escalate_to": "team:leads"},
    "routes": [
        {"kind": "missing_field", "owner": "team:data-ops", "decision_owner": "team:order-ops", "due": "8h",
         "notify": ["ops-slack", "ops-webhook", "ops-email"]},
        {"kind": "duplicate_record", "owner": "team:data-ops", "notify": ["ops-slack"]},
        {"kind": "failed_validation", "owner": "team:data-ops", "notify": ["ops-webhook"]},
        {"kind": "reconciliation_mismatch", "owner": "team:data-ops", "notify": ["ops-email"]},
        {"kind": "connector_failure", "owner": "system_owner", "notify": ["ops-webhook"]},
    ],
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for variable in (SLACK_ENV, WEBHOOK_ENV, alerts.RATE_LIMIT_ENV, alerts.WEBSERVER_URL_ENV,
                     alerts.SMTP_HOST_ENV, alerts.SMTP_PORT_ENV, alerts.SMTP_FROM_ENV, alerts.SMTP_USER_ENV,
                     alerts.SMTP_PASSWORD_ENV, alerts.SMTP_STARTTLS_ENV):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def channel_routing():
    return parse_routing(yaml.safe_dump(ROUTING_DOCUMENT), "test-routing.yaml")


@pytest.fixture
def http_receiver(monkeypatch):
    """A stand-in for Slack and the JSON webhook that records (path, JSON body). Paths under /fail return 500."""
    received = []

    def handle(request: httpx.Request) -> httpx.Response:
        received.append((request.url.path, json.loads(request.content)))
        if request.url.path.startswith("/fail"):
            return httpx.Response(500, text="internal error")
        return httpx.Response(200, text="ok")

    with serve(handle) as base_url:
        monkeypatch.setenv(SLACK_ENV, f"{base_url}/slack")
        monkeypatch.setenv(WEBHOOK_ENV, f"{base_url}/webhook")
        yield SimpleNamespace(url=base_url, received=received)


def bodies(receiver, path: str) -> list[dict]:
    return [body for received_path, body in receiver.received if received_path == path]


class _SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib: EHLO with AUTH PLAIN, MAIL, RCPT, DATA, RSET, NOOP and QUIT.

    It is written here because the standard `smtpd` module is deprecated in Python 3.11 and removed in 3.12.
    """

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode("ascii") + b"\r\n")

    def handle(self) -> None:
        self.reply("220 127.0.0.1 test SMTP server")
        sender, recipients = None, []
        while True:
            line = self.rfile.readline()
            if not line:
                return
            command = line.decode("ascii").rstrip("\r\n")
            verb, _, argument = command.partition(" ")
            verb = verb.upper()
            if verb == "EHLO":
                self.wfile.write(b"250-127.0.0.1\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n")
            elif verb == "HELO":
                self.reply("250 127.0.0.1")
            elif verb == "AUTH":
                mechanism, _, initial_response = argument.partition(" ")
                _, user, password = base64.b64decode(initial_response).decode().split("\x00")
                self.server.logins.append((mechanism, user, password))
                self.reply("235 2.7.0 authenticated")
            elif verb == "MAIL":
                sender = argument.split(":", 1)[1].strip()
                self.reply("250 OK")
            elif verb == "RCPT":
                recipients.append(argument.split(":", 1)[1].strip())
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 end data with <CR><LF>.<CR><LF>")
                data = []
                while (data_line := self.rfile.readline()) not in (b".\r\n", b""):
                    # SMTP clients double a leading dot in message data, so undo it.
                    data.append(data_line[1:] if data_line.startswith(b"..") else data_line)
                message = email.message_from_bytes(b"".join(data), policy=email.policy.default)
                self.server.messages.append(SimpleNamespace(sender=sender, recipients=recipients, message=message))
                sender, recipients = None, []
                self.reply("250 OK queued")
            elif verb == "RSET":
                sender, recipients = None, []
                self.reply("250 OK")
            elif verb == "NOOP":
                self.reply("250 OK")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply(f"502 {verb} not implemented")


@pytest.fixture
def smtp_receiver(monkeypatch):
    """An SMTP server on 127.0.0.1 that records each message and login, with the SMTP settings pointing at it."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SmtpHandler)
    server.daemon_threads = True
    server.messages, server.logins = [], []
    # A short poll interval keeps shutdown, and so each test's teardown, fast.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv(alerts.SMTP_HOST_ENV, "127.0.0.1")
    monkeypatch.setenv(alerts.SMTP_PORT_ENV, str(server.server_address[1]))
    monkeypatch.setenv(alerts.SMTP_FROM_ENV, "meshline@example.com")
    yield server
    server.shutdown()
    server.server_close()


def exception_row(record_id: str = "1001", *, kind: str = "missing_field", system: str = "shopify",
                  run_id: str | None = "run-abc", fingerprint: str | None = None) -> dict:
    return {
        "fingerprint": fingerprint or f"fp-{kind}-{system}-{record_id}",
        "kind": kind, "system": system, "account": "main", "entity": "orders", "record_id": record_id,
        "partition_key": "2026-11-24", "owner": "team:data-ops", "decision_owner": "team:order-ops",
        "reason": REASON, "due_at": DUE, "run_id": run_id,
    }


def statuses(results) -> list[tuple[str, str]]:
    return [(result.channel, result.status) for result in results]


@pytest.fixture
def stored_exception(ledger) -> pd.DataFrame:
    """One missing_field exception opened in the ledger and read back, as the pipeline passes them."""
    opened = pd.DataFrame([{
        "fingerprint": "fp-stored-1001", "kind": "missing_field", "system": "shopify", "account": "main",
        "entity": "orders", "record_id": "1001", "partition_key": "2026-11-24", "rule": "email_present",
        "field": "email", "value": None, "owner": "team:data-ops", "decision_owner": "team:order-ops",
        "reason": REASON, "details": None, "due_after": timedelta(hours=8),
    }])
    ledger.open_exceptions(opened, run_id="run-abc")
    return ledger.read_exceptions()


@pytest.fixture
def delivered(ledger, channel_routing, stored_exception, http_receiver, smtp_receiver, monkeypatch):
    monkeypatch.setenv(alerts.WEBSERVER_URL_ENV, "http://127.0.0.1:3999/")
    results = notify(ledger, channel_routing, "opened", stored_exception, now=T0)
    due = stored_exception.loc[0, "due_at"].isoformat()
    return SimpleNamespace(results=results, due=due, http=http_receiver, smtp=smtp_receiver)


def test_notify_sends_every_route_channel(delivered):
    assert statuses(delivered.results) == [("ops-slack", "sent"), ("ops-webhook", "sent"), ("ops-email", "sent")]
    assert all(result.fingerprint == "fp-stored-1001" for result in delivered.results)
    assert all(result.record_id == "1001" for result in delivered.results)


def test_slack_message_is_escaped_mrkdwn(delivered):
    [body] = bodies(delivered.http, "/slack")

    assert list(body) == ["text"]
    text = body["text"]
    assert text.startswith("*New exception: missing_field on shopify orders record 1001*")
    assert "*Reason:* order total &lt;120.00&gt; differs from lines &amp; tax" in text
    assert "*Owner:* team:data-ops (decision owner: team:order-ops)" in text
    assert f"*Due:* {delivered.due}" in text
    assert f"*Link:* <{RUN_LINK}|Open in Dagster>" in text


def test_webhook_payload_has_the_exception_fields(delivered):
    [body] = bodies(delivered.http, "/webhook")

    assert body["event"] == "opened"
    assert body["fingerprint"] == "fp-stored-1001"
    assert body["kind"] == "missing_field"
    assert body["system"] == "shopify"
    assert body["record_id"] == "1001"
    assert body["owner"] == "team:data-ops"
    assert body["reason"] == REASON
    assert body["due_at"] == delivered.due
    assert datetime.fromisoformat(body["due_at"]).tzinfo is not None
    assert body["link"] == RUN_LINK
    assert body["run_id"] == "run-abc"


def test_email_message_names_every_field(delivered):
    [received] = delivered.smtp.messages
    message = received.message

    assert received.sender == "<meshline@example.com>"
    assert received.recipients == [f"<{address}>" for address in RECIPIENTS]
    assert message["From"] == "meshline@example.com"
    assert message["To"] == ", ".join(RECIPIENTS)
    assert message["Subject"] == "[MeshLine] New exception: missing_field on shopify orders record 1001"
    body = message.get_content()
    assert f"Reason: {REASON}" in body
    assert "Owner: team:data-ops (decision owner: team:order-ops)" in body
    assert f"Due: {delivered.due}" in body
    assert f"Link: {RUN_LINK}" in body
    assert delivered.smtp.logins == []


def test_same_event_is_delivered_once(ledger, channel_routing, http_receiver):
    row = exception_row(kind="duplicate_record")

    first = notify(ledger, channel_routing, "opened", [row], now=T0)
    second = notify(ledger, channel_routing, "opened", [row], now=T0 + timedelta(hours=1))

    assert statuses(first) == [("ops-slack", "sent")]
    assert statuses(second) == [("ops-slack", "skipped")]
    assert second[0].detail == "duplicate"
    assert len(bodies(http_receiver, "/slack")) == 1
    stored = read_alerts(ledger)
    assert stored[["fingerprint", "event", "channel", "status"]].values.tolist() == [
        [row["fingerprint"], "opened", "ops-slack", "sent"]]
    assert stored.loc[0, "sent_at"] == T0


def test_repeated_row_is_sent_once(ledger, channel_routing, http_receiver):
    row = exception_row(kind="duplicate_record")

    results = notify(ledger, channel_routing, "opened", [row, dict(row)], now=T0)

    assert statuses(results) == [("ops-slack", "sent"), ("ops-slack", "skipped")]
    assert len(bodies(http_receiver, "/slack")) == 1


def test_escalation_after_opening_is_delivered(ledger, channel_routing, http_receiver):
    row = exception_row(kind="duplicate_record")

    notify(ledger, channel_routing, "opened", [row], now=T0)
    escalated = notify(ledger, channel_routing, "escalated", [row], now=T0 + timedelta(hours=9))

    assert statuses(escalated) == [("ops-slack", "sent")]
    texts = [body["text"] for body in bodies(http_receiver, "/slack")]
    assert len(texts) == 2
    assert texts[1].startswith("*Exception escalated: duplicate_record on shopify orders record 1001*")
    assert "*Escalate to:* team:leads" in texts[1]
    assert "Escalate to" not in texts[0]


def test_rate_limit_holds_back_then_sends(ledger, channel_routing, http_receiver, monkeypatch):
    monkeypatch.setenv(alerts.RATE_LIMIT_ENV, "2/10m")
    rows = [exception_row(record_id, kind="duplicate_record") for record_id in ("1", "2", "3")]

    first = notify(ledger, channel_routing, "opened", rows, now=T0)
    within_window = notify(ledger, channel_routing, "opened", rows[2:], now=T0 + timedelta(minutes=5))
    after_window = notify(ledger, channel_routing, "opened", rows[2:], now=T0 + timedelta(minutes=10))

    assert [result.status for result in first] == ["sent", "sent", "rate_limited"]
    assert "rate limit of 2 per 10m" in first[2].detail
    assert [result.status for result in within_window] == ["rate_limited"]
    assert [result.status for result in after_window] == ["sent"]
    headlines = [body["text"].splitlines()[0] for body in bodies(http_receiver, "/slack")]
    assert [headline.removesuffix("*").rsplit(" ", 1)[1] for headline in headlines] == ["1", "2", "3"]
    assert read_alerts(ledger)["status"].tolist() == ["sent", "sent", "sent"]


def test_rate_limit_is_per_channel(ledger, channel_routing, http_receiver, monkeypatch):
    monkeypatch.setenv(alerts.RATE_LIMIT_ENV, "1/1h")
    slack_rows = [exception_row(record_id, kind="duplicate_record") for record_id in ("1", "2")]
    webhook_row = exception_row("3", kind="failed_validation")

    results = notify(ledger, channel_routing, "opened", [*slack_rows, webhook_row], now=T0)

    assert statuses(results) == [("ops-slack", "sent"), ("ops-slack", "rate_limited"), ("ops-webhook", "sent")]


def test_missing_url_variable_fails_without_raising(ledger, channel_routing, http_receiver, monkeypatch):
    monkeypatch.delenv(SLACK_ENV)
    row = exception_row(kind="duplicate_record")

    results = notify(ledger, channel_routing, "opened", [row], now=T0)

    assert statuses(results) == [("ops-slack", "failed")]
    assert SLACK_ENV in results[0].detail
    assert "channels.ops-slack.url_env" in results[0].detail
    assert "'ops-slack'" in results[0].detail
    assert read_alerts(ledger)["status"].tolist() == ["failed"]
    assert read_alerts(ledger)["error"].tolist() == [results[0].detail]


def test_failed_alert_is_sent_on_next_call(ledger, channel_routing, http_receiver, monkeypatch):
    row = exception_row(kind="duplicate_record")
    slack_url = f"{http_receiver.url}/slack"
    monkeypatch.delenv(SLACK_ENV)
    notify(ledger, channel_routing, "opened", [row], now=T0)

    monkeypatch.setenv(SLACK_ENV, slack_url)
    retried = notify(ledger, channel_routing, "opened", [row], now=T0 + timedelta(minutes=1))

    assert statuses(retried) == [("ops-slack", "sent")]
    assert len(bodies(http_receiver, "/slack")) == 1
    stored = read_alerts(ledger)
    assert stored["status"].tolist() == ["sent"]
    assert stored["error"].isna().all()


def test_server_error_is_a_failed_result(ledger, channel_routing, http_receiver, monkeypatch, caplog):
    monkeypatch.setenv(WEBHOOK_ENV, f"{http_receiver.url}/fail/webhook")
    row = exception_row(kind="failed_validation")

    results = notify(ledger, channel_routing, "opened", [row], now=T0)

    assert statuses(results) == [("ops-webhook", "failed")]
    assert "HTTP 500" in results[0].detail
    assert WEBHOOK_ENV in results[0].detail
    assert len(bodies(http_receiver, "/fail/webhook")) == 1
    assert "ops-webhook" in caplog.text
    assert http_receiver.url not in caplog.text


def test_failing_channel_is_tried_once_per_call(ledger, channel_routing, http_receiver, monkeypatch):
    monkeypatch.setenv(WEBHOOK_ENV, f"{http_receiver.url}/fail/webhook")
    rows = [exception_row(record_id, kind="failed_validation") for record_id in ("1", "2", "3")]

    results = notify(ledger, channel_routing, "opened", rows, now=T0)

    assert [result.status for result in results] == ["failed", "failed", "failed"]
    assert len(bodies(http_receiver, "/fail/webhook")) == 1
    assert results[1].detail.startswith("not tried after an earlier failure in this call")
    assert "HTTP 500" in results[2].detail
    assert read_alerts(ledger)["status"].tolist() == ["failed", "failed", "failed"]


def test_client_error_does_not_stop_channel(ledger, channel_routing, monkeypatch):
    answers = iter([httpx.Response(400, text="invalid_payload"), httpx.Response(200, text="ok")])

    with serve(lambda request: next(answers)) as base_url:
        monkeypatch.setenv(WEBHOOK_ENV, f"{base_url}/webhook")
        rows = [exception_row(record_id, kind="failed_validation") for record_id in ("1", "2")]
        results = notify(ledger, channel_routing, "opened", rows, now=T0)

    assert [result.status for result in results] == ["failed", "sent"]
    assert "HTTP 400" in results[0].detail


def test_unreachable_server_is_a_failed_result(ledger, channel_routing, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setenv(WEBHOOK_ENV, f"http://127.0.0.1:{closed_port}/webhook")

    results = notify(ledger, channel_routing, "opened", [exception_row(kind="failed_validation")], now=T0)

    assert statuses(results) == [("ops-webhook", "failed")]
    assert "ConnectError" in results[0].detail


def test_missing_smtp_host_fails(ledger, channel_routing):
    results = notify(ledger, channel_routing, "opened", [exception_row(kind="reconciliation_mismatch")], now=T0)

    assert statuses(results) == [("ops-email", "failed")]
    assert alerts.SMTP_HOST_ENV in results[0].detail


def test_smtp_login_uses_user_and_password(ledger, channel_routing, smtp_receiver, monkeypatch):
    monkeypatch.setenv(alerts.SMTP_USER_ENV, "alerts")
    monkeypatch.setenv(alerts.SMTP_PASSWORD_ENV, "s3cret")

    results = notify(ledger, channel_routing, "opened", [exception_row(kind="reconciliation_mismatch")], now=T0)

    assert statuses(results) == [("ops-email", "sent")]
    assert smtp_receiver.logins == [("PLAIN", "alerts", "s3cret")]
    assert len(smtp_receiver.messages) == 1


def test_smtp_user_without_password_fails(ledger, channel_routing, smtp_receiver, monkeypatch):
    monkeypatch.setenv(alerts.SMTP_USER_ENV, "alerts")

    results = notify(ledger, channel_routing, "opened", [exception_row(kind="reconciliation_mismatch")], now=T0)

    assert statuses(results) == [("ops-email", "failed")]
    assert alerts.SMTP_PASSWORD_ENV in results[0].detail
    assert smtp_receiver.messages == []


def test_starttls_unsupported_by_server_fails(ledger, channel_routing, smtp_receiver, monkeypatch):
    monkeypatch.setenv(alerts.SMTP_STARTTLS_ENV, "true")

    results = notify(ledger, channel_routing, "opened", [exception_row(kind="reconciliation_mismatch")], now=T0)

    assert statuses(results) == [("ops-email", "failed")]
    assert "STARTTLS" in results[0].detail
    assert smtp_receiver.messages == []


def test_invalid_starttls_value_fails(ledger, channel_routing, smtp_receiver, monkeypatch):
    monkeypatch.setenv(alerts.SMTP_STARTTLS_ENV, "yes please")

    results = notify(ledger, channel_routing, "opened", [exception_row(kind="reconciliation_mismatch")], now=T0)

    assert statuses(results) == [("ops-email", "failed")]
    assert alerts.SMTP_STARTTLS_ENV in results[0].detail


def test_links_argument_overrides_run_link(ledger, channel_routing, http_receiver):
    links = {"run_url": "http://127.0.0.1:3000/runs/current", "asset_url": "http://127.0.0.1:3000/assets/orders"}

    notify(ledger, channel_routing, "opened", [exception_row(kind="failed_validation")], links=links, now=T0)

    [body] = bodies(http_receiver, "/webhook")
    assert body["link"] == links["run_url"]
    assert body["asset_link"] == links["asset_url"]


def test_link_defaults_to_local_webserver(ledger, channel_routing, http_receiver):
    notify(ledger, channel_routing, "opened", [exception_row(kind="failed_validation", run_id="run-9")], now=T0)

    [body] = bodies(http_receiver, "/webhook")
    assert body["link"] == "http://127.0.0.1:3000/runs/run-9"


def test_link_without_run_uses_asset_url(ledger, channel_routing, http_receiver):
    links = {"asset_url": "http://127.0.0.1:3000/assets/orders"}

    notify(ledger, channel_routing, "opened", [exception_row(kind="failed_validation", run_id=None)], links=links,
           now=T0)

    [body] = bodies(http_receiver, "/webhook")
    assert body["link"] == links["asset_url"]


def test_connector_failure_adds_system_channels(ledger, channel_routing, http_receiver):
    row = exception_row(kind="connector_failure", system="stripe")

    results = notify(ledger, channel_routing, "check_failed", [row], now=T0)

    assert statuses(results) == [("ops-webhook", "sent"), ("ops-slack", "sent")]
    [body] = bodies(http_receiver, "/webhook")
    assert body["event"] == "check_failed"
    assert body["owner"] == "team:data-ops"
    assert bodies(http_receiver, "/slack")[0]["text"].startswith("*Check failed: connector_failure on stripe")


def test_connector_failure_without_system_channels(ledger, channel_routing, http_receiver):
    results = notify(ledger, channel_routing, "opened", [exception_row(kind="connector_failure")], now=T0)

    assert statuses(results) == [("ops-webhook", "sent")]


def test_other_kinds_skip_system_channels(ledger, channel_routing, http_receiver):
    row = exception_row(kind="failed_validation", system="stripe")

    results = notify(ledger, channel_routing, "opened", [row], now=T0)

    assert statuses(results) == [("ops-webhook", "sent")]


def test_undefined_channel_fails(ledger, channel_routing, http_receiver):
    del channel_routing.channels["ops-webhook"]

    results = notify(ledger, channel_routing, "opened", [exception_row(kind="failed_validation")], now=T0)

    assert statuses(results) == [("ops-webhook", "failed")]
    assert "'ops-webhook' is not defined" in results[0].detail
    assert http_receiver.received == []


def test_row_without_fingerprint_fails(ledger, channel_routing, http_receiver):
    row = exception_row(kind="duplicate_record")
    row["fingerprint"] = None

    results = notify(ledger, channel_routing, "opened", [row], now=T0)

    assert [result.status for result in results] == ["failed"]
    assert "fingerprint" in results[0].detail
    assert http_receiver.received == []


def test_unknown_kind_fails_without_raising(ledger, channel_routing, http_receiver):
    results = notify(ledger, channel_routing, "opened", [exception_row(kind="not_a_kind")], now=T0)

    assert [result.status for result in results] == ["failed"]
    assert "not_a_kind" in results[0].detail


def test_claimed_alert_skipped_until_expiry(ledger, channel_routing, http_receiver):
    row = exception_row(kind="duplicate_record")
    with ledger.engine.begin() as connection:
        connection.execute(alerts_sent.insert().values(
            fingerprint=row["fingerprint"], event="opened", channel="ops-slack", sent_at=T0, status="sending"))

    while_claimed = notify(ledger, channel_routing, "opened", [row], now=T0 + timedelta(minutes=1))
    after_expiry = notify(ledger, channel_routing, "opened", [row], now=T0 + alerts.CLAIM_TIMEOUT)

    assert statuses(while_claimed) == [("ops-slack", "skipped")]
    assert while_claimed[0].detail == alerts.CLAIMED_ELSEWHERE
    assert statuses(after_expiry) == [("ops-slack", "sent")]
    assert len(bodies(http_receiver, "/slack")) == 1


def test_notify_without_now_uses_clock(ledger, channel_routing, http_receiver):
    before = datetime.now(timezone.utc)

    results = notify(ledger, channel_routing, "opened", [exception_row(kind="duplicate_record")])

    assert statuses(results) == [("ops-slack", "sent")]
    sent_at = read_alerts(ledger).loc[0, "sent_at"]
    assert before <= sent_at <= datetime.now(timezone.utc)


def test_empty_frame_sends_nothing(ledger, channel_routing):
    assert notify(ledger, channel_routing, "opened", pd.DataFrame()) == []


@pytest.mark.parametrize("event", ["closed", ""])
def test_unknown_event_raises(ledger, channel_routing, event):
    with pytest.raises(ValueError, match="unknown alert event"):
        notify(ledger, channel_routing, event, [exception_row()])


def test_naive_now_raises(ledger, channel_routing):
    with pytest.raises(ValueError, match="no time zone"):
        notify(ledger, channel_routing, "opened", [exception_row()], now=datetime(2026, 11, 24, 12, 0))


@pytest.mark.parametrize(("text", "max_messages", "window"), [
    ("20/10m", 20, timedelta(minutes=10)),
    (" 5 / 30s ", 5, timedelta(seconds=30)),
    ("100/1h", 100, timedelta(hours=1)),
    ("1/1d", 1, timedelta(days=1)),
])
def test_rate_limit_parses(text, max_messages, window):
    limit = parse_rate_limit(text)

    assert limit.max_messages == max_messages
    assert limit.window == window


@pytest.mark.parametrize("text", ["20", "20/10", "0/10m", "20/0m", "twenty/10m", "20/10w", "-1/10m", "1/99999999999d"])
def test_invalid_rate_limit_raises(text):
    with pytest.raises(ValueError, match="invalid rate limit"):
        parse_rate_limit(text)


def test_invalid_rate_limit_env_uses_default(monkeypatch, caplog):
    monkeypatch.setenv(alerts.RATE_LIMIT_ENV, "lots")

    limit = alerts.rate_limit_from_env()

    assert str(limit) == "20 per 10m"
    assert alerts.RATE_LIMIT_ENV in caplog.text
