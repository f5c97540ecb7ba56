"""Alerts about exceptions over Slack incoming webhooks, JSON webhooks and email over SMTP.

`notify` sends one message per exception and channel of the exception's route. It sends each
(fingerprint, event, channel) once, and at most a set number of messages per channel and time
window. The ledger table `alerts_sent` records every attempt. A channel that is misconfigured or
down yields a `failed` result and a log line instead of an exception, because alerting must not fail
the pipeline run that calls it.
"""

import logging
import os
import re
import smtplib
import ssl
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage

import httpx
import pandas as pd
import sqlalchemy as sa

from meshline_pipelines.ledger.tables import alerts_sent
from meshline_pipelines.routing import Channel, Route, Routing, RoutingError

log = logging.getLogger(__name__)

EVENTS = ("opened", "escalated", "overdue", "check_failed")
HEADLINES = {
    "opened": "New exception",
    "escalated": "Exception escalated",
    "overdue": "Exception overdue",
    "check_failed": "Check failed",
}

# Result statuses. SENDING is only stored: it marks an alert that a notifier has claimed and is sending.
SENT, SKIPPED, RATE_LIMITED, FAILED, SENDING = "sent", "skipped", "rate_limited", "failed", "sending"
DUPLICATE = "duplicate"
CLAIMED_ELSEWHERE = "another notifier is sending this alert"

RATE_LIMIT_ENV = "MESHLINE_ALERT_RATE_LIMIT"
DEFAULT_RATE_LIMIT = "20/10m"
WEBSERVER_URL_ENV = "DAGSTER_WEBSERVER_URL"
DEFAULT_WEBSERVER_URL = "http://127.0.0.1:3000"
SMTP_HOST_ENV = "MESHLINE_SMTP_HOST"
SMTP_PORT_ENV = "MESHLINE_SMTP_PORT"
SMTP_FROM_ENV = "MESHLINE_SMTP_FROM"
SMTP_USER_ENV = "MESHLINE_SMTP_USER"
SMTP_PASSWORD_ENV = "MESHLINE_SMTP_PASSWORD"
SMTP_STARTTLS_ENV = "MESHLINE_SMTP_STARTTLS"
DEFAULT_SMTP_PORT = 25

# Timeout in seconds of each network operation (connect, read, write) of a webhook POST or an SMTP
# exchange. There are no retries here, because a failed alert is not marked as sent and the next
# `notify` call for the exception tries it again.
SEND_TIMEOUT = 10.0

# A claim older than this belongs to a notifier that stopped while sending, so another may take it
# over. It is well above the estimated worst case for one message: SEND_TIMEOUT for each of about
# ten SMTP steps.
CLAIM_TIMEOUT = timedelta(minutes=10)

_RATE_LIMIT_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*([smhd])\s*$")
_WINDOW_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


@dataclass(frozen=True)
class AlertResult:
    """The outcome of one alert: one event of one exception on one channel.

    `status` is sent, skipped, rate_limited or failed. `detail` is why an alert was skipped, held
    back or failed, for example `duplicate` or an error naming the channel and the setting to fix.
    """

    fingerprint: str | None
    record_id: str | None
    event: str
    channel: str | None
    status: str
    detail: str | None = None


@dataclass(frozen=True)
class RateLimit:
    """The maximum number of messages one channel sends per sliding time window."""

    max_messages: int
    window: timedelta

    def __str__(self) -> str:
        seconds = int(self.window.total_seconds())
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds % size == 0:
                return f"{self.max_messages} per {seconds // size}{unit}"
        return f"{self.max_messages} per {seconds}s"


