"""Shopify's mandatory compliance topics: customer data requests, customer redaction, shop redaction.

Redaction overwrites personal fields in place, in the canonical rows (`email`, `phone`, names,
and the same fields inside `extra`) and in the raw payloads, and writes one `redacted` audit
event per record. A raw payload keeps its original content hash, so a later delivery of the same
unredacted content is recognized as already landed and is not stored again. A data request
writes the customer's rows and payloads to a JSON file and audits that export.
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from meshline_pipelines import settings
from meshline_pipelines.ledger import Ledger
from meshline_pipelines.ledger.store import canonical_json, utc_now
from meshline_pipelines.ledger.tables import CANONICAL_TABLES, audit_events, raw_payloads

log = logging.getLogger(__name__)

REDACTED = "[redacted]"
SYSTEM = "shopify"
COMPLIANCE_TOPICS = ("customers/data_request", "customers/redact", "shop/redact")

# Keys whose values identify a person wherever they appear in a Shopify payload.
PERSONAL_KEYS = frozenset({
    "email", "contact_email", "phone", "first_name", "last_name", "browser_ip", "note",
    "address1", "address2", "city", "zip", "company", "latitude", "longitude",
})
# Objects that describe a person or an address. Inside them `name` is a person's name, while an
# order's own `name` is its number (#1001) and stays.
PERSON_OBJECTS = frozenset({"customer", "billing_address", "shipping_address", "default_address", "addresses",
                            "client_details", "receipt"})
PERSONAL_COLUMNS = {"customers": ("email", "phone", "first_name", "last_name"), "orders": ("email",)}
# The raw streams whose payloads name the customer, per canonical table they fill.
RAW_STREAMS = {"customers": "customers", "orders": "orders"}


class ComplianceRequestError(ValueError):
    """A compliance webhook body lacks what the topic requires; the message names the field."""


@dataclass
class ComplianceOutcome:
    """Records a compliance request touched, per canonical table, and the export file of a data request."""

    topic: str
    shop: str
    records: dict[str, list[str]] = field(default_factory=dict)
    raw_payloads: int = 0
    export_path: Path | None = None


def redact_payload(value: Any, inside_person: bool = False) -> Any:
    """Return a copy of a JSON value with every personal field replaced, at any depth."""
    if isinstance(value, dict):
        redacted = {}
        for key, item in value.items():
            personal = key in PERSONAL_KEYS or (inside_person and key == "name")
            if personal and item is not None:
                redacted[key] = REDACTED if isinstance(item, str) else None
            else:
                redacted[key] = redact_payload(item, inside_person or key in PERSON_OBJECTS)
        return redacted
    if isinstance(value, list):
        return [redact_payload(item, inside_person) for item in value]
    return value


def _require(body: Any, *path: str) -> Any:
    node = body
    for key in path:
        if not isinstance(node, dict) or node.get(key) in (None, ""):
            raise ComplianceRequestError(f"the webhook body has no {'.'.join(path)}: "
                                         "expected Shopify's compliance webhook payload")
        node = node[key]
    return node


def _ids(values: Any, name: str) -> list[str]:
    if values is None:
        return []
    if not isinstance(values, list) or not all(isinstance(value, (int, str)) for value in values):
        raise ComplianceRequestError(f"{name} is {values!r}: expected a list of order IDs")
    return [str(value) for value in values]


def _customer_orders(connection: sa.Connection, shop: str, customer_id: str | None, order_ids: list[str]) -> list[str]:
    """Return the stored order IDs of the customer, plus the listed ones that are stored."""
    orders = CANONICAL_TABLES["orders"]
    condition = orders.c.source_id.in_(order_ids) if order_ids else sa.false()
    if customer_id:
        condition = sa.or_(condition, orders.c.customer_source_id == customer_id)
    query = sa.select(orders.c.source_id).where(orders.c.system == SYSTEM, orders.c.account == shop, condition)
    return sorted(set(connection.execute(query).scalars()) | set(order_ids))


def _redact_rows(connection: sa.Connection, table_name: str, shop: str, source_ids: list[str] | None) -> list[str]:
    """Redact a table's personal columns and `extra`; None means every row of the shop. Return the IDs changed."""
    table = CANONICAL_TABLES[table_name]
    query = sa.select(table.c.source_id, table.c.extra).where(table.c.system == SYSTEM, table.c.account == shop)
    if source_ids is not None:
        query = query.where(table.c.source_id.in_(source_ids))
    changed = []
    for source_id, extra in connection.execute(query).all():
        values = {column: None for column in PERSONAL_COLUMNS[table_name]}
        if extra:
            values["extra"] = canonical_json(redact_payload(json.loads(extra)))
        connection.execute(table.update().where(
            table.c.system == SYSTEM, table.c.account == shop, table.c.source_id == source_id).values(values))
        changed.append(source_id)
    return changed


