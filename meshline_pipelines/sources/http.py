"""HTTP machinery shared by every live client: timeouts, retries, rate-limit pacing, typed errors.

One `ApiSession` per client and account. It retries 429, 5xx and transport errors with
exponential backoff and jitter, and waits as long as `Retry-After` requests. Each API adds its own
rules as small hooks: Stripe's `Stripe-Should-Retry`, Shopify's GraphQL throttle in the body,
Amazon's per-operation rates. Errors name the system, account, endpoint, status and the setting
to fix. Requests and retries are logged by path only: query strings,
headers and bodies may carry secrets or customer data.
"""

import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


class ApiError(Exception):
    """A request to a source API failed for good. The message names where, why and what to fix."""

    def __init__(self, *, system: str, account: str, method: str, endpoint: str, reason: str,
                 status: int | None = None, fix: str | None = None):
        self.system = system
        self.account = account
        self.method = method
        self.endpoint = endpoint
        self.status = status
        self.reason = reason
        self.fix = fix
        status_text = f"HTTP {status}" if status is not None else "no response"
        message = f"{system} account {account!r}: {method} {endpoint} failed ({status_text}): {reason}"
        super().__init__(f"{message}. Fix: {fix}" if fix else message)


class ApiAuthError(ApiError):
    """The source refused the credentials (401 or 403)."""


class ApiUnavailable(ApiError):
    """The source returned 429 or 5xx, or was unreachable, on every attempt."""


class ApiRequestError(ApiError):
    """The source rejected the request itself (another 4xx): a setting or a parameter is wrong."""


class ApiResponseError(ApiError):
    """The source returned 2xx with an unreadable body: not JSON, or not the documented shape."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry. Waits double from `base_delay` up to `max_delay`, with jitter."""

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0

    def backoff(self, attempt: int) -> float:
        """Wait before retry number `attempt` (1-based): half fixed, half random, so clients spread out."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass(frozen=True)
class Throttle:
    """An API's own verdict on a response: retry it after `wait` seconds, or go on after pausing `wait`."""

    wait: float
    retry: bool = False
    reason: str = "rate limited"


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Seconds from a `Retry-After` header, given as seconds or as an HTTP date; None when absent."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, (moment - datetime.now(timezone.utc)).total_seconds())


