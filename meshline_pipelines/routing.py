"""Exception routing: the owner, decision owner and due time of each exception kind.

Routes come from a YAML file (see `config/routing.yaml`); the same file names each system's owner,
which Dagster shows as the owner of that system's assets.
"""

import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import yaml

from meshline_pipelines import settings

EXCEPTION_KINDS = (
    "missing_field",
    "duplicate_record",
    "stale_source_of_truth",
    "failed_validation",
    "ambiguous_approval",
    "unmapped_reference",
    "connector_failure",
    "reconciliation_mismatch",
)
SYSTEM_OWNER = "system_owner"
_OWNER_PATTERN = re.compile(r"^(team:[A-Za-z0-9_.-]+|[^@\s]+@[^@\s]+\.[^@\s]+)$")
_DURATION_PATTERN = re.compile(r"^(\d+)\s*([mhd])$")
_DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


class RoutingError(ValueError):
    pass


CHANNEL_TYPES = ("slack", "email", "webhook")


@dataclass(frozen=True)
class Channel:
    """An alert channel named in the routing file: a Slack incoming webhook, email over SMTP, or a JSON webhook.

    `settings` holds the channel's keys as written (for example `url_env` or `to`); secrets such as
    webhook URLs are named by environment variable, never written in the file.
    """

    name: str
    type: str
    settings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    owner: str
    decision_owner: str
    due_after: timedelta
    escalate_to: str | None = None  # the owner an overdue or escalated exception passes to
    notify: tuple[str, ...] = ()  # names of the channels that alert the owner


@dataclass(frozen=True)
class _RouteRule:
    kind: str
    system: str | None
    entity: str | None
    owner: str
    decision_owner: str
    due_after: timedelta
    escalate_to: str | None = None
    notify: tuple[str, ...] = ()

    @property
    def specificity(self) -> int:
        return (self.system is not None) + (self.entity is not None) * 2


class Routing:
    def __init__(self, system_owners: dict[str, str], default: Route, rules: list[_RouteRule],
                 channels: dict[str, Channel] | None = None):
        self.system_owners = system_owners
        self.default = default
        self.rules = rules
        self.channels = channels or {}

    def route(self, kind: str, system: str, entity: str) -> Route:
        if kind not in EXCEPTION_KINDS:
            raise RoutingError(f"unknown exception kind {kind!r}: expected one of {', '.join(EXCEPTION_KINDS)}")
        matching = [
            rule for rule in self.rules
            if rule.kind == kind and rule.system in (None, system) and rule.entity in (None, entity)
        ]
        if not matching:
            chosen = self.default
        else:
            rule = max(matching, key=lambda candidate: candidate.specificity)
            chosen = Route(rule.owner, rule.decision_owner, rule.due_after,
                           rule.escalate_to or self.default.escalate_to, rule.notify or self.default.notify)
        return Route(
            owner=self._resolve(chosen.owner, system),
            decision_owner=self._resolve(chosen.decision_owner, system),
            due_after=chosen.due_after,
            escalate_to=self._resolve(chosen.escalate_to, system) if chosen.escalate_to else None,
            notify=chosen.notify,
        )

    def system_owner(self, system: str) -> str:
        return self.system_owners.get(system, self.default.owner)

    def _resolve(self, owner: str, system: str) -> str:
        return self.system_owner(system) if owner == SYSTEM_OWNER else owner


def _parse_owner(value, where: str, allow_system_owner: bool = True) -> str:
    if allow_system_owner and value == SYSTEM_OWNER:
        return value
    if not isinstance(value, str) or not _OWNER_PATTERN.match(value):
        raise RoutingError(f"{where}: invalid owner {value!r}: write 'team:NAME' or an email address")
    return value


def _parse_due(value, where: str) -> timedelta:
    match = _DURATION_PATTERN.match(str(value).strip())
    if not match:
        raise RoutingError(f"{where}: invalid due {value!r}: write a duration such as 30m, 8h or 2d")
    return timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})


def _parse_notify(value, channels: dict[str, Channel], where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise RoutingError(f"{where}: expected a list of channel names, found {value!r}")
    unknown = [name for name in value if name not in channels]
    if unknown:
        raise RoutingError(f"{where}: unknown channel {', '.join(unknown)}: define it under `channels`")
    return tuple(value)


def _require_mapping(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise RoutingError(f"{where}: expected a mapping, found {type(value).__name__}")
    return value


def parse_routing(document, path: str) -> Routing:
    document = _require_mapping(document, path)

    systems = _require_mapping(document.get("systems", {}), f"{path}: systems")
    system_owners = {
        name: _parse_owner(_require_mapping(entry, f"{path}: systems.{name}").get("owner"),
                           f"{path}: systems.{name}.owner", allow_system_owner=False)
        for name, entry in systems.items()
    }

    default_entry = _require_mapping(document.get("default"), f"{path}: default")
    channels = {}
    for name, entry in _require_mapping(document.get("channels") or {}, f"{path}: channels").items():
        entry = _require_mapping(entry, f"{path}: channels.{name}")
        if entry.get("type") not in CHANNEL_TYPES:
            raise RoutingError(f"{path}: channels.{name}.type: unknown channel type {entry.get('type')!r}: "
                               f"expected one of {', '.join(CHANNEL_TYPES)}")
        channels[name] = Channel(name=name, type=entry["type"],
                                 settings={key: value for key, value in entry.items() if key != "type"})

    default = Route(
        owner=_parse_owner(default_entry.get("owner"), f"{path}: default.owner", allow_system_owner=False),
        decision_owner=_parse_owner(default_entry.get("decision_owner"), f"{path}: default.decision_owner",
                                    allow_system_owner=False),
        due_after=_parse_due(default_entry.get("due"), f"{path}: default.due"),
        escalate_to=_parse_owner(default_entry["escalate_to"], f"{path}: default.escalate_to",
                                 allow_system_owner=False) if default_entry.get("escalate_to") else None,
        notify=_parse_notify(default_entry.get("notify"), channels, f"{path}: default.notify"),
    )

    rules = []
    for position, entry in enumerate(document.get("routes") or []):
        where = f"{path}: routes[{position}]"
        entry = _require_mapping(entry, where)
        kind = entry.get("kind")
        if kind not in EXCEPTION_KINDS:
            raise RoutingError(f"{where}.kind: unknown exception kind {kind!r}: expected one of {', '.join(EXCEPTION_KINDS)}")
        rules.append(_RouteRule(
            kind=kind,
            system=entry.get("system"),
            entity=entry.get("entity"),
            owner=_parse_owner(entry.get("owner"), f"{where}.owner"),
            decision_owner=_parse_owner(entry.get("decision_owner", default.decision_owner), f"{where}.decision_owner"),
            due_after=_parse_due(entry.get("due", "24h"), f"{where}.due"),
            escalate_to=_parse_owner(entry["escalate_to"], f"{where}.escalate_to") if entry.get("escalate_to") else None,
            notify=_parse_notify(entry.get("notify"), channels, f"{where}.notify"),
        ))
    return Routing(system_owners, default, rules, channels)


def load_routing(path: Path | None = None) -> Routing:
    path = path or settings.routing_file()
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RoutingError(f"routing file {path} not found: set {settings.ROUTING_FILE_ENV} to an existing file") from None
    except yaml.YAMLError as exc:
        raise RoutingError(f"routing file {path} is not valid YAML: {exc}") from None
    return parse_routing(document, str(path))
