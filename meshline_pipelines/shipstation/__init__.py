"""ShipStation (API v1): shipments in, orders out."""