def parse_rate_limit(text: str) -> RateLimit:
    """Parse a rate limit such as `20/10m`: messages per window in seconds, minutes, hours or days."""
    match = _RATE_LIMIT_PATTERN.match(text)
    if not match:
        raise ValueError(f"invalid rate limit {text!r}: write messages/window, for example 20/10m or 100/1h")
    max_messages = int(match.group(1))
    try:
        window = timedelta(**{_WINDOW_UNITS[match.group(3)]: int(match.group(2))})
    except OverflowError:
        raise ValueError(f"invalid rate limit {text!r}: the window is too long, so write at most a few days") from None
    if max_messages < 1 or window <= timedelta(0):
        raise ValueError(f"invalid rate limit {text!r}: the message count and the window must both be at least 1")
    return RateLimit(max_messages, window)


def rate_limit_from_env() -> RateLimit:
    """Read MESHLINE_ALERT_RATE_LIMIT. An invalid value is logged and the default applies, so alerts still go out."""
    configured = os.environ.get(RATE_LIMIT_ENV)
    if not configured:
        return parse_rate_limit(DEFAULT_RATE_LIMIT)
    try:
        return parse_rate_limit(configured)
    except ValueError as exc:
        log.error("%s: %s. Using the default %s until it is fixed", RATE_LIMIT_ENV, exc, DEFAULT_RATE_LIMIT)
        return parse_rate_limit(DEFAULT_RATE_LIMIT)


# The message


@dataclass(frozen=True)
class Alert:
    """The fields every channel's message shows about one exception event. `due_at` is ISO 8601 in UTC."""

    event: str
    fingerprint: str
    kind: str
    system: str
    account: str | None
    entity: str | None
    record_id: str | None
    partition_key: str | None
    owner: str | None
    decision_owner: str | None
    escalate_to: str | None
    reason: str | None
    due_at: str | None
    run_id: str | None
    link: str | None
    asset_link: str | None

    @property
    def headline(self) -> str:
        subject = " ".join(part for part in (self.kind, "on", self.system, self.entity) if part)
        return f"{HEADLINES[self.event]}: {subject} record {self.record_id or '(unknown)'}"


def _is_missing(value) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _text(value) -> str | None:
    return None if _is_missing(value) else str(value)


def _iso_utc(value) -> str | None:
    if _is_missing(value):
        return None
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        return str(value)
    # The ledger writes UTC, and SQLite returns it without a zone.
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.isoformat()


def _build_alert(event: str, row: dict, route: Route, links: dict, webserver_url: str) -> Alert:
    run_id = _text(row.get("run_id"))
    run_link = links.get("run_url") or (f"{webserver_url}/runs/{run_id}" if run_id else None)
    asset_link = links.get("asset_url")
    return Alert(
        event=event,
        fingerprint=str(row["fingerprint"]),
        kind=str(row["kind"]),
        system=str(row["system"]),
        account=_text(row.get("account")),
        entity=_text(row.get("entity")),
        record_id=_text(row.get("record_id")),
        partition_key=_text(row.get("partition_key")),
        owner=_text(row.get("owner")) or route.owner,
        decision_owner=_text(row.get("decision_owner")) or route.decision_owner,
        escalate_to=route.escalate_to,
        reason=_text(row.get("reason")),
        due_at=_iso_utc(row.get("due_at")),
        run_id=run_id,
        link=run_link or asset_link,
        asset_link=asset_link,
    )


def _detail_fields(alert: Alert) -> list[tuple[str, str]]:
    """Return the (name, value) pairs every message shows after its headline."""
    owner = alert.owner or "(none)"
    if alert.decision_owner and alert.decision_owner != alert.owner:
        owner += f" (decision owner: {alert.decision_owner})"
    fields = [("Reason", alert.reason or "(none given)"), ("Owner", owner)]
    if alert.event in ("escalated", "overdue") and alert.escalate_to and alert.escalate_to != alert.owner:
        fields.append(("Escalate to", alert.escalate_to))
    fields.append(("Due", alert.due_at or "(not set)"))
    if alert.partition_key:
        fields.append(("Partition", alert.partition_key))
    return fields


