"""The identity of a shop, kept free of Dagster so the webhook receiver can import it."""

import re

# A domain name: labels of letters, digits and inner hyphens, at least two of them.
SHOP_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")
