"""Deterministic generators of ecommerce data in the systems' own file formats."""