@dataclass
class ApiSession:
    """Requests to one API for one account, with the retry and pacing rules of that API.

    `throttle` reads a response and may ask for a wait (and a retry) that the status alone does
    not show, such as a GraphQL cost throttle in a 200 body. `should_retry` may overrule the
    status-based decision, as Stripe's `Stripe-Should-Retry` header does.
    """

    system: str
    account: str
    base_url: str
    base_url_setting: str
    credential_settings: tuple[str, ...]
    headers: Mapping[str, str] = field(default_factory=dict)
    auth: httpx.Auth | None = None
    timeout: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    throttle: Callable[[httpx.Response], Throttle | None] | None = None
    should_retry: Callable[[httpx.Response], bool | None] | None = None
    transport: httpx.BaseTransport | None = None
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        self._client = httpx.Client(
            base_url=self.base_url, headers=dict(self.headers), auth=self.auth, timeout=self.timeout,
            transport=self.transport, follow_redirects=True,
        )

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                json: Any = None, data: Mapping[str, str] | None = None,
                headers: Mapping[str, str] | None = None, min_wait_on_429: float = 0.0) -> httpx.Response:
        """Send one request and return its 2xx response, retrying the failures the API marks as temporary.

        `min_wait_on_429` is the shortest wait after a 429 without `Retry-After`, for APIs whose
        documented rate is slower than the backoff.
        """
        endpoint = httpx.URL(path).path or path
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._client.request(method, path, params=params, json=json, data=data, headers=headers)
            except httpx.TimeoutException as exc:
                self._wait_or_raise(method, endpoint, attempt, None, f"timed out after {self.timeout:g} s",
                                    self.retry.backoff(attempt), exc)
                continue
            except httpx.TransportError as exc:
                self._wait_or_raise(method, endpoint, attempt, None, f"{type(exc).__name__}: {exc}",
                                    self.retry.backoff(attempt), exc)
                continue

            verdict = self.throttle(response) if self.throttle and response.is_success else None
            if verdict and verdict.retry:
                self._wait_or_raise(method, endpoint, attempt, response.status_code, verdict.reason,
                                    verdict.wait, None)
                continue
            if response.is_success:
                if verdict and verdict.wait > 0:
                    log.info("%s %s: pausing %.1f s for the rate limit (%s)", self.system, endpoint,
                             verdict.wait, verdict.reason)
                    self.sleep(verdict.wait)
                return response

            if self._retryable(response):
                wait = retry_after_seconds(response)
                if wait is None:
                    wait = self.retry.backoff(attempt)
                    if response.status_code == 429:
                        wait = max(wait, min_wait_on_429)
                self._wait_or_raise(method, endpoint, attempt, response.status_code,
                                    _reason(response), wait, None)
                continue
            raise self._final_error(method, endpoint, response)

    def get_json(self, path: str, *, params: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None) -> Any:
        return self.read_json(self.request("GET", path, params=params, headers=headers), "GET")

    def read_json(self, response: httpx.Response, method: str) -> Any:
        """Parse the body as JSON, or raise an ApiResponseError naming the endpoint and how the body begins."""
        try:
            return response.json()
        except ValueError:
            raise self.malformed(method, response, f"the body is not JSON; it begins {response.text[:80]!r}") from None

    def malformed(self, method: str, response: httpx.Response, reason: str) -> ApiResponseError:
        return ApiResponseError(
            system=self.system, account=self.account, method=method, endpoint=response.request.url.path,
            status=response.status_code, reason=reason,
            fix=f"check that {self.base_url_setting} ({self.base_url}) points at the {self.system} API "
            "and not at a proxy or login page",
        )

    def _retryable(self, response: httpx.Response) -> bool:
        verdict = self.should_retry(response) if self.should_retry else None
        if verdict is not None:
            return verdict
        return response.status_code in RETRYABLE_STATUSES

    def _wait_or_raise(self, method: str, endpoint: str, attempt: int, status: int | None, reason: str,
                       wait: float, cause: Exception | None) -> None:
        if attempt >= self.retry.max_attempts:
            raise ApiUnavailable(
                system=self.system, account=self.account, method=method, endpoint=endpoint, status=status,
                reason=f"{reason}, after {attempt} attempts",
                fix=f"retry later; if it persists, check {self.base_url_setting} ({self.base_url}) "
                "and the system's status page",
            ) from cause
        log.warning("%s account %r: %s %s %s; retry %d of %d in %.1f s", self.system, self.account, method,
                    endpoint, f"HTTP {status} ({reason})" if status else reason, attempt,
                    self.retry.max_attempts - 1, wait)
        self.sleep(wait)

    def _final_error(self, method: str, endpoint: str, response: httpx.Response) -> ApiError:
        status = response.status_code
        common = dict(system=self.system, account=self.account, method=method, endpoint=endpoint, status=status,
                      reason=_reason(response))
        if status in (401, 403):
            return ApiAuthError(**common, fix=f"check {' and '.join(self.credential_settings)}: the credentials "
                                "are wrong, expired or lack the scope this endpoint needs")
        if status == 404:
            return ApiRequestError(**common, fix=f"check {self.base_url_setting} ({self.base_url}) and the account "
                                   "settings: the endpoint or the account does not exist there")
        return ApiRequestError(**common, fix="check the request parameters and the API version in the settings")


def _reason(response: httpx.Response) -> str:
    """Return a short reason from the body: the API's own error message when it has one, never the whole body."""
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or "no reason given"
    message = None
    if isinstance(body, dict):
        error = body.get("error") or body.get("errors")
        if isinstance(error, dict):
            message = error.get("message") or error.get("code")
            if not message:
                # Shopify's validation errors: {"errors": {"available": ["must be a number"]}}.
                message = "; ".join(f"{key}: {', '.join(map(str, value)) if isinstance(value, list) else value}"
                                    for key, value in error.items())
        elif isinstance(error, list) and error and isinstance(error[0], dict):
            message = error[0].get("message") or error[0].get("code")
        elif isinstance(error, str):
            message = error
        if not message and isinstance(body.get("message"), str):
            # HubSpot and others put their error text in a top-level `message`.
            message = body["message"]
    text = str(message) if message else (response.reason_phrase or "no reason given")
    return text[:200]