def plain_text(alert: Alert) -> str:
    """Format the alert as plain text, as email bodies carry it."""
    lines = [alert.headline, ""]
    lines += [f"{name}: {value}" for name, value in _detail_fields(alert)]
    lines.append(f"Link: {alert.link or '(none)'}")
    if alert.asset_link and alert.asset_link != alert.link:
        lines.append(f"Asset: {alert.asset_link}")
    lines.append(f"Fingerprint: {alert.fingerprint}")
    return "\n".join(lines) + "\n"


def _slack_escape(text: str) -> str:
    # Slack mrkdwn reads <...> as links and mentions, so text from records must not open one.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(alert: Alert) -> str:
    """Format the alert as Slack mrkdwn: a bold headline, bold field names and links into Dagster."""
    lines = [f"*{_slack_escape(alert.headline)}*"]
    lines += [f"*{name}:* {_slack_escape(value)}" for name, value in _detail_fields(alert)]
    lines.append(f"*Link:* <{alert.link}|Open in Dagster>" if alert.link else "*Link:* (none)")
    if alert.asset_link and alert.asset_link != alert.link:
        lines.append(f"*Asset:* <{alert.asset_link}|Open the asset>")
    return "\n".join(lines)


def webhook_payload(alert: Alert) -> dict:
    """Build the JSON object a generic webhook receives. `due_at` is ISO 8601 in UTC, or null."""
    return {
        "event": alert.event,
        "fingerprint": alert.fingerprint,
        "kind": alert.kind,
        "system": alert.system,
        "account": alert.account,
        "entity": alert.entity,
        "record_id": alert.record_id,
        "partition_key": alert.partition_key,
        "owner": alert.owner,
        "decision_owner": alert.decision_owner,
        "escalate_to": alert.escalate_to,
        "reason": alert.reason,
        "due_at": alert.due_at,
        "run_id": alert.run_id,
        "link": alert.link,
        "asset_link": alert.asset_link,
        "text": plain_text(alert),
    }


# Channels


class ChannelError(Exception):
    """A channel could not send: a setting is missing or invalid, or its server failed.

    The message names the channel and the setting or server to check. `channel_wide` is False for
    a rejection of this one message (an HTTP 4xx or an SMTP data error), which other messages on the
    channel may not meet.
    """

    def __init__(self, message: str, *, channel_wide: bool = True):
        super().__init__(message)
        self.channel_wide = channel_wide


def _channel_prefix(channel: Channel) -> str:
    return f"channel {channel.name!r} ({channel.type})"


def _url_from_env(channel: Channel) -> tuple[str, str]:
    """Return the webhook URL and the variable it came from. The URL is a secret and is never logged."""
    variable = channel.settings.get("url_env")
    if not variable or not isinstance(variable, str):
        raise ChannelError(f"{_channel_prefix(channel)}: setting channels.{channel.name}.url_env is missing: "
                           "name the environment variable that holds the webhook URL")
    url = os.environ.get(variable)
    if not url:
        raise ChannelError(f"{_channel_prefix(channel)}: environment variable {variable} "
                           f"(channels.{channel.name}.url_env) is not set: set it to the webhook URL")
    if not url.startswith(("http://", "https://")):
        raise ChannelError(f"{_channel_prefix(channel)}: environment variable {variable} "
                           f"(channels.{channel.name}.url_env) does not hold an http or https URL")
    return url, variable


def _post_json(channel: Channel, body: dict) -> None:
    url, variable = _url_from_env(channel)
    where = f"{_channel_prefix(channel)}: POST to the URL in {variable}"
    try:
        response = httpx.post(url, json=body, timeout=SEND_TIMEOUT)
    except httpx.TimeoutException:
        raise ChannelError(f"{where} timed out after {SEND_TIMEOUT:g} s") from None
    except httpx.InvalidURL:
        raise ChannelError(f"{where} failed: the URL is invalid") from None
    except httpx.HTTPError as exc:
        raise ChannelError(f"{where} failed: {type(exc).__name__}: {exc}") from None
    if not response.is_success:
        raise ChannelError(f"{where} failed with HTTP {response.status_code}: {response.text[:200]!r}",
                           channel_wide=not response.is_client_error)


