"""The identity map (xref): which records in different systems are the same order, customer or SKU.

Each link names the anchor record (`canonical_id`: the channel's order, the storefront's
customer, the SKU text), the linked record in another system, where the link came from and a
confidence. Links come from the records themselves (a payment naming its order, equal normalized
emails, equal SKUs) and from deliveries (the ID a target gave the record MeshLine sent). A
customer email shared by two storefront customers is ambiguous: it becomes an
`unmapped_reference` exception instead of a guess. So does an order line whose SKU matches no
ERP item, once the ERP's items are known, since the order would reach the ERP unbookable.
"""

import re

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from meshline_pipelines.ledger import Ledger
from meshline_pipelines.ledger.store import restore_types, utc_now
from meshline_pipelines.ledger.tables import xref
from meshline_pipelines.record_issues import exception_row
from meshline_pipelines.routing import Routing

CHANNELS = ("shopify", "amazon")
STOREFRONT = "shopify"
ERP = "netsuite"


def canonical_id(entity: str, system: str, account: str, source_id: str) -> str:
    return f"{entity}:{system}:{account}:{source_id}"


def normalize_email(email) -> str | None:
    if not isinstance(email, str) or "@" not in email:
        return None
    return email.strip().lower()


def normalize_phone(phone) -> str | None:
    """Digits only, with a leading + kept; None for fewer than seven digits."""
    if not isinstance(phone, str):
        return None
    digits = re.sub(r"\D", "", phone)
    if len(digits) < 7:
        return None
    prefix = "+" if phone.strip().startswith("+") else ""
    return prefix + digits


def link(ledger: Ledger, links: list[dict]) -> int:
    """Store links; a link already stored for the same record keeps its anchor unless the new one is surer."""
    if not links:
        return 0
    now = utc_now()
    with ledger.engine.begin() as connection:
        insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
        for item in links:
            statement = insert(xref).values(**item, created_at=now, updated_at=now)
            connection.execute(statement.on_conflict_do_update(
                index_elements=["entity", "system", "account", "system_id"],
                set_={"canonical_id": statement.excluded.canonical_id, "link_source": statement.excluded.link_source,
                      "confidence": statement.excluded.confidence, "updated_at": now},
                where=xref.c.confidence <= statement.excluded.confidence,
            ))
    return len(links)


def read_links(ledger: Ledger, *, entity: str | None = None, canonical: str | None = None) -> pd.DataFrame:
    query = sa.select(xref).order_by(xref.c.id)
    if entity:
        query = query.where(xref.c.entity == entity)
    if canonical:
        query = query.where(xref.c.canonical_id == canonical)
    with ledger.engine.connect() as connection:
        frame = pd.DataFrame(connection.execute(query).mappings().all(), columns=[c.name for c in xref.columns])
    return restore_types(frame, xref)


def _link(entity, anchor, system, account, system_id, source, confidence) -> dict:
    return {"entity": entity, "canonical_id": anchor, "system": system, "account": account,
            "system_id": str(system_id), "link_source": source, "confidence": confidence}


def order_links(orders: pd.DataFrame, payments: pd.DataFrame) -> list[dict]:
    """Payments to the channel order they name: by order ID, else by order number in the same system."""
    links = []
    channel_orders = orders[orders["system"].isin(CHANNELS)]
    for row in channel_orders.itertuples():
        links.append(_link("order", canonical_id("order", row.system, row.account, row.source_id), row.system,
                           row.account, row.source_id, "channel order", 1.0))

    by_id = {(row.system, row.source_id): row for row in channel_orders.itertuples()}
    by_number = {row.order_number: row for row in channel_orders.itertuples() if isinstance(row.order_number, str)}
    for payment in payments[payments["order_source_id"].notna()].itertuples():
        order = by_id.get((payment.system, payment.order_source_id)) or by_id.get(("shopify", payment.order_source_id))
        source, confidence = "payment names the order ID", 1.0
        if order is None:
            order = by_number.get(payment.order_source_id)
            source, confidence = "payment names the order number", 0.9
        if order is not None:
            links.append(_link("order", canonical_id("order", order.system, order.account, order.source_id),
                               payment.system, payment.account, f"payment:{payment.source_id}", source, confidence))
    return links


def customer_links(customers: pd.DataFrame, routing: Routing) -> tuple[list[dict], list[dict]]:
    """Customers of every system to the storefront customer with the same email, else the same phone.

    Returns the links and an `unmapped_reference` exception row for each email or phone that two
    storefront customers share, since either could be the one meant.
    """
    storefront = customers[customers["system"] == STOREFRONT].assign(
        email_key=lambda frame: frame["email"].map(normalize_email),
        phone_key=lambda frame: frame["phone"].map(normalize_phone))
    links, problems = [], []
    for row in storefront.itertuples():
        links.append(_link("customer", canonical_id("customer", row.system, row.account, row.source_id), row.system,
                           row.account, row.source_id, "storefront customer", 1.0))

    for key_column, source, confidence in (("email_key", "same email", 1.0), ("phone_key", "same phone", 0.8)):
        candidates = storefront[storefront[key_column].notna()].groupby(key_column)
        others = customers[customers["system"] != STOREFRONT]
        for row in others.itertuples():
            key = normalize_email(row.email) if key_column == "email_key" else normalize_phone(row.phone)
            if key is None or key not in candidates.groups:
                continue
            group = storefront.loc[candidates.groups[key]]
            if len(group) > 1:
                problems.append(_ambiguous(routing, row, key_column.removesuffix("_key"), group["source_id"].tolist()))
                continue
            anchor = group.iloc[0]
            links.append(_link("customer", canonical_id("customer", anchor["system"], anchor["account"],
                                                        anchor["source_id"]),
                               row.system, row.account, row.source_id, source, confidence))
    return links, problems


