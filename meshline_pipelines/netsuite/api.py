"""The NetSuite client: item availability read with SuiteQL, sales orders and customers upserted by external ID.

Every request is signed with token-based authentication (OAuth 1.0a, RFC 5849, HMAC-SHA256), the
scheme NetSuite documents for SuiteTalk REST web services. The inbound `inventory` stream pages
through `POST /services/rest/query/v1/suiteql`. Delivery sends `PUT /services/rest/record/v1/
{record type}/eid:{external ID}`, which NetSuite treats as an upsert: it creates the record with
that external ID or updates it, so sending one version twice leaves one record.
"""

import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable, Generator, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from pydantic import Field, PrivateAttr

from meshline_pipelines.delivery.base import DELIVERED, REJECTED, RETRY, DeliveryResult, OutboundRecord, TargetClient
from meshline_pipelines.sources.base import SourceBatch
from meshline_pipelines.sources.http import ApiRequestError, ApiUnavailable
from meshline_pipelines.sources.live import Window

log = logging.getLogger(__name__)

SUITEQL_PATH = "/services/rest/query/v1/suiteql"
RECORD_PATH = "/services/rest/record/v1"
RECORD_TYPES = {"sales_order": "salesOrder", "customer": "customer"}

# NetSuite accepts only letters, digits, underscore and hyphen in an external ID ("Using External
# IDs" in the NetSuite help center). A pipe, for example, is read as a multi-select delimiter.
EXTERNAL_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")

# The query converts datetimes to and from text in this form with TO_CHAR and TO_TIMESTAMP.
# Without them, NetSuite renders datetimes in the user's date format preference.
SUITEQL_TIME_FORMAT = "YYYY-MM-DD HH24:MI:SS"
PYTHON_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

# AggregateItemLocation has one row per item and location with the availability NetSuite computes
# (on hand minus committed), and the time that availability last changed.
# NOTE: the table and its lastquantityavailablechange column come from public SuiteQL examples and
# have not been checked against a live account's Records Catalog. The token's role needs access to it.
# NOTE: SuiteQL reads and writes these datetimes in the time zone of the token user's preferences.
# The client assumes that is UTC (GMT), so set that user's time zone to GMT; any other zone shifts
# every cursor and window by its offset.
INVENTORY_QUERY = (
    "SELECT ail.item AS item, item.itemid AS itemid, ail.location AS location, "
    "NVL(ail.quantityavailable, 0) AS quantityavailable, "
    f"TO_CHAR(ail.lastquantityavailablechange, '{SUITEQL_TIME_FORMAT}') AS lastmodifieddate "
    "FROM AggregateItemLocation ail JOIN item ON item.id = ail.item "
    f"WHERE ail.lastquantityavailablechange >= TO_TIMESTAMP('{{since}}', '{SUITEQL_TIME_FORMAT}') "
    f"AND ail.lastquantityavailablechange < TO_TIMESTAMP('{{until}}', '{SUITEQL_TIME_FORMAT}') "
    # A unique order keeps offset paging from repeating or skipping rows between pages.
    "ORDER BY ail.lastquantityavailablechange, ail.item, ail.location"
)


def realm(account_id: str) -> str:
    """Return the account ID as NetSuite's OAuth realm expects it: upper case, `_` before a sandbox suffix."""
    return account_id.strip().upper().replace("-", "_")


def default_base_url(account_id: str) -> str:
    """Return the account's SuiteTalk REST domain: 1234567_SB1 -> https://1234567-sb1.suitetalk.api.netsuite.com."""
    host = account_id.strip().lower().replace("_", "-")
    return f"https://{host}.suitetalk.api.netsuite.com"


def percent_encode(value: str) -> str:
    """Percent-encode every character but the RFC 3986 unreserved ones, as RFC 5849 section 3.6 requires."""
    return quote(value, safe="~")


class TokenAuth(httpx.Auth):
    """Signs each request with NetSuite token-based authentication: OAuth 1.0a with HMAC-SHA256.

    A retried request is signed again, with a fresh nonce and timestamp. Only the query string is
    signed besides the method and URL, because every request this client sends has a JSON body,
    which RFC 5849 leaves out of the signature.
    """

    def __init__(self, *, account_id: str, consumer_key: str, consumer_secret: str, token_id: str,
                 token_secret: str, clock: Callable[[], float] = time.time,
                 nonce: Callable[[], str] = lambda: secrets.token_hex(16)):
        self.realm = realm(account_id)
        self.consumer_key = consumer_key
        self.consumer_secret = consumer_secret
        self.token_id = token_id
        self.token_secret = token_secret
        self.clock = clock
        self.nonce = nonce

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self.authorization(request)
        yield request

    def authorization(self, request: httpx.Request) -> str:
        """Return the `Authorization: OAuth ...` header value for the request."""
        oauth = {
            "oauth_consumer_key": self.consumer_key,
            "oauth_token": self.token_id,
            "oauth_signature_method": "HMAC-SHA256",
            "oauth_timestamp": str(int(self.clock())),
            "oauth_nonce": self.nonce(),
            "oauth_version": "1.0",
        }
        oauth["oauth_signature"] = self.signature(request, oauth)
        fields = [f'realm="{self.realm}"'] + [f'{name}="{percent_encode(value)}"' for name, value in oauth.items()]
        return "OAuth " + ", ".join(fields)

    def signature(self, request: httpx.Request, oauth: dict[str, str]) -> str:
        key = f"{percent_encode(self.consumer_secret)}&{percent_encode(self.token_secret)}"
        digest = hmac.new(key.encode(), signature_base_string(request, oauth).encode(), hashlib.sha256).digest()
        return base64.b64encode(digest).decode()