def send_slack(channel: Channel, alert: Alert) -> None:
    """POST the alert to a Slack incoming webhook as `{"text": ...}` in mrkdwn."""
    _post_json(channel, {"text": slack_text(alert)})


def send_webhook(channel: Channel, alert: Alert) -> None:
    """POST the alert's fields to a generic webhook as one JSON object."""
    _post_json(channel, webhook_payload(alert))


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    user: str | None
    password: str | None
    starttls: bool


def smtp_settings_from_env(channel: Channel) -> SmtpSettings:
    """Read the SMTP server settings, or raise ChannelError naming the variable that is missing or invalid."""
    prefix = _channel_prefix(channel)
    host = os.environ.get(SMTP_HOST_ENV)
    if not host:
        raise ChannelError(f"{prefix}: environment variable {SMTP_HOST_ENV} is not set: set it to the SMTP server host")
    sender = os.environ.get(SMTP_FROM_ENV)
    if not sender:
        raise ChannelError(f"{prefix}: environment variable {SMTP_FROM_ENV} is not set: set it to the sender address")

    raw_port = os.environ.get(SMTP_PORT_ENV) or str(DEFAULT_SMTP_PORT)
    if not raw_port.isdigit() or not 1 <= int(raw_port) <= 65535:
        raise ChannelError(f"{prefix}: {SMTP_PORT_ENV}={raw_port!r} is not a port number between 1 and 65535")

    user = os.environ.get(SMTP_USER_ENV) or None
    password = os.environ.get(SMTP_PASSWORD_ENV) or None
    if user and not password:
        raise ChannelError(f"{prefix}: {SMTP_USER_ENV} is set but {SMTP_PASSWORD_ENV} is not: set both or neither")
    if password and not user:
        raise ChannelError(f"{prefix}: {SMTP_PASSWORD_ENV} is set but {SMTP_USER_ENV} is not: set both or neither")

    raw_starttls = (os.environ.get(SMTP_STARTTLS_ENV) or "false").strip().lower()
    if raw_starttls not in ("true", "false"):
        raise ChannelError(f"{prefix}: {SMTP_STARTTLS_ENV}={raw_starttls!r} is invalid: set it to true or false")
    return SmtpSettings(host, int(raw_port), sender, user, password, raw_starttls == "true")


def _recipients(channel: Channel) -> list[str]:
    recipients = channel.settings.get("to")
    if isinstance(recipients, str):
        recipients = [recipients]
    if not recipients or not isinstance(recipients, list) or not all(
            isinstance(address, str) and address.strip() for address in recipients):
        raise ChannelError(f"{_channel_prefix(channel)}: setting channels.{channel.name}.to is missing or empty: "
                           "list the recipient addresses")
    return recipients


def send_email(channel: Channel, alert: Alert) -> None:
    """Send the alert as a plain-text email to the channel's `to` addresses over SMTP."""
    recipients = _recipients(channel)
    smtp = smtp_settings_from_env(channel)

    message = EmailMessage()
    # Header values must be one line, and record IDs come from source systems.
    message["Subject"] = " ".join(f"[MeshLine] {alert.headline}".split())
    message["From"] = smtp.sender
    message["To"] = ", ".join(recipients)
    message.set_content(plain_text(alert))

    where = f"{_channel_prefix(channel)}: SMTP server {smtp.host}:{smtp.port} ({SMTP_HOST_ENV}, {SMTP_PORT_ENV})"
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=SEND_TIMEOUT) as server:
            if smtp.starttls:
                server.starttls(context=ssl.create_default_context())
            if smtp.user:
                server.login(smtp.user, smtp.password)
            rejected = server.send_message(message)
    except smtplib.SMTPDataError as exc:
        raise ChannelError(f"{where} rejected the message: {exc}", channel_wide=False) from None
    except smtplib.SMTPException as exc:
        raise ChannelError(f"{where} failed: {type(exc).__name__}: {exc}") from None
    except TimeoutError:
        raise ChannelError(f"{where} timed out after {SEND_TIMEOUT:g} s") from None
    except ssl.SSLError as exc:
        raise ChannelError(f"{where}: STARTTLS failed ({SMTP_STARTTLS_ENV}): {exc}") from None
    except OSError as exc:
        raise ChannelError(f"{where} is unreachable: {type(exc).__name__}: {exc}") from None
    if rejected:
        # The other recipients have the message, so the alert counts as sent and is not repeated.
        log.warning("%s: the SMTP server rejected recipients %s", _channel_prefix(channel), ", ".join(rejected))


