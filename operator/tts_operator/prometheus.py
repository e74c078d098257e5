"""Poll mode: read a TTSService's p99 latency from the Prometheus HTTP API.

Anything but a clean numeric answer -- Prometheus down, slow, an error status, garbage,
an empty result, NaN -- is "no data" with a reason, never a number to scale on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import aiohttp

from .builders import p99_expression

QUERY_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Reading:
    p99_s: float | None
    problem: str | None = None  # why there is no value


async def query_p99(prometheus_url: str, name: str, namespace: str) -> Reading:
    query = p99_expression(name, namespace)
    try:
        timeout = aiohttp.ClientTimeout(total=QUERY_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(
                prometheus_url.rstrip("/") + "/api/v1/query", params={"query": query}
            ) as resp:
                if resp.status != 200:
                    return Reading(None, f"Prometheus answered HTTP {resp.status}")
                body = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return Reading(None, f"Prometheus unreachable or invalid answer: {type(exc).__name__}: {exc}")
    try:
        if body.get("status") != "success":
            return Reading(None, f"Prometheus query failed: {body.get('error', body.get('status'))}")
        result = body["data"]["result"]
        if not result:
            return Reading(None, "no latency samples yet (no traffic, or not scraped)")
        value = float(result[0]["value"][1])
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        return Reading(None, f"unexpected Prometheus answer: {type(exc).__name__}")
    if math.isnan(value) or math.isinf(value):
        return Reading(None, "p99 is undefined (no requests in the window)")
    return Reading(value)
