"""Poll mode: read a TTSService's p99 latency from the Prometheus HTTP API.

Anything but a clean numeric answer -- Prometheus down, slow, an error status, garbage,
an empty result -- is "no data" with a reason, never a number to scale on.  One case is
told apart: when the p99 is undefined because the service is scraped but received no
requests in the window, it is *idle* (p99 reported as 0), which lets an idle service
scale in; a service that is not scraped at all stays "no data".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import aiohttp

from .builders import DEFAULT_WINDOW, p99_expression, request_rate_expression

QUERY_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Reading:
    p99_s: float | None
    problem: str | None = None  # why there is no value


async def _instant(session: aiohttp.ClientSession, url: str, query: str) -> tuple[float | None, str | None]:
    """One instant query: (value, None), (None, None) for an empty result, or (None, problem)."""
    try:
        async with session.get(url.rstrip("/") + "/api/v1/query", params={"query": query}) as resp:
            if resp.status != 200:
                return None, f"Prometheus answered HTTP {resp.status}"
            body = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return None, f"Prometheus unreachable or invalid answer: {type(exc).__name__}: {exc}"
    try:
        if body.get("status") != "success":
            return None, f"Prometheus query failed: {body.get('error', body.get('status'))}"
        result = body["data"]["result"]
        return (float(result[0]["value"][1]) if result else None), None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        return None, f"unexpected Prometheus answer: {type(exc).__name__}"


async def query_p99(prometheus_url: str, name: str, namespace: str, window: str = DEFAULT_WINDOW) -> Reading:
    """The service's p99 over ``window``; 0 when scraped but idle; no value (with a reason) otherwise."""
    timeout = aiohttp.ClientTimeout(total=QUERY_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        p99, problem = await _instant(session, prometheus_url, p99_expression(name, namespace, window))
        if problem:
            return Reading(None, problem)
        if p99 is not None and not (math.isnan(p99) or math.isinf(p99)):
            return Reading(p99)
        rate, problem = await _instant(
            session, prometheus_url, request_rate_expression(name, namespace, window)
        )
    if problem:
        return Reading(None, problem)
    if rate is None:
        return Reading(None, "no latency samples: the service is not scraped (yet)")
    if rate == 0:
        return Reading(0.0)  # scraped, but idle: nothing is slow
    return Reading(None, "p99 is undefined although requests arrive")