SENDERS = {"slack": send_slack, "webhook": send_webhook, "email": send_email}


def _send(routing: Routing, channel_name: str, alert: Alert) -> None:
    channel = routing.channels.get(channel_name)
    if channel is None:
        raise ChannelError(f"channel {channel_name!r} is not defined under `channels` in the routing file")
    sender = SENDERS.get(channel.type)
    if sender is None:
        raise ChannelError(f"{_channel_prefix(channel)}: unknown channel type: expected one of {', '.join(SENDERS)}")
    sender(channel, alert)


# Deduplication and rate limits in the ledger


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _alert_key(fingerprint: str, event: str, channel: str):
    return sa.and_(alerts_sent.c.fingerprint == fingerprint, alerts_sent.c.event == event,
                   alerts_sent.c.channel == channel)


def _claim(engine: sa.Engine, fingerprint: str, event: str, channel: str, limit: RateLimit,
           now: datetime) -> tuple[str, str | None]:
    """Claim an alert for sending and return (SENDING, None), or the status and detail that stop it.

    The conditional update and the unique key on (fingerprint, event, channel) let only one of two
    concurrent notifiers claim the same alert.
    """
    key = _alert_key(fingerprint, event, channel)
    try:
        with engine.begin() as connection:
            stored = connection.execute(sa.select(alerts_sent.c.status, alerts_sent.c.sent_at).where(key)).first()
            if stored is not None and stored.status == SENT:
                return SKIPPED, DUPLICATE
            stale_before = now - CLAIM_TIMEOUT
            if stored is not None and stored.status == SENDING and _as_utc(stored.sent_at) > stale_before:
                return SKIPPED, CLAIMED_ELSEWHERE

            # NOTE: the count takes no lock. Two notifiers that count at the same moment may
            # together send a few messages more than the limit.
            recent = connection.execute(
                sa.select(sa.func.count()).select_from(alerts_sent).where(
                    alerts_sent.c.channel == channel,
                    alerts_sent.c.status.in_([SENT, SENDING]),
                    alerts_sent.c.sent_at > now - limit.window,
                )
            ).scalar_one()
            if recent >= limit.max_messages:
                status, error = RATE_LIMITED, f"channel {channel!r} reached its rate limit of {limit} ({RATE_LIMIT_ENV})"
            else:
                status, error = SENDING, None

            values = {"sent_at": now, "status": status, "error": error}
            if stored is None:
                connection.execute(alerts_sent.insert().values(fingerprint=fingerprint, event=event, channel=channel,
                                                               **values))
                return status, error
            claimable = sa.or_(
                alerts_sent.c.status.in_([FAILED, RATE_LIMITED]),
                sa.and_(alerts_sent.c.status == SENDING, alerts_sent.c.sent_at <= stale_before),
            )
            updated = connection.execute(alerts_sent.update().where(key, claimable).values(**values)).rowcount
    except sa.exc.IntegrityError:
        # Another notifier inserted the same alert between the read and the insert.
        return SKIPPED, CLAIMED_ELSEWHERE
    return (status, error) if updated else (SKIPPED, CLAIMED_ELSEWHERE)


def _finish(engine: sa.Engine, fingerprint: str, event: str, channel: str, status: str, error: str | None,
            now: datetime) -> None:
    with engine.begin() as connection:
        connection.execute(
            alerts_sent.update()
            .where(_alert_key(fingerprint, event, channel), alerts_sent.c.status == SENDING)
            .values(status=status, error=error, sent_at=now)
        )


