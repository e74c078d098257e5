"""Poll mode: read a TTSService's demand (:mod:`.promql`) from the Prometheus HTTP API.

Anything but a clean numeric answer -- Prometheus down, slow, an error status, garbage, NaN, an
empty result -- is "no data" with a reason, never a number to scale on.  The expression
itself tells an idle service (scraped, no requests: 0, so it can scale in) from one that is not
scraped at all (no series: no data).
"""

from __future__ import annotations

import math

import aiohttp

from .autoscaler import Reading

QUERY_TIMEOUT_S = 5.0


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


async def query_demand(prometheus_url: str, expression: str) -> Reading:
    """The demand ``expression`` evaluates to now, or no value with the reason."""
    timeout = aiohttp.ClientTimeout(total=QUERY_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        value, problem = await _instant(session, prometheus_url, expression)
    if problem:
        return Reading(None, problem)
    if value is None:
        return Reading(None, "no samples: the service is not scraped (yet)")
    if math.isnan(value):
        return Reading(None, "the signal is undefined (NaN)")
    if value < 0:
        return Reading(None, f"the signal is negative ({value:g})")
    return Reading(value)