def signature_base_string(request: httpx.Request, oauth: dict[str, str]) -> str:
    """Build the RFC 5849 section 3.4.1 signature base string: method, base URI and sorted parameters.

    The realm and the signature itself are not parameters of the base string.
    """
    url = request.url
    # httpx drops a default port, and RFC 5849 keeps only a non-default one, so netloc is already right.
    path = url.raw_path.split(b"?", 1)[0].decode("ascii")
    base_uri = f"{url.scheme.lower()}://{url.netloc.decode('ascii').lower()}{path}"

    pairs = [(percent_encode(name), percent_encode(value)) for name, value in url.params.multi_items()]
    pairs += [(percent_encode(name), percent_encode(value)) for name, value in oauth.items()
              if name != "oauth_signature"]
    parameters = "&".join(f"{name}={value}" for name, value in sorted(pairs))
    return "&".join([request.method.upper(), percent_encode(base_uri), percent_encode(parameters)])


def parse_netsuite_time(value: Any) -> datetime | None:
    """Parse `lastmodifieddate` as the query renders it ("2026-11-24 15:04:05"), taking it as UTC."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def internal_id_from_location(location: str | None) -> str | None:
    """Return the internal ID at the end of a record URL such as .../record/v1/salesOrder/8912."""
    if not location:
        return None
    last = httpx.URL(location).path.rstrip("/").rsplit("/", 1)[-1]
    return last if last.isdigit() else None


def netsuite_error(response: httpx.Response) -> tuple[str, list[str]]:
    """Return the details and error codes of NetSuite's error body, or the status line when it has none."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code} {response.reason_phrase}".strip(), []
    details = body.get("o:errorDetails") if isinstance(body, dict) else None
    if not isinstance(details, list) or not details:
        title = body.get("title") if isinstance(body, dict) else None
        return str(title or f"HTTP {response.status_code} {response.reason_phrase}".strip()), []
    messages = [str(item.get("detail")) for item in details if isinstance(item, dict) and item.get("detail")]
    codes = [str(item.get("o:errorCode")) for item in details if isinstance(item, dict) and item.get("o:errorCode")]
    return "; ".join(messages) or str(body.get("title") or "no detail given"), codes