def read_alerts(ledger) -> pd.DataFrame:
    """Return the `alerts_sent` table ordered by ID, with `sent_at` in UTC."""
    with ledger.engine.connect() as connection:
        rows = connection.execute(sa.select(alerts_sent).order_by(alerts_sent.c.id)).mappings().all()
    frame = pd.DataFrame(rows, columns=[column.name for column in alerts_sent.columns])
    frame["sent_at"] = pd.to_datetime(frame["sent_at"], utc=True)
    return frame


# notify


def _deliver(ledger, routing: Routing, alert: Alert, channel: str, limit: RateLimit, now: datetime,
             broken_channels: dict[str, str]) -> AlertResult:
    """Claim, send and record one alert.

    `broken_channels` maps each channel that already failed in this `notify` call to its error.
    Such a channel is not tried again until the next call.
    """
    def result(status: str, detail: str | None = None) -> AlertResult:
        return AlertResult(alert.fingerprint, alert.record_id, alert.event, channel, status, detail)

    try:
        status, detail = _claim(ledger.engine, alert.fingerprint, alert.event, channel, limit, now)
    except sa.exc.SQLAlchemyError as exc:
        return result(FAILED, f"could not read or write the alerts_sent table: {type(exc).__name__}: {exc}")
    if status != SENDING:
        return result(status, detail)

    try:
        if channel in broken_channels:
            # A server that failed or timed out once likely fails for each remaining alert too,
            # and waiting for each would hold up the pipeline run.
            raise ChannelError(f"not tried after an earlier failure in this call: {broken_channels[channel]}")
        _send(routing, channel, alert)
        status, detail = SENT, None
    except ChannelError as exc:
        status, detail = FAILED, str(exc)
        if exc.channel_wide:
            broken_channels.setdefault(channel, str(exc))
    except Exception as exc:  # noqa: BLE001 - an alert must not fail the pipeline run that sends it
        log.exception("alert %s for exception %s on channel %s failed unexpectedly", alert.event,
                      alert.fingerprint, channel)
        status, detail = FAILED, f"{type(exc).__name__}: {exc}"

    try:
        _finish(ledger.engine, alert.fingerprint, alert.event, channel, status, detail, now)
    except sa.exc.SQLAlchemyError as exc:
        # The claim stays `sending` and expires after CLAIM_TIMEOUT, so a sent alert may be sent again then.
        log.error("alert %s for exception %s on channel %s was %s but recording it in alerts_sent failed: %s",
                  alert.event, alert.fingerprint, channel, status, exc)
    return result(status, detail)


def _system_channel_names(routing: Routing, system: str) -> tuple[str, ...]:
    """Return the channels that alert about a system's connector health, or () when the routing has none.

    Routing offers them as `system_notify(system)`. A `system_channels` method or mapping is read
    when `system_notify` is absent.
    """
    system_notify = getattr(routing, "system_notify", None)
    if callable(system_notify):
        return tuple(system_notify(system) or ())
    system_channels = getattr(routing, "system_channels", None)
    if callable(system_channels):
        return tuple(system_channels(system) or ())
    if isinstance(system_channels, dict):
        return tuple(system_channels.get(system, ()))
    return ()


def _channel_names(routing: Routing, route: Route, kind: str, system: str) -> list[str]:
    names = list(route.notify)
    if kind == "connector_failure":
        # A connector failure concerns the whole system, so its channels hear about it too.
        names.extend(_system_channel_names(routing, system))
    return list(dict.fromkeys(names))


def _rows(exceptions: pd.DataFrame | Iterable[dict]) -> list[dict]:
    if isinstance(exceptions, pd.DataFrame):
        return exceptions.astype(object).where(exceptions.notna(), None).to_dict(orient="records")
    return [dict(row) for row in exceptions]


