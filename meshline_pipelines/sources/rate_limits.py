"""Client-side pacing: a token bucket per API operation, sized like the API's own usage plan."""

import time
from collections.abc import Callable


class TokenBucket:
    """Allows `burst` requests at once, then one request per `1 / rate` seconds.

    `acquire` sleeps until a token is free. The bucket counts a wait as time that has passed even
    when the clock has not moved, so a test that records waits instead of sleeping gets the same
    waits as a real run.
    """

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
        if rate <= 0:
            raise ValueError(f"rate must be above 0 requests per second, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1 request, got {burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = self.burst
        self._updated = clock()

    def acquire(self, sleep: Callable[[float], None]) -> float:
        """Take one token, sleeping first when none is free, and return the seconds slept."""
        now = self._refill()
        wait = 0.0
        if self._tokens < 1:
            wait = (1 - self._tokens) / self.rate
            sleep(wait)
            self._tokens = 1.0
            self._updated = now + wait
        self._tokens -= 1
        return wait

    def set_rate(self, rate: float) -> None:
        """Change the refill rate from now on. Tokens earned at the old rate are kept."""
        if rate <= 0:
            raise ValueError(f"rate must be above 0 requests per second, got {rate}")
        self._refill()
        self.rate = float(rate)

    def _refill(self) -> float:
        # The bucket's time is the clock, or the end of the last wait when a recorded sleep did not move the clock.
        now = max(self._clock(), self._updated)
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        return now
