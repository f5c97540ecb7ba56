"""Exception routing: the owner, decision owner, due time, escalation target and alert channels of each exception.

Routes come from a YAML file (see `config/routing.yaml`); the same file names each system's owner,
which Dagster shows as the owner of that system's assets. The whole file is checked when it is loaded:
each error names the file, the 1-based line and the key, and gives the fix.
"""

import difflib
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
_EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DURATION_PATTERN = re.compile(r"^(\d+)\s*([mhd])$")
_DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days"}

# The settings each channel type requires. A channel may contain only these keys and `type`.
_CHANNEL_SETTINGS = {"slack": ("url_env",), "email": ("to",), "webhook": ("url_env",)}
CHANNEL_TYPES = tuple(_CHANNEL_SETTINGS)
_ALL_CHANNEL_KEYS = ("type", *dict.fromkeys(key for keys in _CHANNEL_SETTINGS.values() for key in keys))

_TOP_LEVEL_KEYS = ("systems", "default", "routes", "channels")
_SYSTEM_KEYS = ("owner", "notify")
_DEFAULT_KEYS = ("owner", "decision_owner", "due", "escalate_to", "notify")
_ROUTE_KEYS = ("kind", "system", "entity", "owner", "decision_owner", "due", "escalate_to", "notify")


class RoutingError(ValueError):
    """An invalid routing file or routing request.

    For an error in a file, `path`, `line` (1-based) and `key` (such as `routes[3].due`) locate it.
    They are None when the error has no place in a file.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None, key: str | None = None):
        super().__init__(message)
        self.path = path
        self.line = line
        self.key = key


@dataclass(frozen=True)
class Channel:
    """An alert channel named in the routing file: a Slack incoming webhook, email over SMTP, or a JSON webhook.

    `settings` contains the channel's keys as written, for example `url_env` or `to`. Secrets such
    as webhook URLs are named by environment variable, never written in the file.
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
    escalate_to: str | None = None  # None: the default's escalate_to applies
    notify: tuple[str, ...] | None = None  # None: the default's notify applies. () turns alerts off

    @property
    def specificity(self) -> int:
        return (self.system is not None) + (self.entity is not None) * 2


class Routing:
    def __init__(self, system_owners: dict[str, str], default: Route, rules: list[_RouteRule],
                 channels: dict[str, Channel] | None = None,
                 system_channels: dict[str, tuple[str, ...]] | None = None):
        self.system_owners = system_owners
        self.default = default
        self.rules = rules
        self.channels = channels or {}
        self.system_channels = system_channels or {}

    def route(self, kind: str, system: str, entity: str) -> Route:
        """Return the route of an exception: the most specific matching rule, or the default when none matches."""
        if kind not in EXCEPTION_KINDS:
            raise RoutingError(f"unknown exception kind {kind!r}: expected one of {', '.join(EXCEPTION_KINDS)}")
        matching = [
            rule for rule in self.rules
            if rule.kind == kind and rule.system in (None, system) and rule.entity in (None, entity)
        ]
        if not matching:
            chosen = self.default
        else:
            # The loader rejects two rules with the same kind, system and entity, so the maximum is unique.
            rule = max(matching, key=lambda candidate: candidate.specificity)
            chosen = Route(rule.owner, rule.decision_owner, rule.due_after,
                           rule.escalate_to or self.default.escalate_to,
                           self.default.notify if rule.notify is None else rule.notify)
        return Route(
            owner=self._resolve(chosen.owner, system),
            decision_owner=self._resolve(chosen.decision_owner, system),
            due_after=chosen.due_after,
            escalate_to=self._resolve(chosen.escalate_to, system) if chosen.escalate_to else None,
            notify=chosen.notify,
        )

    def system_owner(self, system: str) -> str:
        return self.system_owners.get(system, self.default.owner)

    def system_notify(self, system: str) -> tuple[str, ...]:
        """Return the names of the channels that alert about `system`'s connector health, or () if it names none.

        These channels come on top of the route's own, so a system without `notify` adds none and
        does not fall back to the default's channels, which routes already inherit.
        """
        return self.system_channels.get(system, ())

    def _resolve(self, owner: str, system: str) -> str:
        return self.system_owner(system) if owner == SYSTEM_OWNER else owner


