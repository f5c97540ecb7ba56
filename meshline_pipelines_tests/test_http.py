"""The shared HTTP machinery: retries, waits, pacing hooks and errors that name what to fix."""

import logging

import httpx
import pytest

from meshline_pipelines.sources.http import (
    ApiAuthError, ApiRequestError, ApiResponseError, ApiSession, ApiUnavailable, RetryPolicy, Throttle,
)

SECRET = "sk_test_not_to_be_shown"


class Script:
    """A transport that returns, for each request, the next scripted response or raises the scripted error."""

    def __init__(self, *steps):
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


def session(script: Script, waits: list, **options) -> ApiSession:
    return ApiSession(
        system="stripe", account="acct_1", base_url="https://api.stripe.test", base_url_setting="STRIPE_API_BASE_URL",
        credential_settings=("STRIPE_API_KEY",), headers={"Authorization": f"Bearer {SECRET}"},
        transport=httpx.MockTransport(script), sleep=waits.append, **options,
    )


def ok(body=None) -> httpx.Response:
    return httpx.Response(200, json=body if body is not None else {"object": "list", "data": []})


def test_429_waits_as_long_as_retry_after_says():
    waits = []
    script = Script(httpx.Response(429, headers={"Retry-After": "7"}, json={"error": {"message": "Too many requests"}}),
                    ok())

    response = session(script, waits).request("GET", "/v1/charges")

    assert response.status_code == 200
    assert waits == [7.0]
    assert len(script.requests) == 2


def test_5xx_is_retried_with_growing_backoff_then_succeeds():
    waits = []
    script = Script(httpx.Response(503), httpx.Response(502), ok())

    session(script, waits, retry=RetryPolicy(max_attempts=5, base_delay=2.0)).request("GET", "/v1/charges")

    assert len(waits) == 2
    assert 1.0 <= waits[0] <= 2.0
    assert 2.0 <= waits[1] <= 4.0


def test_timeouts_and_connection_errors_are_retried():
    waits = []
    script = Script(httpx.ReadTimeout("slow"), httpx.ConnectError("refused"), ok())

    response = session(script, waits).request("GET", "/v1/charges")

    assert response.status_code == 200
    assert len(waits) == 2


def test_api_down_error_names_endpoint_and_setting():
    waits = []
    script = Script(*[httpx.Response(503) for _ in range(3)])

    with pytest.raises(ApiUnavailable) as failure:
        session(script, waits, retry=RetryPolicy(max_attempts=3)).request("GET", "/v1/charges", params={"limit": 1})

    message = str(failure.value)
    assert "stripe" in message
    assert "acct_1" in message
    assert "GET /v1/charges" in message
    assert "HTTP 503" in message
    assert "after 3 attempts" in message
    assert "STRIPE_API_BASE_URL" in message
    assert len(waits) == 2


def test_auth_error_names_setting_not_secret(caplog):
    caplog.set_level(logging.DEBUG)
    script = Script(httpx.Response(401, json={"error": {"message": "Invalid API Key provided: sk_test_****"}}))

    with pytest.raises(ApiAuthError) as failure:
        session(script, []).request("GET", "/v1/charges")

    assert "STRIPE_API_KEY" in str(failure.value)
    assert "HTTP 401" in str(failure.value)
    assert SECRET not in str(failure.value)
    assert SECRET not in caplog.text


def test_other_client_errors_are_not_retried():
    waits = []
    script = Script(httpx.Response(400, json={"error": {"message": "Invalid timestamp"}}))

    with pytest.raises(ApiRequestError, match="Invalid timestamp"):
        session(script, waits).request("GET", "/v1/charges")

    assert waits == []


def test_non_json_body_names_base_url_setting():
    script = Script(httpx.Response(200, text="<html>Sign in to continue</html>"))
    api = session(script, [])

    with pytest.raises(ApiResponseError) as failure:
        api.get_json("/v1/charges")

    assert "/v1/charges" in str(failure.value)
    assert "STRIPE_API_BASE_URL" in str(failure.value)
    assert "<html>Sign in" in str(failure.value)


def test_should_retry_hook_overrules_status():
    waits = []
    script = Script(httpx.Response(500, headers={"Stripe-Should-Retry": "false"}))

    with pytest.raises(ApiRequestError):
        session(script, waits, should_retry=lambda r: r.headers.get("Stripe-Should-Retry") == "true"
                if "Stripe-Should-Retry" in r.headers else None).request("GET", "/v1/charges")

    assert waits == []


def test_throttle_hook_retries_and_pauses():
    waits = []
    throttled = httpx.Response(200, json={"errors": [{"message": "Throttled"}]})
    script = Script(throttled, ok({"data": "fine"}))

    def throttle(response: httpx.Response) -> Throttle | None:
        if "errors" in response.json():
            return Throttle(wait=4.0, retry=True, reason="query cost above the bucket")
        return Throttle(wait=0.5)

    body = session(script, waits, throttle=throttle).get_json("/graphql")

    assert body == {"data": "fine"}
    assert waits == [4.0, 0.5]


def test_retry_after_as_an_http_date_is_honoured():
    waits = []
    script = Script(httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), ok())

    session(script, waits).request("GET", "/v1/charges")

    assert waits == [0.0]
