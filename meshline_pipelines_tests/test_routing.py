"""Routing file: the bundled file, route selection and inheritance, and load errors that name line and key."""

import re
from datetime import timedelta
from pathlib import Path

import pytest

from meshline_pipelines import settings
from meshline_pipelines.routing import EXCEPTION_KINDS, SYSTEM_OWNER, RoutingError, load_routing

HEADER = """\
systems:
  shopify: {owner: "team:storefront"}
  stripe: {owner: "team:finance"}
default:
  owner: "team:data-ops"
  decision_owner: "team:operations"
  due: 24h
"""

CHANNELS = """\
channels:
  ops-slack: {type: slack, url_env: OPS_SLACK_URL}
  finance-email: {type: email, to: ["finance@example.com"]}
  pager: {type: webhook, url_env: PAGER_URL}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, marker: str) -> int:
    """Return the 1-based line of the only line of `text` that contains `marker`."""
    lines = [number for number, line in enumerate(text.splitlines(), start=1) if marker in line]
    assert len(lines) == 1, f"marker {marker!r} is on lines {lines}"
    return lines[0]


# --- The bundled file --------------------------------------------------------------------------


def test_bundled_file_loads():
    routing = load_routing()

    assert routing.system_owner("shopify") == "team:storefront"
    assert routing.system_owner("amazon") == "team:marketplace"
    assert routing.system_owner("stripe") == "team:finance"
    assert routing.default.owner == "team:data-ops"
    assert routing.default.escalate_to == "team:ops-leads"
    assert routing.channels == {}


def test_bundled_connector_failure_route():
    route = load_routing().route("connector_failure", "amazon", "orders")

    assert route.owner == "team:marketplace"
    assert route.decision_owner == "team:marketplace"
    assert route.due_after == timedelta(hours=4)
    assert route.escalate_to == "team:data-ops"


def test_bundled_stripe_validation_route():
    routing = load_routing()

    assert routing.route("failed_validation", "stripe", "charges").decision_owner == "team:finance"
    assert routing.route("failed_validation", "shopify", "orders").decision_owner == "team:order-ops"


def test_bundled_channel_example_is_valid(tmp_path):
    # Uncommenting the example block must give a file that loads, or the example misleads.
    bundled = settings.routing_file().read_text(encoding="utf-8")
    start = bundled.index("# channels:")
    example = "\n".join(re.sub(r"^# ?", "", line) for line in bundled[start:].splitlines())
    routing = load_routing(write(tmp_path, bundled[:start] + example + "\n"))

    assert {channel.type for channel in routing.channels.values()} == {"slack", "webhook", "email"}
    assert routing.channels["data-ops-slack"].settings == {"url_env": "MESHLINE_SLACK_DATA_OPS_URL"}
    assert routing.channels["finance-email"].settings == {"to": ["finance@example.com", "controller@example.com"]}


def test_routing_file_setting_is_used(tmp_path, monkeypatch):
    path = write(tmp_path, HEADER.replace("team:data-ops", "team:elsewhere"))
    monkeypatch.setenv(settings.ROUTING_FILE_ENV, str(path))

    assert load_routing().default.owner == "team:elsewhere"


# --- Choosing a route --------------------------------------------------------------------------


def test_unmatched_exception_goes_to_default_owner(tmp_path):
    routing = load_routing(write(tmp_path, HEADER + """\
routes:
  - kind: missing_field
    system: shopify
    owner: "team:storefront"
"""))

    for kind in EXCEPTION_KINDS:
        for system in ("shopify", "stripe", "unlisted"):
            route = routing.route(kind, system, "orders")
            assert route.owner, (kind, system)
    assert routing.route("missing_field", "stripe", "orders").owner == "team:data-ops"
    assert routing.route("reconciliation_mismatch", "shopify", "orders").owner == "team:data-ops"
    assert routing.route("reconciliation_mismatch", "shopify", "orders").due_after == timedelta(hours=24)


def test_file_without_routes_uses_default(tmp_path):
    route = load_routing(write(tmp_path, HEADER)).route("connector_failure", "shopify", "orders")

    assert route.owner == "team:data-ops"
    assert route.decision_owner == "team:operations"


def test_most_specific_route_wins(tmp_path):
    routing = load_routing(write(tmp_path, HEADER + """\