class NetSuiteClient(TargetClient):
    """SuiteQL item availability for one NetSuite account, and sales order and customer upserts to it."""

    account_id: str = Field(
        pattern=r"^[A-Za-z0-9]+([_-][A-Za-z0-9]+)*$",
        description="The NetSuite account ID, such as 1234567, or 1234567_SB1 for a sandbox. "
        "Part of every record's identity.",
    )
    consumer_key: str = Field(description="Consumer key of the integration record; set NETSUITE_CONSUMER_KEY.")
    consumer_secret: str = Field(description="Consumer secret of the integration record; set NETSUITE_CONSUMER_SECRET.")
    token_id: str = Field(description="Token ID of the access token; set NETSUITE_TOKEN_ID.")
    token_secret: str = Field(description="Token secret of the access token; set NETSUITE_TOKEN_SECRET.")
    page_size: int = Field(default=1000, ge=1, le=1000, description="SuiteQL rows per page; NetSuite allows 1 to 1000.")

    system: ClassVar[str] = "netsuite"
    base_url_setting: ClassVar[str] = "NETSUITE_API_BASE_URL"
    credential_settings: ClassVar[tuple[str, ...]] = (
        "NETSUITE_CONSUMER_KEY", "NETSUITE_CONSUMER_SECRET", "NETSUITE_TOKEN_ID", "NETSUITE_TOKEN_SECRET",
    )
    streams: ClassVar[tuple[str, ...]] = ("inventory",)
    entities: ClassVar[tuple[str, ...]] = tuple(RECORD_TYPES)

    # NOTE: ApiError does not carry the response, so the `should_retry` hook keeps the last failed
    # response, and a rejection can quote NetSuite's o:errorDetails.
    _last_failure: httpx.Response | None = PrivateAttr(default=None)

    @property
    def account(self) -> str:
        return realm(self.account_id)

    def session_options(self) -> dict[str, Any]:
        auth = TokenAuth(account_id=self.account_id, consumer_key=self.consumer_key,
                         consumer_secret=self.consumer_secret, token_id=self.token_id,
                         token_secret=self.token_secret)
        return {"auth": auth, "headers": {"Accept": "application/json"}, "should_retry": self._keep_failure}

    def _keep_failure(self, response: httpx.Response) -> bool | None:
        self._last_failure = response
        return None  # the status code decides whether to retry, as for every other API

    # Inbound: item availability

    def cursor(self, stream: str, payload: Any) -> datetime | None:
        if not isinstance(payload, dict):
            return None
        return parse_netsuite_time(payload.get("lastmodifieddate"))

    def pages(self, stream: str, window: Window) -> Iterator[SourceBatch]:
        # SuiteQL compares whole seconds, so the bounds are widened to whole seconds and fetch() drops the rest.
        since = window.since.astimezone(timezone.utc).replace(microsecond=0)
        until = window.until.astimezone(timezone.utc)
        if until.microsecond:
            until = until.replace(microsecond=0) + timedelta(seconds=1)
        query = INVENTORY_QUERY.format(since=since.strftime(PYTHON_TIME_FORMAT),
                                       until=until.strftime(PYTHON_TIME_FORMAT))
        yield from self._suiteql_pages(query)

    def _suiteql_pages(self, query: str) -> Iterator[SourceBatch]:
        """Yield one batch per SuiteQL page, following `hasMore` with `offset`.

        NOTE: NetSuite returns at most 100,000 rows per query, so a window with more availability
        changes than that ends early. `totalResults` in the response shows how many there were.
        """
        session = self.session()
        offset = 0
        while True:
            response = session.request("POST", SUITEQL_PATH, params={"limit": self.page_size, "offset": offset},
                                       json={"q": query}, headers={"Prefer": "transient"})
            body = session.read_json(response, "POST")
            rows, has_more = self._suiteql_page(body, response, offset)
            yield SourceBatch(origin=f"POST {SUITEQL_PATH} offset {offset}", records=rows,
                              fetched_at=datetime.now(timezone.utc))
            if not has_more:
                return
            if not rows:
                raise session.malformed("POST", response, "hasMore is true but the page has no items")
            offset += len(rows)

    def _suiteql_page(self, body: Any, response: httpx.Response, offset: int) -> tuple[list[Any], bool]:
        session = self.session()
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            raise session.malformed("POST", response, 'expected a SuiteQL result {"items": [...], "hasMore": ...}')
        has_more = body.get("hasMore")
        if not isinstance(has_more, bool):
            raise session.malformed("POST", response, f"hasMore is {has_more!r}, expected true or false")
        if body.get("offset") not in (None, offset):
            raise session.malformed("POST", response, f"offset is {body.get('offset')!r}, expected {offset}")
        return body["items"], has_more

    # Outbound: upserts by external ID

    def deliver(self, entity: str, records: list[OutboundRecord]) -> list[DeliveryResult]:
        """Upsert each record with PUT .../{record type}/eid:{record_key} and return one result per record.

        A 4xx response is `rejected` with NetSuite's own detail, and 429, 5xx or timeouts that last
        through every retry give `retry`. Wrong credentials (401, 403) or a wrong account or
        endpoint (404) concern every record, so they raise.
        """
        if entity not in RECORD_TYPES:
            raise ValueError(f"unknown NetSuite entity {entity!r}: expected one of {', '.join(self.entities)}")
        return [self._deliver_one(RECORD_TYPES[entity], record) for record in records]

    def _deliver_one(self, record_type: str, record: OutboundRecord) -> DeliveryResult:
        external_id = record.record_key
        if not EXTERNAL_ID_PATTERN.match(external_id):
            return DeliveryResult(
                idempotency_key=record.idempotency_key, status=REJECTED,
                message=f"external ID {external_id!r} is invalid: NetSuite accepts only letters, digits, _ and -",
            )
        payload_id = record.payload.get("externalId")
        if payload_id is not None and payload_id != external_id:
            raise ValueError(f"record {record.idempotency_key}: payload externalId {payload_id!r} differs from "
                             f"record_key {external_id!r}: build both from the same canonical row")

        path = f"{RECORD_PATH}/{record_type}/eid:{external_id}"
        self._last_failure = None
        try:
            response = self.session().request("PUT", path, json=record.payload)
        except ApiUnavailable as exc:
            log.warning("netsuite account %r: %s eid:%s not delivered, will retry: %s", self.account, record_type,
                        external_id, exc)
            return DeliveryResult(idempotency_key=record.idempotency_key, status=RETRY, http_status=exc.status,
                                  message=str(exc))
        except ApiRequestError as exc:
            if exc.status == 404:
                raise
            message, codes = netsuite_error(self._last_failure) if self._last_failure is not None else (str(exc), [])
            log.warning("netsuite account %r: %s eid:%s rejected (HTTP %s): %s", self.account, record_type,
                        external_id, exc.status, message)
            return DeliveryResult(idempotency_key=record.idempotency_key, status=REJECTED, http_status=exc.status,
                                  message=message, details={"error_codes": codes, "external_id": external_id})

        location = response.headers.get("Location")
        return DeliveryResult(
            idempotency_key=record.idempotency_key, status=DELIVERED, target_id=internal_id_from_location(location),
            http_status=response.status_code, details={"location": location, "external_id": external_id},
        )