def _redact_raw(connection: sa.Connection, shop: str, stream: str, record_ids: list[str] | None) -> int:
    query = sa.select(raw_payloads.c.id, raw_payloads.c.payload).where(
        raw_payloads.c.system == SYSTEM, raw_payloads.c.account == shop, raw_payloads.c.stream == stream)
    if record_ids is not None:
        query = query.where(raw_payloads.c.record_id.in_(record_ids))
    count = 0
    for row_id, payload in connection.execute(query).all():
        try:
            redacted = json.dumps(redact_payload(json.loads(payload)), ensure_ascii=False)
        except json.JSONDecodeError:
            # An unreadable file kept as text cannot be redacted field by field; nothing of it is kept.
            redacted = REDACTED
        connection.execute(raw_payloads.update().where(raw_payloads.c.id == row_id).values(payload=redacted))
        count += 1
    return count


def _audit(connection: sa.Connection, outcome: ComplianceOutcome, step: str, details: dict) -> None:
    rows = [
        {"trace_id": f"compliance:{outcome.topic}", "system": SYSTEM, "account": outcome.shop, "entity": table,
         "record_id": record_id, "step": step, "actor": "shopify:compliance", "at": utc_now(),
         "details": canonical_json(details)}
        for table, record_ids in outcome.records.items() for record_id in record_ids
    ]
    if rows:
        connection.execute(audit_events.insert(), rows)


def redact_customer(ledger: Ledger, body: dict, *, request_id: str | None = None) -> ComplianceOutcome:
    """Handle customers/redact: the customer's row, their orders and the listed orders, raw and canonical."""
    shop = str(_require(body, "shop_domain"))
    customer_id = str(_require(body, "customer", "id"))
    order_ids = _ids(body.get("orders_to_redact"), "orders_to_redact")
    outcome = ComplianceOutcome(topic="customers/redact", shop=shop)

    with ledger.engine.begin() as connection:
        orders = _customer_orders(connection, shop, customer_id, order_ids)
        outcome.records["customers"] = _redact_rows(connection, "customers", shop, [customer_id])
        outcome.records["orders"] = _redact_rows(connection, "orders", shop, orders)
        outcome.raw_payloads = (_redact_raw(connection, shop, RAW_STREAMS["customers"], [customer_id])
                                + _redact_raw(connection, shop, RAW_STREAMS["orders"], orders))
        _audit(connection, outcome, "redacted", {"topic": outcome.topic, "request": request_id})
    log.info("shopify %s: redacted customer %s and %d orders (%d raw payloads) for customers/redact", shop,
             customer_id, len(outcome.records["orders"]), outcome.raw_payloads)
    return outcome


