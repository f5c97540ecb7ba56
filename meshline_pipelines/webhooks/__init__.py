"""Webhook receiver for Shopify and Stripe, and the inbox it stores events in.

`inbox` contains the ledger functions the inbox sensor uses; it does not import Starlette, so the
sensor can use it without loading the HTTP server. `app.create_app` builds the receiver.
"""
