"""Source clients from the environment: file mode by default, live clients in API mode."""

import dagster as dg
import pytest

from meshline_pipelines.amazon.api import AmazonSpApiClient
from meshline_pipelines.clients import SettingError, live_client, source_clients
from meshline_pipelines.shopify.api import ShopifyRestClient
from meshline_pipelines.shopify.client import ShopifyFileClient
from meshline_pipelines.shopify.graphql import ShopifyGraphqlClient


def test_file_mode_is_the_default(monkeypatch):
    for name in ("SHOPIFY_MODE", "AMAZON_MODE", "STRIPE_MODE", "SHOPIFY_SHOP"):
        monkeypatch.delenv(name, raising=False)

    built = source_clients()

    assert isinstance(built["shopify"], ShopifyFileClient)
    assert built["shopify"].shop == "jsmith.myshopify.com"


def test_shopify_api_mode_defaults_base_url(monkeypatch):
    monkeypatch.setenv("SHOPIFY_MODE", "api")
    monkeypatch.setenv("SHOPIFY_SHOP", "acme-outdoor.myshopify.com")
    monkeypatch.delenv("SHOPIFY_API_BASE_URL", raising=False)
    monkeypatch.delenv("SHOPIFY_API", raising=False)

    shopify = source_clients()["shopify"]

    assert isinstance(shopify, ShopifyGraphqlClient)
    assert shopify.base_url == "https://acme-outdoor.myshopify.com"
    assert shopify.access_token == dg.EnvVar("SHOPIFY_ACCESS_TOKEN")


def test_base_url_option_overrides_the_setting(monkeypatch):
    monkeypatch.setenv("SHOPIFY_SHOP", "acme-outdoor.myshopify.com")
    monkeypatch.setenv("SHOPIFY_ACCESS_TOKEN", "shpat_test")
    monkeypatch.setenv("SHOPIFY_API_BASE_URL", "https://proxy.internal")

    assert live_client("shopify").base_url == "https://proxy.internal"
    assert live_client("shopify", base_url="http://127.0.0.1:8080").base_url == "http://127.0.0.1:8080"


def test_api_mode_without_the_account_names_the_setting(monkeypatch):
    monkeypatch.setenv("SHOPIFY_MODE", "api")
    monkeypatch.delenv("SHOPIFY_SHOP", raising=False)

    with pytest.raises(SettingError, match="SHOPIFY_SHOP is not set"):
        source_clients()


def test_shopify_api_chooses_graphql_or_rest(monkeypatch):
    monkeypatch.setenv("SHOPIFY_SHOP", "acme-outdoor.myshopify.com")
    monkeypatch.setenv("SHOPIFY_ACCESS_TOKEN", "shpat_test")
    monkeypatch.delenv("SHOPIFY_API", raising=False)

    default = live_client("shopify")
    monkeypatch.setenv("SHOPIFY_API", "rest")
    rest = live_client("shopify")
    monkeypatch.setenv("SHOPIFY_API", "soap")

    assert isinstance(default, ShopifyGraphqlClient)
    assert isinstance(rest, ShopifyRestClient)
    with pytest.raises(SettingError, match="SHOPIFY_API='soap' is not an Admin API"):
        live_client("shopify")


def test_amazon_api_mode_uses_lwa_settings(monkeypatch):
    monkeypatch.setenv("AMAZON_MODE", "api")
    monkeypatch.setenv("AMAZON_SELLER_ID", "A3SELLER")
    monkeypatch.setenv("AMAZON_MARKETPLACE_ID", "A1PA6795UKMFR9")
    monkeypatch.setenv("AMAZON_SP_API_BASE_URL", "https://sellingpartnerapi-eu.amazon.com")

    amazon = source_clients()["amazon"]

    assert isinstance(amazon, AmazonSpApiClient)
    assert amazon.account == "A3SELLER/A1PA6795UKMFR9"
    assert amazon.base_url == "https://sellingpartnerapi-eu.amazon.com"
    assert amazon.refresh_token == dg.EnvVar("AMAZON_REFRESH_TOKEN")
    assert amazon.lwa_token_url == "https://api.amazon.com/auth/o2/token"
