"""Poll mode against a misbehaving Prometheus: no number from bad data, a reason instead."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from tts_operator.prometheus import query_p99


def vector(value: str) -> dict:
    return {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, value]}]},
    }


EMPTY = {"status": "success", "data": {"resultType": "vector", "result": []}}


async def serve(aiohttp_server, p99_answer, rate_answer=EMPTY, status=200, delay=0.0):
    async def query(request: web.Request) -> web.Response:
        await asyncio.sleep(delay)
        answer = p99_answer if request.query["query"].startswith("histogram_quantile") else rate_answer
        body = answer if isinstance(answer, str) else json.dumps(answer)
        return web.Response(text=body, status=status, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("/"))


async def test_a_value(aiohttp_server):
    url = await serve(aiohttp_server, vector("1.5"))
    reading = await query_p99(url, "demo", "default")
    assert reading.p99_s == 1.5 and reading.problem is None


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        (dict(p99_answer="<html>not json</html>"), "invalid answer"),
        (dict(p99_answer="{}", status=500), "HTTP 500"),
        (dict(p99_answer={"status": "error", "error": "bad query"}), "bad query"),
        (dict(p99_answer={"status": "success", "data": {"result": [{"value": "garbage"}]}}), "unexpected"),
        (dict(p99_answer=vector("not-a-number")), "unexpected"),
        (dict(p99_answer=EMPTY, rate_answer=EMPTY), "not scraped"),
        (dict(p99_answer=vector("NaN"), rate_answer=vector("3")), "undefined"),
    ],
)
async def test_bad_answers_give_no_value_and_a_reason(aiohttp_server, kwargs, problem):
    url = await serve(aiohttp_server, **kwargs)
    reading = await query_p99(url, "demo", "default")
    assert reading.p99_s is None and problem in reading.problem


async def test_idle_service_reads_as_zero(aiohttp_server):
    url = await serve(aiohttp_server, vector("NaN"), rate_answer=vector("0"))
    assert (await query_p99(url, "demo", "default")).p99_s == 0.0


async def test_unreachable_and_slow(aiohttp_server, monkeypatch):
    assert "unreachable" in (await query_p99("http://127.0.0.1:9", "demo", "default")).problem
    monkeypatch.setattr("tts_operator.prometheus.QUERY_TIMEOUT_S", 0.2)
    url = await serve(aiohttp_server, vector("1.0"), delay=2.0)
    reading = await query_p99(url, "demo", "default")
    assert reading.p99_s is None and "Timeout" in reading.problem
