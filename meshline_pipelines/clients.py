"""Source clients from the environment: per system, file mode (the default) or API mode.

`<SYSTEM>_MODE=file` reads dropped files (the demo's mode); `<SYSTEM>_MODE=api` calls the live
API with the credentials in that system's variables. In Dagster, secrets stay `EnvVar`s and are
read when a run starts. On the command line they are read at once, and a missing one is named.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg

from meshline_pipelines.amazon.client import AmazonFileClient
from meshline_pipelines.sources.base import SourceClient
from meshline_pipelines.sources.live import LiveClient
from meshline_pipelines.shopify.client import ShopifyFileClient
from meshline_pipelines.stripe.api import StripeApiClient
from meshline_pipelines.stripe.client import StripeFileClient

FILE, API = "file", "api"

# Account identities of the bundled samples, used in file mode only; set the variables to your own.
DEMO_ACCOUNTS = {
    "SHOPIFY_SHOP": "jsmith.myshopify.com",
    "AMAZON_SELLER_ID": "A2DEMOSELLER",
    "AMAZON_MARKETPLACE_ID": "ATVPDKIKX0DER",
    "STRIPE_ACCOUNT_ID": "acct_demo",
}


class SettingError(ValueError):
    """A MeshLine setting is missing or has a value MeshLine cannot use; the message names it and the fix."""


@dataclass(frozen=True)
class Settings:
    """Reads settings from the environment; `resolve_secrets` False gives Dagster `EnvVar`s for secrets."""

    resolve_secrets: bool = True

    def value(self, name: str, default: str | None = None) -> str:
        value = os.environ.get(name) or default
        if not value:
            raise SettingError(f"{name} is not set: set it in the environment or in .env (see .env.example)")
        return value

    def optional(self, name: str) -> str | None:
        return os.environ.get(name) or None

    def secret(self, name: str) -> Any:
        return self.value(name) if self.resolve_secrets else dg.EnvVar(name)


def mode(system: str) -> str:
    name = f"{system.upper()}_MODE"
    value = (os.environ.get(name) or FILE).strip().lower()
    if value not in (FILE, API):
        raise SettingError(f"{name}={value!r} is not a mode: set it to {FILE} (dropped files) or {API} (live API)")
    return value


def _shopify_live(settings: Settings, base_url: str | None) -> LiveClient:
    from meshline_pipelines.shopify.api import ShopifyRestClient
    from meshline_pipelines.shopify.graphql import ShopifyGraphqlClient

    api = (os.environ.get("SHOPIFY_API") or "graphql").strip().lower()
    clients = {"graphql": ShopifyGraphqlClient, "rest": ShopifyRestClient}
    if api not in clients:
        raise SettingError(f"SHOPIFY_API={api!r} is not an Admin API: set it to graphql (the default) or rest")
    shop = settings.value("SHOPIFY_SHOP")
    return clients[api](
        shop=shop, access_token=settings.secret("SHOPIFY_ACCESS_TOKEN"),
        api_version=settings.value("SHOPIFY_API_VERSION", "2026-07"),
        base_url=base_url or settings.value("SHOPIFY_API_BASE_URL", f"https://{shop}"),
    )


def _amazon_live(settings: Settings, base_url: str | None) -> LiveClient:
    from meshline_pipelines.amazon.api import AmazonSpApiClient

    return AmazonSpApiClient(
        seller_id=settings.value("AMAZON_SELLER_ID"), marketplace_id=settings.value("AMAZON_MARKETPLACE_ID"),
        lwa_client_id=settings.secret("AMAZON_LWA_CLIENT_ID"),
        lwa_client_secret=settings.secret("AMAZON_LWA_CLIENT_SECRET"),
        refresh_token=settings.secret("AMAZON_REFRESH_TOKEN"),
        lwa_token_url=settings.value("AMAZON_LWA_TOKEN_URL", "https://api.amazon.com/auth/o2/token"),
        base_url=base_url or settings.value("AMAZON_SP_API_BASE_URL", "https://sellingpartnerapi-na.amazon.com"),
    )


def _stripe_live(settings: Settings, base_url: str | None) -> LiveClient:
    return StripeApiClient(
        account_id=settings.value("STRIPE_ACCOUNT_ID"), api_key=settings.secret("STRIPE_API_KEY"),
        api_version=settings.optional("STRIPE_API_VERSION"),
        connected_account=(os.environ.get("STRIPE_CONNECTED_ACCOUNT") or "false").lower() == "true",
        base_url=base_url or settings.value("STRIPE_API_BASE_URL", "https://api.stripe.com"),
    )


def _netsuite_live(settings: Settings, base_url: str | None) -> LiveClient:
    from meshline_pipelines.netsuite.api import NetSuiteClient, default_base_url

    account_id = settings.value("NETSUITE_ACCOUNT_ID")
    return NetSuiteClient(
        account_id=account_id, consumer_key=settings.secret("NETSUITE_CONSUMER_KEY"),
        consumer_secret=settings.secret("NETSUITE_CONSUMER_SECRET"), token_id=settings.secret("NETSUITE_TOKEN_ID"),
        token_secret=settings.secret("NETSUITE_TOKEN_SECRET"),
        base_url=base_url or settings.value("NETSUITE_API_BASE_URL", default_base_url(account_id)),
    )


def _hubspot_live(settings: Settings, base_url: str | None) -> LiveClient:
    from meshline_pipelines.hubspot.api import HubSpotClient

    return HubSpotClient(
        portal_id=settings.value("HUBSPOT_PORTAL_ID"), access_token=settings.secret("HUBSPOT_ACCESS_TOKEN"),
        base_url=base_url or settings.value("HUBSPOT_API_BASE_URL", "https://api.hubapi.com"),
    )


def _shipstation_live(settings: Settings, base_url: str | None) -> LiveClient:
    from meshline_pipelines.shipstation.api import ShipStationClient

    return ShipStationClient(
        account_id=settings.value("SHIPSTATION_ACCOUNT_ID"), api_key=settings.secret("SHIPSTATION_API_KEY"),
        api_secret=settings.secret("SHIPSTATION_API_SECRET"),
        base_url=base_url or settings.value("SHIPSTATION_API_BASE_URL", "https://ssapi.shipstation.com"),
    )


def _file_client(system: str) -> SourceClient:
    def account(name: str) -> str:
        return os.environ.get(name) or DEMO_ACCOUNTS[name]

    if system == "shopify":
        return ShopifyFileClient(shop=account("SHOPIFY_SHOP"))
    if system == "amazon":
        return AmazonFileClient(seller_id=account("AMAZON_SELLER_ID"), marketplace_id=account("AMAZON_MARKETPLACE_ID"))
    return StripeFileClient(account_id=account("STRIPE_ACCOUNT_ID"))


LIVE_CLIENTS: dict[str, Callable[[Settings, str | None], LiveClient]] = {
    "shopify": _shopify_live,
    "amazon": _amazon_live,
    "stripe": _stripe_live,
    "netsuite": _netsuite_live,
    "hubspot": _hubspot_live,
    "shipstation": _shipstation_live,
}
# Systems read from dropped files or their API; the others (ERP, CRM, fulfillment) are API only,
# and their inbound streams exist in Dagster when <SYSTEM>_MODE=api.
SOURCE_SYSTEMS = ("shopify", "amazon", "stripe")


def live_client(system: str, *, base_url: str | None = None, resolve_secrets: bool = True) -> LiveClient:
    """Build the system's API client from its settings, whatever its mode; `base_url` overrides the configured one."""
    if system not in LIVE_CLIENTS:
        raise SettingError(f"unknown system {system!r}: expected one of {', '.join(LIVE_CLIENTS)}")
    client = LIVE_CLIENTS[system](Settings(resolve_secrets=resolve_secrets), base_url)
    return client.from_option("--base-url") if base_url else client


def source_clients() -> dict[str, SourceClient]:
    """Build one client per system for the Dagster resources, each in the mode its system is set to."""
    clients = {
        system: live_client(system, resolve_secrets=False) if mode(system) == API else _file_client(system)
        for system in SOURCE_SYSTEMS
    }
    clients.update({system: live_client(system, resolve_secrets=False)
                    for system in LIVE_CLIENTS if system not in SOURCE_SYSTEMS and mode(system) == API})
    return clients
