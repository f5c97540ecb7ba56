"""The HubSpot CRM client: contacts read through the CRM search API and upserted by email in batches.

Reading. `POST /crm/v3/objects/contacts/search` filters on `lastmodifieddate` in epoch
milliseconds (GTE the window's start, LT its end), sorts on it ascending and pages with the
`after` token from `paging.next.after`. HubSpot's search returns at most 10,000 results for one
query and fails with HTTP 400 on a page past that. A window whose first page reports a `total`
above 10,000 is therefore split into two halves, recursively, before any of its contacts are
read. The cursor of a contact is its `updatedAt`, which for contacts is `lastmodifieddate`.

Writing. `POST /crm/v3/objects/contacts/batch/upsert` takes at most 100 inputs, each keyed by
`idProperty: email`, and creates a contact or updates the one with that email, so delivering a
version twice leaves one contact. Each input carries the record's idempotency key as
`objectWriteTraceId`, which HubSpot's response schema echoes in each result. Results and the
errors of a 207 multi-status response are matched to records by that trace ID, else by email.

Rate limits. Responses carry `X-HubSpot-RateLimit-Max`, `-Remaining` and
`-Interval-Milliseconds`, which describe a rolling window (typically 10 seconds), and on some
accounts `-Secondly` and `-Secondly-Remaining`. `pace` pauses when few requests are left. A 429
body names the limit that was hit in `policyName` (`TEN_SECONDLY_ROLLING`, `SECONDLY` or `DAILY`).
`ApiSession` retries it after the delay in `Retry-After` when the header is present, and
otherwise after at least one rolling window.
The search endpoints have a lower limit of their own, 4 requests per second per token in HubSpot's
changelog entry "CRM Search API Rate Limit Increase", which a token bucket in this client keeps to.
"""

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

import httpx
from pydantic import Field, PrivateAttr

from meshline_pipelines.delivery.base import DELIVERED, REJECTED, RETRY, DeliveryResult, OutboundRecord, TargetClient
from meshline_pipelines.hubspot.normalize import DEFAULT_LIFETIME_VALUE_PROPERTY, lifetime_value_property
from meshline_pipelines.sources.base import SourceBatch
from meshline_pipelines.sources.http import (
    ApiAuthError, ApiError, ApiRequestError, ApiResponseError, ApiUnavailable, Throttle,
)
from meshline_pipelines.sources.live import Window, iso_utc, parse_cursor
from meshline_pipelines.sources.rate_limits import TokenBucket

log = logging.getLogger(__name__)

SEARCH_PATH = "/crm/v3/objects/contacts/search"
UPSERT_PATH = "/crm/v3/objects/contacts/batch/upsert"
# The properties a search requests. HUBSPOT_LIFETIME_VALUE_PROPERTY replaces total_revenue when it is set.
CONTACT_PROPERTIES = ("email", "firstname", "lastname", "phone", "createdate", "lastmodifieddate", "hs_object_id",
                      "hs_email_optout", DEFAULT_LIFETIME_VALUE_PROPERTY)
SEARCH_RESULTS_MAX = 10_000  # results one search query can return, however it is paged
UPSERT_INPUTS_MAX = 100  # inputs one batch upsert request accepts
DEFAULT_RATE_WINDOW_SECONDS = 10.0  # HubSpot's rolling window, until a response states its own

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MILLISECOND = timedelta(milliseconds=1)


class SearchLimitError(ApiError):
    """More contacts share one millisecond of `lastmodifieddate` than one search query can return."""


def epoch_milliseconds_floor(moment: datetime) -> int:
    return (moment - EPOCH) // MILLISECOND