# --- Reading YAML with line numbers -------------------------------------------------------------


class _Mapping(dict):
    """A YAML mapping as a dict, with the 1-based line of the mapping and of each key.

    Errors about a value name its key's line, because a block value starts on the line after its key.
    """

    def __init__(self, line: int):
        super().__init__()
        self.line = line
        self.key_lines: dict = {}


class _Sequence(list):
    """A YAML sequence as a list, with the 1-based line of each item."""

    def __init__(self, line: int):
        super().__init__()
        self.line = line
        self.item_lines: list[int] = []


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _child_key(label: str, key) -> str:
    return f"{label}.{key}" if label else str(key)


class _NodeReader:
    """Convert a composed YAML node tree into `_Mapping`, `_Sequence` and plain scalars.

    Scalars are built by PyYAML's safe constructor, so `24` is an int and `true` a bool exactly as
    `yaml.safe_load` reads them.
    """

    def __init__(self, path: str):
        self.path = path
        self.constructor = yaml.constructor.SafeConstructor()
        # Each node converts once, so an alias repeated many times cannot multiply the work.
        self.converted: dict[int, object] = {}
        self.in_progress: set[int] = set()

    def read(self, node: yaml.Node, label: str = ""):
        if id(node) in self.converted:
            return self.converted[id(node)]
        if id(node) in self.in_progress:
            raise _error(self.path, _line(node), label or None,
                         "an alias refers to the collection anchored on this line, which contains the alias: "
                         "replace the alias with the values")
        self.in_progress.add(id(node))
        if isinstance(node, yaml.MappingNode):
            value = self._read_mapping(node, label)
        elif isinstance(node, yaml.SequenceNode):
            value = _Sequence(_line(node))
            for position, item in enumerate(node.value):
                value.append(self.read(item, f"{label}[{position}]"))
                value.item_lines.append(_line(item))
        else:
            value = self.constructor.construct_object(node, deep=True)
        self.in_progress.discard(id(node))
        self.converted[id(node)] = value
        return value

    def _read_mapping(self, node: yaml.MappingNode, label: str) -> _Mapping:
        self._reject_duplicate_keys(node, label)
        # Resolve `<<` merge keys in place. Merged pairs come first, so keys written in the mapping override them.
        self.constructor.flatten_mapping(node)
        mapping = _Mapping(_line(node))
        for key_node, value_node in node.value:
            key = self._read_key(key_node, label)
            mapping[key] = self.read(value_node, _child_key(label, key))
            mapping.key_lines[key] = _line(key_node)
        return mapping

    def _read_key(self, key_node: yaml.Node, label: str):
        if not isinstance(key_node, yaml.ScalarNode):
            raise _error(self.path, _line(key_node), label or None,
                         "a key is a list or mapping: write a plain name such as `owner`")
        return self.constructor.construct_object(key_node)

    def _reject_duplicate_keys(self, node: yaml.MappingNode, label: str) -> None:
        # PyYAML silently keeps the last of two equal keys, which would hide one of two owners.
        first_lines = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self._read_key(key_node, label)
            if key in first_lines:
                raise _error(self.path, _line(key_node), _child_key(label, key),
                             f"duplicate key {key!r}, first written at line {first_lines[key]}: keep one of them")
            first_lines[key] = _line(key_node)