def _ambiguous(routing: Routing, row, field: str, candidates: list[str]) -> dict:
    return exception_row(
        routing, "unmapped_reference", system=row.system, account=row.account, entity="customers",
        record_id=row.source_id, partition_key=row.partition_key, rule=f"customers.{field}:ambiguous_link", field=field,
        reason=f"{row.system.capitalize()} customer {row.source_id} matches {len(candidates)} storefront customers "
               f"by {field} ({', '.join(candidates)}). Fix: merge the duplicate customers in the storefront, "
               f"or correct the contact's {field}",
        details={"candidates": candidates})


def sku_links(variants: pd.DataFrame, levels: pd.DataFrame) -> list[dict]:
    """SKUs of every system to the SKU text: storefront variants and inventory items of other systems."""
    links = []
    for row in variants[variants["sku"].notna()].itertuples():
        links.append(_link("sku", f"sku:{row.sku}", row.system, row.account, row.source_id, "variant SKU", 1.0))
    for row in levels[levels["sku"].notna() & levels["inventory_item_id"].notna()].itertuples():
        links.append(_link("sku", f"sku:{row.sku}", row.system, row.account, row.inventory_item_id,
                           "inventory item SKU", 1.0))
    return links


def shipment_links(shipments: pd.DataFrame, sent: pd.DataFrame) -> list[dict]:
    """Fulfillment orders to the channel order MeshLine sent under the same order key."""
    orders_sent = sent[sent["entity"] == "order"].drop_duplicates("record_key").set_index("record_key")
    links = []
    for row in shipments[shipments["order_key"].isin(orders_sent.index)].itertuples():
        source = orders_sent.loc[row.order_key]
        anchor = canonical_id("order", source["source_system"], source["source_account"], source["source_id"])
        links.append(_link("order", anchor, row.system, row.account, row.order_source_id or row.order_key,
                           "order key MeshLine sent", 1.0))
    return links


def skus_without_item(lines: pd.DataFrame, sku_links: pd.DataFrame, routing: Routing) -> list[dict]:
    """Order lines whose SKU the ERP does not know, once the ERP's items are in the identity map.

    Such a line would reach the ERP as an order for an item that does not exist there, so the
    order is held with an `unmapped_reference` exception until the SKU is linked.
    """
    erp_skus = set(sku_links.loc[sku_links["system"] == ERP, "canonical_id"].str.removeprefix("sku:"))
    if not erp_skus:
        return []
    channel_lines = lines[lines["system"].isin(CHANNELS) & lines["sku"].notna() & ~lines["sku"].isin(erp_skus)]
    found = []
    for row in channel_lines.itertuples():
        found.append(exception_row(
            routing, "unmapped_reference", system=row.system, account=row.account, entity="order_lines",
            record_id=row.order_source_id, partition_key=row.partition_key, rule="order_lines.sku:no_erp_item",
            field="sku", value=row.sku, fingerprint_extra=(row.sku,),
            reason=f"{row.system.capitalize()} order {row.order_source_id} has a line with SKU {row.sku}, which "
                   f"matches no {ERP.capitalize()} item. Fix: create the item in {ERP.capitalize()} or correct "
                   "the SKU; the order is held from delivery until then",
            details={"line": row.source_id}))
    return found


def build_links(ledger: Ledger, routing: Routing, *, run_id: str | None = None) -> dict[str, int]:
    """Link what the stored records tell; open an exception per ambiguous match and per SKU the ERP lacks."""
    orders, payments = ledger.read_table("orders"), ledger.read_table("payments")
    customer_found, problems = customer_links(ledger.read_table("customers"), routing)
    # Imported here: the outbox records delivered IDs in the identity map, so it imports this module.
    from meshline_pipelines.delivery.outbox import read_outbox

    counts = {
        "order": link(ledger, order_links(orders, payments)
                      + shipment_links(ledger.read_table("shipments"), read_outbox(ledger))),
        "customer": link(ledger, customer_found),
        "sku": link(ledger, sku_links(ledger.read_table("product_variants"), ledger.read_table("inventory_levels"))),
    }
    problems += skus_without_item(ledger.read_table("order_lines"), read_links(ledger, entity="sku"), routing)
    if problems:
        ledger.open_exceptions(pd.DataFrame(problems), run_id=run_id)
    counts["unmapped"] = len(problems)
    return counts