def epoch_milliseconds_ceil(moment: datetime) -> int:
    return -((EPOCH - moment) // MILLISECOND)


def from_epoch_milliseconds(milliseconds: int) -> datetime:
    return EPOCH + timedelta(milliseconds=milliseconds)


def email_key(email: Any) -> str | None:
    """Return the email as HubSpot matches it, trimmed and lower-cased, or None when it is not text.

    Results are matched back to records by this key, which assumes that HubSpot treats emails
    differing only in case as one contact.
    """
    if not isinstance(email, str) or not email.strip():
        return None
    return email.strip().lower()


def search_properties() -> list[str]:
    """Return CONTACT_PROPERTIES with the configured lifetime value property in place of total_revenue."""
    lifetime = lifetime_value_property()
    return [lifetime if name == DEFAULT_LIFETIME_VALUE_PROPERTY else name for name in CONTACT_PROPERTIES]


def _header_number(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _error_message(error: Any) -> str:
    """Return HubSpot's message for an error object, with the details of its nested `errors`."""
    if not isinstance(error, dict):
        return "HubSpot returned an error without a message"
    message = str(error.get("message") or error.get("category") or "HubSpot returned an error without a message")
    details = [str(item["message"]) for item in error.get("errors") or []
               if isinstance(item, dict) and item.get("message") and item.get("message") != message]
    if details:
        message += " (" + "; ".join(details) + ")"
    return message[:500]


def _named_values(error: Any) -> set[str]:
    """Return the identifiers an error object names: its `id` and the values in its `context` lists.

    HubSpot does not document which `context` keys a batch error uses to name its inputs, so
    every text value there is compared with the batch's trace IDs and emails.
    """
    names: set[str] = set()
    if not isinstance(error, dict):
        return names
    if isinstance(error.get("id"), str):
        names.add(error["id"])
    contexts = [error.get("context")] + [item.get("context") for item in error.get("errors") or []
                                         if isinstance(item, dict)]
    for context in contexts:
        if not isinstance(context, dict):
            continue
        for values in context.values():
            items = values if isinstance(values, list) else [values]
            names.update(item for item in items if isinstance(item, str))
    return names


def upsert_batches(records: list[OutboundRecord]) -> list[list[OutboundRecord]]:
    """Group records into upsert requests of at most 100, in order, with each email at most once per request.

    A later version of the same contact goes into a later request, so HubSpot applies the versions
    in the order the outbox gave them and never sees one email twice in one request.
    """
    batches: list[list[OutboundRecord]] = []
    current: list[OutboundRecord] = []
    emails: set[str | None] = set()
    for record in records:
        key = email_key(record.record_key)
        if len(current) == UPSERT_INPUTS_MAX or key in emails:
            batches.append(current)
            current, emails = [], set()
        current.append(record)
        emails.add(key)
    if current:
        batches.append(current)
    return batches


class HubSpotClient(TargetClient):
    """One HubSpot account (portal): contacts in through CRM search, contacts out through batch upsert."""

    portal_id: str = Field(
        pattern=r"^\d+$",
        description="The HubSpot account ID (portal ID), digits only. It is part of every record's identity. "
        "Set HUBSPOT_PORTAL_ID.",
    )
    access_token: str = Field(
        repr=False,
        description="A private app access token with crm.objects.contacts.read and .write. Set HUBSPOT_ACCESS_TOKEN.",
    )
    base_url: str = Field(default="https://api.hubapi.com",
                          description="API base URL: HubSpot's production endpoint, a proxy or a test server.")
    page_size: int = Field(default=100, ge=1, le=200, description="Contacts per search page; HubSpot allows 1 to 200.")
    search_requests_per_second: float = Field(
        default=4.0, gt=0,
        description="Max search requests per second this client sends, because HubSpot limits search per token.",
    )
    rate_limit_reserve: int = Field(
        default=5, ge=0,
        description="Pause once X-HubSpot-RateLimit-Remaining is at or below this many requests, "
        "leaving them to other apps of the account.",
    )

    system: ClassVar[str] = "hubspot"
    base_url_setting: ClassVar[str] = "HUBSPOT_API_BASE_URL"
    credential_settings: ClassVar[tuple[str, ...]] = ("HUBSPOT_ACCESS_TOKEN",)
    streams: ClassVar[tuple[str, ...]] = ("contacts",)
    entities: ClassVar[tuple[str, ...]] = ("contact",)

    _search_bucket: TokenBucket | None = PrivateAttr(default=None)
    _rate_window_seconds: float = PrivateAttr(default=DEFAULT_RATE_WINDOW_SECONDS)
    # The last failed response, kept because a 400's body names the contact HubSpot rejected and
    # the reason, while ApiRequestError carries only a short reason.
    _failed_response: httpx.Response | None = PrivateAttr(default=None)

    @property
    def account(self) -> str:
        # NOTE: nothing checks that the token belongs to this portal; a token of another portal
        # reads and writes that portal's contacts under this portal's ID.
        return self.portal_id

    def session_options(self) -> dict[str, Any]:
        return {"headers": {"Authorization": f"Bearer {self.access_token}"}, "throttle": self.pace,
                "should_retry": self._keep_failed_response}

    def pace(self, response: httpx.Response) -> Throttle | None:
        """Return a pause when HubSpot's rate-limit headers show few requests left, else None."""
        interval = _header_number(response, "X-HubSpot-RateLimit-Interval-Milliseconds")
        if interval and interval > 0:
            self._rate_window_seconds = interval / 1000
        window = self._rate_window_seconds

        wait, reason = 0.0, ""
        remaining = _header_number(response, "X-HubSpot-RateLimit-Remaining")
        maximum = _header_number(response, "X-HubSpot-RateLimit-Max")
        if remaining is not None and remaining <= self.rate_limit_reserve:
            if remaining <= 0 or not maximum:
                # The window rolls, so once a whole interval has passed every request in it has expired.
                wait = window
            else:
                # One request's share of the window: sending no faster than the maximum rate.
                wait = window / maximum
            reason = f"X-HubSpot-RateLimit-Remaining is {remaining} in a {window:g} s window"

        secondly_remaining = _header_number(response, "X-HubSpot-RateLimit-Secondly-Remaining")
        if secondly_remaining is not None and secondly_remaining <= 0 and wait < 1.0:
            wait, reason = 1.0, "X-HubSpot-RateLimit-Secondly-Remaining is 0"
        return Throttle(wait=wait, reason=reason) if wait > 0 else None

    def _keep_failed_response(self, response: httpx.Response) -> bool | None:
        self._failed_response = response
        return None  # the status code decides the retry

    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        self._failed_response = None
        # Without Retry-After, a 429 waits at least one rolling window, after which the window is empty.
        # NOTE: a 429 for the DAILY limit is retried the same way, although that limit resets only at
        # midnight in the account's time zone. The request then fails after its attempts.
        return self.session().request("POST", path, json=body, min_wait_on_429=self._rate_window_seconds)

    # --- Reading contacts ---------------------------------------------------------------------

    def cursor(self, stream: str, payload: Any) -> datetime | None:
        """Return the contact's `updatedAt`, else its `lastmodifieddate` property."""
        if not isinstance(payload, dict):
            return None
        moment = parse_cursor(payload.get("updatedAt"))
        properties = payload.get("properties")
        if moment is None and isinstance(properties, dict):
            moment = parse_cursor(properties.get("lastmodifieddate"))
        return moment

    def pages(self, stream: str, window: Window) -> Iterator[SourceBatch]:
        properties = search_properties()
        yield from self._search_range(epoch_milliseconds_floor(window.since), epoch_milliseconds_ceil(window.until),
                                      properties)

    def _search_range(self, since: int, until: int, properties: list[str]) -> Iterator[SourceBatch]:
        """Yield the contacts whose `lastmodifieddate` is in [since, until) milliseconds, one batch per page.

        A range that contains more contacts than one query can return is split in halves first.
        """
        # NOTE: `after` is an offset into the sorted results. A contact modified while the range is
        # being paged leaves the range and shifts the contacts after it, so one of them can be
        # skipped per such change, until the range is read again.
        query: dict[str, Any] = {
            "filterGroups": [{"filters": [
                {"propertyName": "lastmodifieddate", "operator": "GTE", "value": str(since)},
                {"propertyName": "lastmodifieddate", "operator": "LT", "value": str(until)},
            ]}],
            "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
            "properties": properties,
            "limit": self.page_size,
        }
        start, end = iso_utc(from_epoch_milliseconds(since)), iso_utc(from_epoch_milliseconds(until))
        label = f"lastmodifieddate {start} to {end}"
        page = 0
        while True:
            page += 1
            response = self._search(query)
            contacts, total, after = self._search_page(response, query.get("after"))
            if page == 1 and total > SEARCH_RESULTS_MAX:
                yield from self._split(since, until, total, properties)
                return
            yield SourceBatch(origin=f"POST {SEARCH_PATH} {label} page {page}", records=contacts,
                              fetched_at=datetime.now(timezone.utc))
            if after is None:
                return
            query = {**query, "after": after}

    def _split(self, since: int, until: int, total: int, properties: list[str]) -> Iterator[SourceBatch]:
        if until - since <= 1:
            raise SearchLimitError(
                system=self.system, account=self.account, method="POST", endpoint=SEARCH_PATH,
                reason=f"{total} contacts have lastmodifieddate {iso_utc(from_epoch_milliseconds(since))}, "
                f"more than the {SEARCH_RESULTS_MAX} results one search can return",
                fix="export these contacts from HubSpot and import the export, or read them by another property",
            )
        middle = (since + until) // 2
        log.info("hubspot portal %s: %d contacts modified from %s to %s, above the search maximum of %d; "
                 "reading the range in two halves", self.account, total, iso_utc(from_epoch_milliseconds(since)),
                 iso_utc(from_epoch_milliseconds(until)), SEARCH_RESULTS_MAX)
        yield from self._search_range(since, middle, properties)
        yield from self._search_range(middle, until, properties)

    def _search(self, query: dict[str, Any]) -> httpx.Response:
        session = self.session()
        if self._search_bucket is None:
            rate = self.search_requests_per_second
            self._search_bucket = TokenBucket(rate=rate, burst=max(1.0, rate))
        self._search_bucket.acquire(session.sleep)
        return self._post(SEARCH_PATH, query)

    def _search_page(self, response: httpx.Response, previous_after: Any) -> tuple[list[Any], int, str | None]:
        """Return the page's contacts, HubSpot's total for the query, and the `after` of the next page or None."""
        session = self.session()
        body = session.read_json(response, "POST")
        if not isinstance(body, dict) or not isinstance(body.get("results"), list):
            raise session.malformed("POST", response, 'expected a search result {"total": ..., "results": [...]}')
        total = body.get("total")
        if not isinstance(total, int) or isinstance(total, bool):
            raise session.malformed("POST", response, f"total is {total!r}, expected a whole number")

        paging = body.get("paging")
        next_page = paging.get("next") if isinstance(paging, dict) else None
        if next_page is None:
            return body["results"], total, None
        after = next_page.get("after") if isinstance(next_page, dict) else None
        if not isinstance(after, (str, int)) or isinstance(after, bool) or str(after) in ("", str(previous_after)):
            raise session.malformed("POST", response, f"paging.next.after is {after!r}, expected a token that moves on")
        return body["results"], total, str(after)

    # --- Writing contacts ---------------------------------------------------------------------

    def deliver(self, entity: str, records: list[OutboundRecord]) -> list[DeliveryResult]:
        """Upsert the contacts by email, at most 100 per request; return one result per record.

        Raises ApiAuthError when HubSpot rejects the token, and ApiRequestError on a 404 (a wrong
        base URL), because neither is a problem of the records.
        """
        if entity not in self.entities:
            raise ValueError(f"HubSpot accepts the entities {', '.join(self.entities)}, not {entity!r}")
        results: list[DeliveryResult] = []
        sendable = []
        for record in records:
            problem = self._record_problem(record)
            if problem:
                results.append(DeliveryResult(record.idempotency_key, REJECTED, message=problem))
            else:
                sendable.append(record)
        for batch in upsert_batches(sendable):
            results += self._upsert(batch)
        return results

    @staticmethod
    def _record_problem(record: OutboundRecord) -> str | None:
        """Return why a record cannot be sent, or None; HubSpot would reject it for the same reason."""
        key = email_key(record.record_key)
        if key is None or "@" not in key:
            return f"the record key {record.record_key!r} is not an email, and HubSpot contacts are upserted by email"
        if not isinstance(record.payload, dict):
            return "the payload is not an object of HubSpot contact properties"
        payload_email = record.payload.get("email")
        if payload_email is not None and email_key(payload_email) != key:
            return f"the payload's email {payload_email!r} differs from the record key {record.record_key!r}"
        return None

    def _upsert(self, batch: list[OutboundRecord]) -> list[DeliveryResult]:
        inputs = [{"idProperty": "email", "id": record.record_key.strip(), "objectWriteTraceId": record.idempotency_key,
                   "properties": record.payload} for record in batch]
        try:
            response = self._post(UPSERT_PATH, {"inputs": inputs})
        except ApiUnavailable as exc:
            log.warning("hubspot portal %s: upsert of %d contacts left for retry: %s", self.account, len(batch), exc)
            return [DeliveryResult(record.idempotency_key, RETRY, http_status=exc.status, message=str(exc))
                    for record in batch]
        except ApiAuthError:
            raise
        except ApiRequestError as exc:
            if exc.status == 404:
                raise
            return self._rejected_request(batch, exc)

        try:
            body = self.session().read_json(response, "POST")
            if not isinstance(body, dict) or not isinstance(body.get("results", []), list) \
                    or not isinstance(body.get("errors", []), list):
                raise self.session().malformed("POST", response, 'expected {"results": [...], "errors": [...]}')
        except ApiResponseError as exc:
            # Upserting by email is idempotent, so sending the batch again is safe.
            log.warning("hubspot portal %s: upsert of %d contacts left for retry: %s", self.account, len(batch), exc)
            return [DeliveryResult(record.idempotency_key, RETRY, http_status=response.status_code, message=str(exc))
                    for record in batch]
        return self._match_results(batch, body, response.status_code)

    def _rejected_request(self, batch: list[OutboundRecord], exc: ApiRequestError) -> list[DeliveryResult]:
        """Reject the records a failed request's body names, or all of them when it names none.

        Records it did not name are left for retry, which is safe whether or not HubSpot wrote
        them, because upserting by email is idempotent.
        """
        body: Any = None
        if self._failed_response is not None:
            try:
                body = self._failed_response.json()
            except ValueError:
                body = None
        message = _error_message(body) if isinstance(body, dict) else exc.reason
        named = self._records_named(batch, body)
        results = []
        for record in batch:
            if named and record.idempotency_key not in named:
                results.append(DeliveryResult(
                    record.idempotency_key, RETRY, http_status=exc.status,
                    message=f"not confirmed because HubSpot rejected another contact of the same request: {message}"))
            else:
                results.append(DeliveryResult(record.idempotency_key, REJECTED, http_status=exc.status,
                                              message=message))
        log.warning("hubspot portal %s: HubSpot rejected an upsert of %d contacts with HTTP %s (%d named)",
                    self.account, len(batch), exc.status, len(named))
        return results

    @staticmethod
    def _records_named(batch: list[OutboundRecord], error: Any) -> set[str]:
        """Return the idempotency keys of the records an error names by trace ID or by email."""
        names = _named_values(error)
        lowered = {email_key(name) for name in names}
        return {record.idempotency_key for record in batch
                if record.idempotency_key in names or email_key(record.record_key) in lowered}

    def _match_results(self, batch: list[OutboundRecord], body: dict, status: int) -> list[DeliveryResult]:
        """Map HubSpot's results and errors back to the records, by trace ID and else by email."""
        by_trace = {record.idempotency_key: record for record in batch}
        by_email = {email_key(record.record_key): record for record in batch}
        outcomes: dict[str, DeliveryResult] = {}

        for result in body.get("results", []):
            if not isinstance(result, dict) or not result.get("id"):
                continue
            properties = result.get("properties") if isinstance(result.get("properties"), dict) else {}
            record = by_trace.get(result.get("objectWriteTraceId")) or by_email.get(email_key(properties.get("email")))
            if record is not None:
                outcomes[record.idempotency_key] = DeliveryResult(
                    record.idempotency_key, DELIVERED, target_id=str(result["id"]), http_status=status,
                    details={"created": result.get("new")})

        unattributed = []
        for error in body.get("errors", []):
            named = self._records_named(batch, error)
            if not named:
                unattributed.append(_error_message(error))
            for key in named - outcomes.keys():
                outcomes[key] = DeliveryResult(key, REJECTED, http_status=status, message=_error_message(error),
                                               details={"category": error.get("category")})

        for record in batch:
            if record.idempotency_key in outcomes:
                continue
            if unattributed:
                # An error that names no contact most likely concerns the contacts without a result.
                outcomes[record.idempotency_key] = DeliveryResult(
                    record.idempotency_key, REJECTED, http_status=status, message="; ".join(unattributed)[:500])
            else:
                outcomes[record.idempotency_key] = DeliveryResult(
                    record.idempotency_key, RETRY, http_status=status,
                    message="HubSpot's response had neither a result nor an error for this contact")

        counts = {state: sum(1 for outcome in outcomes.values() if outcome.status == state)
                  for state in (DELIVERED, REJECTED, RETRY)}
        log.info("hubspot portal %s: upsert of %d contacts: %d delivered, %d rejected, %d to retry",
                 self.account, len(batch), counts[DELIVERED], counts[REJECTED], counts[RETRY])
        return [outcomes[record.idempotency_key] for record in batch]