def _syntax_error(exc: yaml.MarkedYAMLError, text: str, path: str) -> RoutingError:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "unreadable YAML"
    if exc.context and exc.context_mark is not None and exc.problem_mark is not None:
        if exc.problem_mark.index >= len(text.rstrip()):
            # The text ended inside an open quote or bracket, so the line that opened it is the one to fix.
            mark = exc.context_mark
            problem = f"{exc.problem} {exc.context}"
        else:
            problem = f"{exc.problem} ({exc.context} at line {exc.context_mark.line + 1})"
    line = mark.line + 1 if mark else 1
    fix = "check the indentation, colons and quotes on this line and the lines above it"
    if isinstance(exc, yaml.constructor.ConstructorError):
        fix = "write plain values without `!!` tags, and merge (`<<`) only mappings"
    return _error(path, line, None, f"invalid YAML: {problem}: {fix}")


def _read_document(text: str, path: str):
    """Parse YAML text into `_Mapping`, `_Sequence` and scalars, or None for an empty document."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        return None if root is None else _NodeReader(path).read(root)
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, text, path) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        character = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        raise _error(path, line, None, f"invalid YAML: character {character} is not allowed in YAML: "
                                       "remove it or write it as an escape inside double quotes") from None


# --- Checking the routing file -------------------------------------------------------------------


def _error(path: str, line: int, key: str | None, problem: str) -> RoutingError:
    location = f"{path} line {line}, {key}" if key else f"{path} line {line}"
    return RoutingError(f"{location}: {problem}", path=path, line=line, key=key)


def _describe(value) -> str:
    if value is None:
        return "an empty value"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    return repr(value)


class _RoutingParser:
    """Check a routing document read by `_read_document` and build the `Routing` it describes."""

    def __init__(self, path: str):
        self.path = path

    def error(self, line: int, key: str | None, problem: str) -> RoutingError:
        return _error(self.path, line, key, problem)

    def parse(self, document) -> Routing:
        if document is None:
            raise self.error(1, None, "the file is empty: every exception needs an owner, so write at least "
                                      "a `default:` with owner, decision_owner and due")
        document = self.expect_mapping(document, _document_line(document), None,
                                       "a mapping with systems, default, routes and channels")
        self.check_keys(document, _TOP_LEVEL_KEYS, "")

        channels = self.parse_channels(document)
        system_owners, system_channels = self.parse_systems(document, channels)
        default = self.parse_default(document, channels)
        rules = self.parse_routes(document, default, system_owners, channels)
        return Routing(system_owners, default, rules, channels, system_channels)

    # Sections

    def parse_channels(self, document: _Mapping) -> dict[str, Channel]:
        entries = self.optional_section(document, "channels", "a mapping of channel names to channels")
        channels = {}
        for name, entry in entries.items():
            label = f"channels.{name}"
            line = entries.key_lines[name]
            if not isinstance(name, str):
                raise self.error(line, label,
                                 f"channel name {_describe(name)} is not text: write a name such as ops-slack")
            entry = self.expect_mapping(entry, line, label,
                                        "a channel such as {type: slack, url_env: SLACK_URL}")
            # Check keys against every type's settings first, so a misspelt `type` key is named as such.
            self.check_keys(entry, _ALL_CHANNEL_KEYS, label)
            channel_type = self.text(entry, "type", label, line, required=True)
            if channel_type not in _CHANNEL_SETTINGS:
                raise self.error(entry.key_lines["type"], f"{label}.type",
                                 f"unknown channel type {channel_type!r}{_suggestion(channel_type, CHANNEL_TYPES)}: "
                                 f"use one of {', '.join(CHANNEL_TYPES)}")
            required = _CHANNEL_SETTINGS[channel_type]
            self.check_keys(entry, ("type", *required), label, f"a {channel_type} channel")
            for key in required:
                self.require(entry, key, label, line)
            channel_settings = {}
            if "url_env" in required:
                channel_settings["url_env"] = self.env_name(entry, "url_env", label)
            if "to" in required:
                channel_settings["to"] = self.addresses(entry, "to", label)
            channels[name] = Channel(name=name, type=channel_type, settings=channel_settings)
        return channels

    def parse_systems(self, document: _Mapping, channels: dict[str, Channel]):
        entries = self.optional_section(document, "systems", "a mapping of system names to {owner: ...}")
        owners, notify = {}, {}
        for name, entry in entries.items():
            label = f"systems.{name}"
            line = entries.key_lines[name]
            if not isinstance(name, str):
                raise self.error(line, label,
                                 f"system name {_describe(name)} is not text: write a name such as shopify")
            entry = self.expect_mapping(entry, line, label,
                                        "a mapping such as {owner: \"team:storefront\"}")
            self.check_keys(entry, _SYSTEM_KEYS, label)
            owners[name] = self.owner(entry, "owner", label, line, required=True,
                                      system_owner_problem="system_owner cannot be a system's own owner")
            channel_names = self.notify(entry, label, channels)
            if channel_names is not None:
                notify[name] = channel_names
        return owners, notify

    def parse_default(self, document: _Mapping, channels: dict[str, Channel]) -> Route:
        if "default" not in document:
            raise self.error(_document_line(document), "default",
                             "missing key 'default': an exception that no route matches goes to the default "
                             "owner, so add a `default:` with owner, decision_owner and due")
        line = document.key_lines["default"]
        entry = self.expect_mapping(document["default"], line, "default",
                                    "a mapping with owner, decision_owner and due")
        self.check_keys(entry, _DEFAULT_KEYS, "default")
        # The default also covers systems with no owner under `systems`, and a system's owner falls
        # back to the default owner, so system_owner in the default could not be resolved.
        unresolvable = "system_owner cannot be resolved in the default, which also covers systems with no owner"
        owner_rules = dict(required=True, system_owner_problem=unresolvable)
        return Route(
            owner=self.owner(entry, "owner", "default", line, **owner_rules),
            decision_owner=self.owner(entry, "decision_owner", "default", line, **owner_rules),
            due_after=self.due(entry, "default", line),
            escalate_to=self.owner(entry, "escalate_to", "default", line, required=False,
                                   system_owner_problem=unresolvable),
            notify=self.notify(entry, "default", channels) or (),
        )

    def parse_routes(self, document: _Mapping, default: Route, system_owners: dict[str, str],
                     channels: dict[str, Channel]) -> list[_RouteRule]:
        entries = document.get("routes")
        if entries is None:
            return []
        if not isinstance(entries, list):
            raise self.error(document.key_lines["routes"], "routes", "expected a list of routes (each starting "
                                                                     f"with `- kind:`), found {_describe(entries)}")
        rules = []
        first_lines = {}
        for position, entry in enumerate(entries):
            line = entries.item_lines[position]
            rule = self.parse_route(entry, f"routes[{position}]", line, default, system_owners, channels)
            match = (rule.kind, rule.system, rule.entity)
            if match in first_lines:
                first_label, first_line = first_lines[match]
                raise self.error(line, f"routes[{position}]",
                                 f"duplicate route for kind {rule.kind!r}, system {rule.system or 'any'} and "
                                 f"entity {rule.entity or 'any'}: {first_label} at line {first_line} matches the "
                                 "same exceptions, so merge the two routes or delete one")
            first_lines[match] = (f"routes[{position}]", line)
            rules.append(rule)
        return rules

    def parse_route(self, entry, label: str, line: int, default: Route, system_owners: dict[str, str],
                    channels: dict[str, Channel]) -> _RouteRule:
        entry = self.expect_mapping(entry, line, label, "a route with kind and owner")
        self.check_keys(entry, _ROUTE_KEYS, label)

        kind = self.text(entry, "kind", label, line, required=True)
        if kind not in EXCEPTION_KINDS:
            raise self.error(entry.key_lines["kind"], f"{label}.kind",
                             f"unknown exception kind {kind!r}{_suggestion(kind, EXCEPTION_KINDS)}: "
                             f"use one of {', '.join(EXCEPTION_KINDS)}")
        system = self.text(entry, "system", label, line, required=False)
        if system is not None and system not in system_owners:
            # A misspelt system would make the route match nothing, without any error.
            known = ", ".join(system_owners) or "none yet"
            raise self.error(entry.key_lines["system"], f"{label}.system",
                             f"unknown system {system!r}{_suggestion(system, system_owners)}: list it under "
                             f"`systems` with its owner, or use one of the systems listed there ({known})")

        entity = self.text(entry, "entity", label, line, required=False)
        owner = self.owner(entry, "owner", label, line, required=True)
        decision_owner = default.decision_owner
        if "decision_owner" in entry:
            decision_owner = self.owner(entry, "decision_owner", label, line, required=True)
        due_after = self.due(entry, label, line) if "due" in entry else default.due_after
        return _RouteRule(
            kind=kind,
            system=system,
            entity=entity,
            owner=owner,
            decision_owner=decision_owner,
            due_after=due_after,
            escalate_to=self.owner(entry, "escalate_to", label, line, required=False),
            notify=self.notify(entry, label, channels),
        )

    # Keys and values

    def check_keys(self, mapping: _Mapping, allowed: tuple[str, ...], label: str, within: str | None = None) -> None:
        for key in mapping:
            if key in allowed:
                continue
            where = f" in {within}" if within else ""
            raise self.error(mapping.key_lines[key], _child_key(label, key),
                             f"unknown key {key!r}{where}{_suggestion(key, allowed)}: use one of {', '.join(allowed)}")

    def require(self, mapping: _Mapping, key: str, label: str, line: int) -> None:
        if key not in mapping:
            raise self.error(line, _child_key(label, key), f"missing key {key!r}: add `{key}:` to {label}")

    def expect_mapping(self, value, line: int, label: str | None, expected: str) -> _Mapping:
        if not isinstance(value, _Mapping):
            raise self.error(line, label, f"expected {expected}, found {_describe(value)}")
        return value

    def optional_section(self, document: _Mapping, key: str, expected: str) -> _Mapping:
        # A section whose entries are all commented out reads as empty, which is allowed.
        value = document.get(key)
        if value is None:
            return _Mapping(document.key_lines.get(key, _document_line(document)))
        return self.expect_mapping(value, document.key_lines[key], key, expected)

    def text(self, mapping: _Mapping, key: str, label: str, line: int, *, required: bool) -> str | None:
        if key not in mapping:
            if required:
                self.require(mapping, key, label, line)
            return None
        value = mapping[key]
        if not isinstance(value, str) or not value.strip():
            raise self.error(mapping.key_lines[key], _child_key(label, key),
                             f"expected a name, found {_describe(value)}: write a name or remove the key")
        return value

    def owner(self, mapping: _Mapping, key: str, label: str, line: int, *, required: bool,
              system_owner_problem: str | None = None) -> str | None:
        if key not in mapping:
            if required:
                self.require(mapping, key, label, line)
            return None
        value = mapping[key]
        where = mapping.key_lines[key]
        if value == SYSTEM_OWNER:
            if system_owner_problem is None:
                return value
            raise self.error(where, _child_key(label, key),
                             f"{system_owner_problem}: write 'team:NAME' or an email address")
        if not isinstance(value, str) or not _OWNER_PATTERN.match(value):
            choices = "'team:NAME' or an email address"
            if system_owner_problem is None:
                choices = f"'team:NAME', an email address or {SYSTEM_OWNER} (the owner of the record's system)"
            raise self.error(where, _child_key(label, key), f"invalid owner {_describe(value)}: write {choices}")
        return value

    def due(self, mapping: _Mapping, label: str, line: int) -> timedelta:
        self.require(mapping, "due", label, line)
        value = mapping["due"]
        where = (mapping.key_lines["due"], _child_key(label, "due"))
        match = _DURATION_PATTERN.match(value.strip()) if isinstance(value, str) else None
        if not match:
            raise self.error(*where, f"invalid due {_describe(value)}: write a duration such as 30m, 8h or 2d")
        amount = int(match.group(1))
        if amount == 0:
            raise self.error(*where, f"invalid due {value!r}: an exception due at once is overdue when it "
                                     "opens, so write a duration of at least 1m")
        try:
            return timedelta(**{_DURATION_UNITS[match.group(2)]: amount})
        except OverflowError:
            raise self.error(*where, f"invalid due {value!r}: the duration is too long, "
                                     "so write at most a few years in days such as 365d") from None

    def notify(self, mapping: _Mapping, label: str, channels: dict[str, Channel]) -> tuple[str, ...] | None:
        """Return the channel names of `notify`, or None when the key is absent so that the caller inherits."""
        if "notify" not in mapping:
            return None
        value = mapping["notify"]
        key = _child_key(label, "notify")
        if not isinstance(value, list):
            raise self.error(mapping.key_lines["notify"], key,
                             f"expected a list of channel names such as [ops-slack], found {_describe(value)}")
        names = []
        for position, name in enumerate(value):
            where = (value.item_lines[position], f"{key}[{position}]")
            if not isinstance(name, str):
                raise self.error(*where, f"expected a channel name, found {_describe(name)}")
            if name not in channels:
                fix = (f"define it under `channels` or use one of {', '.join(channels)}" if channels
                       else "define it under `channels`, which is empty or missing")
                raise self.error(*where, f"unknown channel {name!r}{_suggestion(name, channels)}: {fix}")
            if name in names:
                raise self.error(*where, f"channel {name!r} is listed twice: remove one")
            names.append(name)
        return tuple(names)

    def env_name(self, mapping: _Mapping, key: str, label: str) -> str:
        value = mapping[key]
        if not isinstance(value, str) or not _ENV_NAME_PATTERN.match(value):
            raise self.error(mapping.key_lines[key], _child_key(label, key),
                             f"invalid environment variable name {_describe(value)}: write the name of the "
                             "variable that holds the URL, such as MESHLINE_SLACK_URL, because the URL is a "
                             "secret that does not belong in this file")
        return value

    def addresses(self, mapping: _Mapping, key: str, label: str) -> list[str]:
        value = mapping[key]
        where_key = _child_key(label, key)
        if not isinstance(value, list) or not value:
            raise self.error(mapping.key_lines[key], where_key,
                             f"expected a list of email addresses such as [ops@example.com], found {_describe(value)}")
        for position, address in enumerate(value):
            if not isinstance(address, str) or not _EMAIL_PATTERN.match(address):
                raise self.error(value.item_lines[position], f"{where_key}[{position}]",
                                 f"invalid email address {_describe(address)}: "
                                 "write an address such as ops@example.com")
        return list(value)


def _document_line(document) -> int:
    return document.line if isinstance(document, (_Mapping, _Sequence)) else 1


def _suggestion(word, choices) -> str:
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, [str(choice) for choice in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def validate_owner(value: str) -> str:
    """Return an owner written as Dagster writes owners, or raise RoutingError naming the value and the forms."""
    if not isinstance(value, str) or not _OWNER_PATTERN.match(value):
        raise RoutingError(f"invalid owner {value!r}: write team:NAME or an email address")
    return value


def parse_routing(text: str, path: str) -> Routing:
    """Parse and check routing YAML `text`. `path` names the file in error messages."""
    return _RoutingParser(path).parse(_read_document(text, path))


def load_routing(path: Path | None = None) -> Routing:
    path = path or settings.routing_file()
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise RoutingError(f"routing file {path} not found: set {settings.ROUTING_FILE_ENV} to an existing file",
                           path=str(path)) from None
    except OSError as exc:
        raise RoutingError(f"routing file {path} could not be read: {exc.strerror}: "
                           f"set {settings.ROUTING_FILE_ENV} to a readable file", path=str(path)) from None
    try:
        # utf-8-sig also reads files that an editor saved with a byte order mark.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _error(str(path), line, None, "the file is not UTF-8 text: save it as UTF-8") from None
    return parse_routing(text, str(path))
