"""Token buckets: the arithmetic of a rate limit, sans-IO (the caller passes `now`).

A bucket holds up to `burst` tokens and refills at `per_second`. A request takes one token; when
none is left, the answer is how long until one will be, which is what `Retry-After` says. State is
two floats, so a shared store (Redis) can keep the same state and run the same arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Rate", "retry_after_header", "take"]


@dataclass(frozen=True, slots=True)
class Rate:
    """A limit: at most `burst` at once, refilled at `per_second` (so `per_second * 60` a minute)."""

    burst: int
    per_second: float

    def __post_init__(self) -> None:
        if self.burst < 1:
            raise ValueError("a rate's burst must be at least 1")
        if not self.per_second > 0 or math.isinf(self.per_second):
            raise ValueError("a rate's per_second must be positive and finite")

    @classmethod
    def per_minute(cls, count: int, *, burst: int | None = None) -> Rate:
        """`count` a minute, bursts of `burst` (default: `count`)."""
        return cls(burst=count if burst is None else burst, per_second=count / 60.0)

    @classmethod
    def per_hour(cls, count: int, *, burst: int | None = None) -> Rate:
        return cls(burst=count if burst is None else burst, per_second=count / 3600.0)


@dataclass(slots=True)
class Bucket:
    """A bucket's state: tokens left at `updated` (in the caller's clock)."""

    tokens: float
    updated: float


def take(bucket: Bucket, rate: Rate, now: float) -> float:
    """Take one token at `now`: 0.0 when allowed (the token is taken), else the seconds to wait.

    A refused take changes nothing, so retrying early keeps getting the true wait. A clock that
    steps back (another process's clock, a test's) never adds tokens.
    """
    elapsed = now - bucket.updated
    if elapsed > 0:
        bucket.tokens = min(float(rate.burst), bucket.tokens + elapsed * rate.per_second)
        bucket.updated = now
    if bucket.tokens >= 1.0:
        bucket.tokens -= 1.0
        return 0.0
    return (1.0 - bucket.tokens) / rate.per_second


def new_bucket(rate: Rate, now: float) -> Bucket:
    return Bucket(float(rate.burst), now)


def retry_after_header(wait: float) -> int:
    """Whole seconds for `Retry-After` and `retryAfter`: rounded up, at least 1 (0 would invite a retry storm)."""
    return max(1, math.ceil(wait))
