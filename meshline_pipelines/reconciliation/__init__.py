"""Reconciliation assets: records against their source of truth, and payouts against their lines."""