def redact_shop(ledger: Ledger, body: dict, *, request_id: str | None = None) -> ComplianceOutcome:
    """Handle shop/redact: every customer and order of the shop, raw and canonical."""
    shop = str(_require(body, "shop_domain"))
    outcome = ComplianceOutcome(topic="shop/redact", shop=shop)

    with ledger.engine.begin() as connection:
        outcome.records["customers"] = _redact_rows(connection, "customers", shop, None)
        outcome.records["orders"] = _redact_rows(connection, "orders", shop, None)
        outcome.raw_payloads = sum(_redact_raw(connection, shop, stream, None) for stream in RAW_STREAMS.values())
        _audit(connection, outcome, "redacted", {"topic": outcome.topic, "request": request_id})
    log.info("shopify %s: redacted %d customers and %d orders (%d raw payloads) for shop/redact", shop,
             len(outcome.records["customers"]), len(outcome.records["orders"]), outcome.raw_payloads)
    return outcome


def export_customer_data(ledger: Ledger, body: dict, *, request_id: str | None = None,
                         export_dir: Path | None = None) -> ComplianceOutcome:
    """Handle customers/data_request: write the customer's canonical rows and raw payloads to a JSON file."""
    shop = str(_require(body, "shop_domain"))
    customer_id = str(_require(body, "customer", "id"))
    order_ids = _ids(body.get("orders_requested"), "orders_requested")
    request = str((body.get("data_request") or {}).get("id") or request_id or utc_now().strftime("%Y%m%dT%H%M%S"))
    outcome = ComplianceOutcome(topic="customers/data_request", shop=shop)

    with ledger.engine.begin() as connection:
        orders = _customer_orders(connection, shop, customer_id, order_ids)
        requested = {"customers": [customer_id], "orders": orders}
        export: dict[str, Any] = {"shop": shop, "customer_id": customer_id, "data_request": request,
                                  "exported_at": utc_now().isoformat(), "records": {}, "raw_payloads": []}
        for table_name, ids in requested.items():
            table = CANONICAL_TABLES[table_name]
            rows = connection.execute(sa.select(table).where(
                table.c.system == SYSTEM, table.c.account == shop, table.c.source_id.in_(ids))).mappings().all()
            export["records"][table_name] = [dict(row) for row in rows]
            outcome.records[table_name] = [row["source_id"] for row in rows]
            raw = connection.execute(sa.select(raw_payloads.c.stream, raw_payloads.c.record_id,
                                               raw_payloads.c.fetched_at, raw_payloads.c.payload).where(
                raw_payloads.c.system == SYSTEM, raw_payloads.c.account == shop,
                raw_payloads.c.stream == RAW_STREAMS[table_name], raw_payloads.c.record_id.in_(ids))).mappings().all()
            export["raw_payloads"] += [{**dict(row), "payload": _parsed(row["payload"])} for row in raw]
        outcome.raw_payloads = len(export["raw_payloads"])

        folder = export_dir or settings.meshline_home() / "compliance" / "data_requests"
        folder.mkdir(parents=True, exist_ok=True)
        outcome.export_path = folder / f"{shop}-{request}.json"
        outcome.export_path.write_text(json.dumps(export, indent=2, default=str, ensure_ascii=False))
        _audit(connection, outcome, "data_request_exported",
               {"topic": outcome.topic, "request": request, "file": str(outcome.export_path)})
    log.info("shopify %s: exported %d records of customer %s to %s", shop,
             sum(len(ids) for ids in outcome.records.values()), customer_id, outcome.export_path)
    return outcome


def _parsed(payload: str) -> Any:
    try:
        return json.loads(payload)
    except json.JSONDecodeError:
        return payload


HANDLERS = {
    "customers/redact": redact_customer,
    "shop/redact": redact_shop,
    "customers/data_request": export_customer_data,
}


def handle(ledger: Ledger, topic: str, body: Any, *, request_id: str | None = None) -> ComplianceOutcome:
    """Run the handler of a compliance topic on its webhook body."""
    if not isinstance(body, dict):
        raise ComplianceRequestError(f"the {topic} webhook body is a {type(body).__name__}: expected a JSON object")
    return HANDLERS[topic](ledger, body, request_id=request_id)