routes:
  - kind: failed_validation
    owner: "team:kind"
  - kind: failed_validation
    system: stripe
    owner: "team:kind-system"
  - kind: failed_validation
    entity: charges
    owner: "team:kind-entity"
  - kind: failed_validation
    system: stripe
    entity: charges
    owner: "team:kind-system-entity"
"""))

    def owner(system, entity):
        return routing.route("failed_validation", system, entity).owner

    assert owner("stripe", "charges") == "team:kind-system-entity"
    assert owner("shopify", "charges") == "team:kind-entity"
    assert owner("stripe", "payouts") == "team:kind-system"
    assert owner("shopify", "orders") == "team:kind"


def test_system_owner_resolves(tmp_path):
    routing = load_routing(write(tmp_path, HEADER + """\
routes:
  - kind: connector_failure
    owner: system_owner
    decision_owner: system_owner
    escalate_to: system_owner
"""))

    shopify = routing.route("connector_failure", "shopify", "orders")
    assert shopify.owner == "team:storefront"
    assert shopify.decision_owner == "team:storefront"
    assert shopify.escalate_to == "team:storefront"
    assert routing.route("connector_failure", "stripe", "charges").owner == "team:finance"
    # A system missing from `systems` has the default owner, so the exception is still owned.
    assert routing.route("connector_failure", "hubspot", "deals").owner == "team:data-ops"
    assert SYSTEM_OWNER not in vars(routing.route("connector_failure", "hubspot", "deals")).values()


def test_route_inherits_escalation_and_notify(tmp_path):
    routing = load_routing(write(tmp_path, CHANNELS + HEADER + """\
  escalate_to: "team:ops-leads"
  notify: [ops-slack]
routes:
  - kind: missing_field
    owner: "team:order-ops"
  - kind: duplicate_record
    owner: "team:order-ops"
    escalate_to: "finance@example.com"
    notify: [finance-email, pager]
  - kind: unmapped_reference
    owner: "team:catalog"
    notify: []
"""))

    inherited = routing.route("missing_field", "shopify", "orders")
    assert inherited.escalate_to == "team:ops-leads"
    assert inherited.notify == ("ops-slack",)
    assert inherited.decision_owner == "team:operations"
    assert inherited.due_after == timedelta(hours=24)
    overridden = routing.route("duplicate_record", "shopify", "orders")
    assert overridden.escalate_to == "finance@example.com"
    assert overridden.notify == ("finance-email", "pager")
    assert routing.route("unmapped_reference", "shopify", "orders").notify == ()
    assert routing.route("stale_source_of_truth", "shopify", "orders").notify == ("ops-slack",)


def test_no_escalation_without_escalate_to(tmp_path):
    route = load_routing(write(tmp_path, HEADER)).route("missing_field", "shopify", "orders")

    assert route.escalate_to is None
    assert route.notify == ()


def test_system_notify_channels(tmp_path):
    text = CHANNELS + HEADER + "  notify: [ops-slack]\n"
    text = text.replace('shopify: {owner: "team:storefront"}', 'shopify: {owner: "team:storefront", notify: [pager]}')
    routing = load_routing(write(tmp_path, text))

    assert routing.system_notify("shopify") == ("pager",)
    # System channels come on top of the route's, which already inherit the default's, so none here.
    assert routing.system_notify("stripe") == ()
    assert routing.system_notify("unlisted") == ()
    assert routing.channels["pager"].type == "webhook"
    assert routing.channels["pager"].settings == {"url_env": "PAGER_URL"}


def test_merge_keys_are_read(tmp_path):
    routing = load_routing(write(tmp_path, HEADER + """\
routes:
  - &order_ops
    kind: missing_field
    owner: "team:order-ops"
    due: 8h
  - <<: *order_ops
    kind: duplicate_record
