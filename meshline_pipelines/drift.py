"""Schema drift: top-level source fields that the documented shape of a stream does not have.

The documented shape of a stream is the set of top-level fields in the bundled real-format
samples of that stream, plus those its file client lists from the API's model. A payload with a
field outside it still loads, and the field is kept in the row's `extra` column. Each such field
is counted once per run and shown in the asset's metadata, so a source that added or moved a
field is noticed before a mapping depends on it.
"""

from collections import Counter
from collections.abc import Iterable
from fnmatch import fnmatch
from functools import lru_cache

from meshline_pipelines import settings
from meshline_pipelines.amazon.client import AmazonFileClient
from meshline_pipelines.shopify.client import ShopifyFileClient
from meshline_pipelines.sources.files import UnreadableFile
from meshline_pipelines.stripe.client import StripeFileClient

FILE_CLIENTS = {"shopify": ShopifyFileClient, "amazon": AmazonFileClient, "stripe": StripeFileClient}

# Fields that readers add to report rows; they are MeshLine's, not the source's.
READER_FIELDS = frozenset({"_row_number", "_field_count_error"})


@lru_cache(maxsize=None)
def documented_fields(system: str, stream: str) -> frozenset[str] | None:
    """Return the top-level fields of the stream's samples and API model, or None when neither is known."""
    client = FILE_CLIENTS.get(system)
    folder = settings.bundled_samples_dir() / system
    if client is None or stream not in client.files or not folder.is_dir():
        return None

    fields: set[str] = set(client.documented_fields.get(stream, ()))
    for pattern in client.files[stream]:
        for path in sorted(folder.iterdir()):
            if not path.is_file() or not fnmatch(path.name, pattern.glob):
                continue
            try:
                records = pattern.read_records(path.read_bytes(), path.name)
            except UnreadableFile:
                continue
            for record in records:
                if isinstance(record, dict):
                    fields.update(record)
    return frozenset(fields) or None


def new_fields(system: str, stream: str, payloads: Iterable) -> Counter:
    """Count, per field, the payloads that carry a top-level field outside the documented shape."""
    documented = documented_fields(system, stream)
    counts: Counter = Counter()
    if documented is None:
        return counts
    # NOTE: only top-level fields are compared. A field added inside a nested object, such as a
    # line item or an address, is kept in `extra` with its parent but is not counted here.
    for payload in payloads:
        # A GraphQL response holds only the fields its query selects, so it cannot carry a new one.
        if isinstance(payload, dict) and not str(payload.get("id", "")).startswith("gid://"):
            counts.update(field for field in payload if field not in documented and field not in READER_FIELDS)
    return counts