def _notify_row(ledger, routing: Routing, event: str, row: dict, links: dict, webserver_url: str,
                limit: RateLimit, now: datetime, broken_channels: dict[str, str]) -> list[AlertResult]:
    fingerprint, kind, system = _text(row.get("fingerprint")), _text(row.get("kind")), _text(row.get("system"))
    record_id = _text(row.get("record_id"))
    missing = [name for name, value in (("fingerprint", fingerprint), ("kind", kind), ("system", system)) if not value]
    if missing:
        return [AlertResult(fingerprint, record_id, event, None, FAILED,
                            f"the exception row has no {', '.join(missing)}, so no alert can be routed or deduplicated")]
    try:
        route = routing.route(kind, system, _text(row.get("entity")) or "")
    except RoutingError as exc:
        return [AlertResult(fingerprint, record_id, event, None, FAILED, f"routing failed: {exc}")]

    alert = _build_alert(event, row, route, links, webserver_url)
    return [_deliver(ledger, routing, alert, channel, limit, now, broken_channels)
            for channel in _channel_names(routing, route, kind, system)]


def _log_outcomes(event: str, results: list[AlertResult]) -> None:
    """Log sent counts, held-back counts and each distinct failure once with its count."""
    sent = Counter(result.channel for result in results if result.status == SENT)
    for channel, count in sent.items():
        log.info("sent %d %s alert(s) on channel %s", count, event, channel)

    held_back = Counter(result.channel for result in results if result.status == RATE_LIMITED)
    for channel, count in held_back.items():
        log.warning("channel %s reached its rate limit: %d %s alert(s) held back. They are sent when a later "
                    "call passes the exceptions again after the window", channel, count, event)

    failures: dict[tuple[str | None, str | None], list[AlertResult]] = {}
    for result in results:
        if result.status == FAILED:
            failures.setdefault((result.channel, result.detail), []).append(result)
    for (channel, detail), failed in failures.items():
        log.error("%d %s alert(s) failed on channel %s, first exception %s (record %s): %s", len(failed), event,
                  channel, failed[0].fingerprint, failed[0].record_id, detail)


def notify(ledger, routing: Routing, event: str, exceptions: pd.DataFrame | list[dict], *,
           links: dict | None = None, now: datetime | None = None) -> list[AlertResult]:
    """Send one alert per exception and channel of its route; return one result per attempt.

    `exceptions` contains rows of the ledger's exceptions table, needing at least fingerprint, kind
    and system. `links` may give `run_url` and `asset_url`. Without `run_url`, an exception with a
    run ID links to that run on DAGSTER_WEBSERVER_URL. `now` (timezone-aware) is the time used for
    the rate-limit window and recorded as `sent_at`.

    Channel, routing and database failures come back as `failed` results and are logged. After a
    channel's server fails or its settings are invalid, the call records the channel's remaining
    alerts as failed without trying them. Only an unknown `event` or a naive `now` raise ValueError,
    because both are errors in the caller.

    NOTE: rate-limited and failed alerts are sent only when a later call passes the exception again.
    The ledger stores no message text to resend from.
    """
    if event not in EVENTS:
        raise ValueError(f"unknown alert event {event!r}: expected one of {', '.join(EVENTS)}")
    if now is None:
        now = datetime.now(timezone.utc)
    elif now.tzinfo is None:
        raise ValueError(f"now={now!r} has no time zone: pass a timezone-aware datetime")
    # SQLite stores datetimes without a zone, so every stored time must be UTC to compare correctly.
    now = now.astimezone(timezone.utc)

    links = dict(links or {})
    webserver_url = (os.environ.get(WEBSERVER_URL_ENV) or DEFAULT_WEBSERVER_URL).rstrip("/")
    limit = rate_limit_from_env()

    results: list[AlertResult] = []
    broken_channels: dict[str, str] = {}
    for row in _rows(exceptions):
        results.extend(_notify_row(ledger, routing, event, row, links, webserver_url, limit, now, broken_channels))
    _log_outcomes(event, results)
    return results
