"""Personal data never leaves the ledger in full: exception values, reasons and logs mask it."""

import pandas as pd

PERSONAL_COLUMNS = frozenset({"email", "phone", "first_name", "last_name"})


def mask_personal(column: str | None, value: str | None) -> str | None:
    """Keep the first character (and an email's domain) of a personal value: 'b***@example.com'."""
    if value is None or pd.isna(value) or column not in PERSONAL_COLUMNS:
        return value
    if column == "email" and "@" in value:
        local, _, domain = value.partition("@")
        return f"{local[:1]}***@{domain}"
    return f"{value[:1]}***"