"""))

    route = routing.route("duplicate_record", "shopify", "orders")
    assert route.owner == "team:order-ops"
    assert route.due_after == timedelta(hours=8)


def test_unknown_kind_at_route_time():
    with pytest.raises(RoutingError, match="unknown exception kind 'typo'"):
        load_routing().route("typo", "shopify", "orders")


# --- Errors that name the line and the key -----------------------------------------------------

ROUTE = "routes:\n  - kind: missing_field\n    owner: \"team:data-ops\"\n"

# (id, file text, text on the line the error names, key the error names, words the message contains)
ERRORS = [
    ("yaml unclosed quote", HEADER + "routes:\n  - kind: missing_field\n    owner: \"team:x\n", 'owner: "team:x',
     None, "invalid YAML: found unexpected end of stream while scanning a quoted scalar"),
    ("yaml missing colon", HEADER + "routes:\n  - kind: missing_field\n  owner \"team:x\"\n", 'owner "team:x"',
     None, "invalid YAML"),
    ("yaml tab", HEADER + "routes:\n\t- kind: missing_field\n", "\t- kind", None, "invalid YAML"),
    ("top-level key", HEADER + "route:\n  - kind: missing_field\n", "route:", "route",
     "unknown key 'route' (did you mean 'routes'?): use one of systems, default, routes, channels"),
    ("route key typo", HEADER + "routes:\n  - kind: missing_field\n    ownr: \"team:data-ops\"\n", "ownr",
     "routes[0].ownr", "unknown key 'ownr' (did you mean 'owner'?): use one of kind, system, entity, owner"),
    ("default key typo", HEADER + "  escalate: \"team:ops\"\n", "escalate:", "default.escalate",
     "unknown key 'escalate' (did you mean 'escalate_to'?)"),
    ("system key typo", HEADER.replace("{owner: \"team:finance\"}", "{ownr: \"team:finance\"}"), "ownr",
     "systems.stripe.ownr", "use one of owner, notify"),
    ("channel key typo", "channels:\n  ops: {type: slack, url: OPS_URL}\n" + HEADER, "url:", "channels.ops.url",
     "unknown key 'url'"),
    ("channel key of other type", "channels:\n  ops:\n    type: slack\n    url_env: OPS\n    to: [a@example.com]\n"
     + HEADER, "to: [a@", "channels.ops.to", "unknown key 'to' in a slack channel: use one of type, url_env"),
    ("routes not a list", HEADER + "routes:\n  kind: missing_field\n", "routes:", "routes",
     "expected a list of routes"),
    ("systems not a mapping", "systems: [shopify]\n" + HEADER[HEADER.index("default:"):], "systems:", "systems",
     "expected a mapping of system names"),
    ("default not a mapping", "default: team:data-ops\n", "default:", "default", "expected a mapping with owner"),
    ("kind not text", HEADER + "routes:\n  - kind: [missing_field]\n    owner: \"team:a\"\n", "kind:",
     "routes[0].kind", "expected a name, found a list"),
    ("empty system", HEADER + "routes:\n  - kind: missing_field\n    system:\n    owner: \"team:a\"\n", "system:",
     "routes[0].system", "found an empty value: write a name or remove the key"),
    ("unknown kind", HEADER + "routes:\n  - kind: missing_fields\n    owner: \"team:a\"\n", "missing_fields",
     "routes[0].kind", "unknown exception kind 'missing_fields' (did you mean 'missing_field'?): use one of"),
    ("unknown system", HEADER + "routes:\n  - kind: missing_field\n    system: shopfy\n    owner: \"team:a\"\n",
     "shopfy", "routes[0].system", "unknown system 'shopfy' (did you mean 'shopify'?): list it under `systems`"),
    ("invalid owner", HEADER + "routes:\n  - kind: missing_field\n    owner: data-ops\n", "owner: data-ops",
     "routes[0].owner", "invalid owner 'data-ops': write 'team:NAME', an email address or system_owner"),
    ("invalid escalate_to", HEADER + "  escalate_to: ops leads\n", "ops leads", "default.escalate_to",
     "invalid owner 'ops leads': write 'team:NAME' or an email address"),
    ("invalid system owner", HEADER.replace("team:storefront", "storefront"), "storefront", "systems.shopify.owner",
     "invalid owner 'storefront'"),
    ("invalid due", HEADER + "routes:\n  - kind: missing_field\n    owner: \"team:a\"\n    due: 8 hours\n",
     "8 hours", "routes[0].due", "invalid due '8 hours': write a duration such as 30m, 8h or 2d"),
    ("due without unit", HEADER.replace("due: 24h", "due: 24"), "due: 24", "default.due",
     "invalid due 24: write a duration"),
    ("zero due", HEADER.replace("due: 24h", "due: 0h"), "due: 0h", "default.due", "at least 1m"),
    ("huge due", HEADER.replace("due: 24h", "due: 99999999999d"), "due: 9", "default.due", "too long"),
    ("unknown channel", CHANNELS + HEADER + "  notify: [ops-slak]\n", "ops-slak", "default.notify[0]",
     "unknown channel 'ops-slak' (did you mean 'ops-slack'?): define it under `channels` or use one of ops-slack"),
    ("notify without channels", HEADER + ROUTE + "    notify: [ops-slack]\n", "notify:", "routes[0].notify[0]",
     "unknown channel 'ops-slack': define it under `channels`, which is empty or missing"),
    ("system notify unknown", HEADER.replace("{owner: \"team:finance\"}", "{owner: \"team:finance\", notify: [x]}"),
     "notify: [x]", "systems.stripe.notify[0]", "unknown channel 'x'"),
    ("notify not a list", CHANNELS + HEADER + "  notify: ops-slack\n", "notify: ops-slack", "default.notify",
     "expected a list of channel names such as [ops-slack], found 'ops-slack'"),
    ("notify twice", CHANNELS + HEADER + "  notify: [ops-slack, pager, ops-slack]\n", "notify: [ops-slack, pager",
     "default.notify[2]", "channel 'ops-slack' is listed twice: remove one"),
    ("slack without url_env", "channels:\n  ops:\n    type: slack\n" + HEADER, "  ops:", "channels.ops.url_env",
     "missing key 'url_env'"),
    ("webhook without url_env", "channels:\n  hook: {type: webhook}\n" + HEADER, "hook:", "channels.hook.url_env",
     "missing key 'url_env'"),
    ("url written in file", "channels:\n  ops: {type: slack, url_env: \"https://hooks.slack.test/x\"}\n" + HEADER,
     "https", "channels.ops.url_env", "invalid environment variable name 'https://hooks.slack.test/x'"),
    ("email without to", "channels:\n  mail: {type: email}\n" + HEADER, "mail:", "channels.mail.to",
     "missing key 'to'"),
    ("email to not a list", "channels:\n  mail: {type: email, to: ops@example.com}\n" + HEADER, "mail:",
     "channels.mail.to", "expected a list of email addresses such as [ops@example.com], found 'ops@example.com'"),
    ("email bad address", "channels:\n  mail:\n    type: email\n    to:\n      - ops@example.com\n      - ops-team\n"
     + HEADER, "- ops-team", "channels.mail.to[1]", "invalid email address 'ops-team'"),
    ("channel without type", "channels:\n  ops: {url_env: OPS}\n" + HEADER, "ops:", "channels.ops.type",
     "missing key 'type'"),
    ("unknown channel type", "channels:\n  ops: {type: slak, url_env: OPS}\n" + HEADER, "slak", "channels.ops.type",
     "unknown channel type 'slak' (did you mean 'slack'?): use one of slack, email, webhook"),
    ("duplicate route", HEADER + "routes:\n  - kind: failed_validation\n    system: stripe\n    owner: \"team:a\"\n"
     "  - kind: missing_field\n    owner: \"team:a\"\n  - system: stripe\n    kind: failed_validation\n"
     "    owner: \"team:b\"\n", "- system: stripe", "routes[2]",
     "duplicate route for kind 'failed_validation', system stripe and entity any: routes[0] at line 9"),
    ("duplicate key", HEADER + "  owner: \"team:other\"\n", "team:other", "default.owner",
     "duplicate key 'owner', first written at line 5: keep one of them"),
    ("missing default", "systems:\n  shopify: {owner: \"team:storefront\"}\n" + ROUTE, "systems:", "default",
     "missing key 'default': an exception that no route matches goes to the default owner"),
    ("missing default owner", HEADER.replace("  owner: \"team:data-ops\"\n", ""), "default:", "default.owner",
     "missing key 'owner'"),
    ("missing default due", HEADER.replace("  due: 24h\n", ""), "default:", "default.due", "missing key 'due'"),
    ("missing route owner", HEADER + "routes:\n  - kind: missing_field\n    due: 8h\n", "kind: missing_field",
     "routes[0].owner", "missing key 'owner'"),
    ("system_owner in default", HEADER.replace("owner: \"team:data-ops\"", "owner: system_owner"), "system_owner",
     "default.owner", "system_owner cannot be resolved in the default"),
    ("system_owner as default escalation", HEADER + "  escalate_to: system_owner\n", "system_owner",
     "default.escalate_to", "system_owner cannot be resolved in the default"),
    ("system_owner as system owner", HEADER.replace("team:finance", "system_owner"), "system_owner",
     "systems.stripe.owner", "system_owner cannot be a system's own owner"),
    ("empty file", "# only a comment\n", "# only", None, "the file is empty"),
    ("list document", "- default\n", "- default", None, "expected a mapping with systems, default, routes"),
    ("unsafe tag", HEADER + "routes: !!python/object:os.system x\n", "routes:", None,
     "invalid YAML: could not determine a constructor for the tag"),
    ("recursive alias", HEADER + "routes: &loop\n  - *loop\n", "&loop", "routes[0]",
     "an alias refers to the collection anchored on this line, which contains the alias"),
]


@pytest.mark.parametrize(("text", "marker", "key", "words"), [case[1:] for case in ERRORS],
                         ids=[case[0] for case in ERRORS])
def test_error_names_line_and_key(tmp_path, text, marker, key, words):
    path = write(tmp_path, text)
    line = line_of(text, marker)

    with pytest.raises(RoutingError) as raised:
        load_routing(path)

    error = raised.value
    assert words in str(error)
    assert error.line == line
    assert error.key == key
    assert error.path == str(path)
    location = f"{path} line {line}, {key}:" if key else f"{path} line {line}:"
    assert str(error).startswith(location)


def test_error_message_format(tmp_path):
    text = HEADER + "routes:\n  - kind: missing_field\n    owner: \"team:a\"\n    due: 8 hours\n"
    path = write(tmp_path, text)

    with pytest.raises(RoutingError) as raised:
        load_routing(path)

    assert str(raised.value) == (f"{path} line 11, routes[0].due: invalid due '8 hours': "
                                 "write a duration such as 30m, 8h or 2d")


def test_yaml_error_names_context_line(tmp_path):
    text = HEADER + "routes:\n  - {kind: missing_field, owner: \"team:a\"\n  - kind: duplicate_record\n"
    path = write(tmp_path, text)

    with pytest.raises(RoutingError) as raised:
        load_routing(path)

    assert raised.value.line == 10
    assert "(while parsing a flow mapping at line 9)" in str(raised.value)


def test_non_utf8_file_names_line(tmp_path):
    path = tmp_path / "routing.yaml"
    path.write_bytes(HEADER.encode() + b"# caf\xe9\n")

    with pytest.raises(RoutingError, match="line 8: the file is not UTF-8 text") as raised:
        load_routing(path)

    assert raised.value.line == 8


def test_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "routing.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + HEADER.encode())

    assert load_routing(path).default.owner == "team:data-ops"


def test_missing_file_names_setting(tmp_path):
    with pytest.raises(RoutingError, match=settings.ROUTING_FILE_ENV):
        load_routing(tmp_path / "absent.yaml")
