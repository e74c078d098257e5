"""Poll mode against a misbehaving Prometheus: no number from bad data, a reason instead.

The demand expression itself (idle reads 0, not scraped reads nothing) is evaluated by the real
promtool in test_promql.py; here the HTTP side: every way an answer can be unusable."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from tts_operator.prometheus import query_demand
from tts_operator.promql import demand_expression
from tts_operator.spec import parse_spec

EXPRESSION = demand_expression("demo", "default", parse_spec({})["autoscaling"])


def vector(value: str) -> dict:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": {"namespace": "default"}, "value": [0, value]}],
        },
    }


EMPTY = {"status": "success", "data": {"resultType": "vector", "result": []}}


async def serve(aiohttp_server, answer, status=200, delay=0.0, seen=None):
    async def query(request: web.Request) -> web.Response:
        if seen is not None:
            seen.append(request.query["query"])
        await asyncio.sleep(delay)
        body = answer if isinstance(answer, str) else json.dumps(answer)
        return web.Response(text=body, status=status, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("/"))


async def test_a_value_from_the_expression_given(aiohttp_server):
    seen: list[str] = []
    url = await serve(aiohttp_server, vector("1.5"), seen=seen)
    reading = await query_demand(url, EXPRESSION)
    assert reading.demand == 1.5 and reading.problem is None
    assert seen == [EXPRESSION]


async def test_idle_reads_as_zero(aiohttp_server):
    url = await serve(aiohttp_server, vector("0"))
    assert (await query_demand(url, EXPRESSION)).demand == 0.0


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        (dict(answer="<html>not json</html>"), "invalid answer"),
        (dict(answer="{}", status=500), "HTTP 500"),
        (dict(answer={"status": "error", "error": "bad query"}), "bad query"),
        (dict(answer={"status": "success", "data": {"result": [{"value": "garbage"}]}}), "unexpected"),
        (dict(answer=vector("not-a-number")), "unexpected"),
        (dict(answer=[1, 2]), "unexpected"),
        (dict(answer=EMPTY), "not scraped"),
        (dict(answer=vector("NaN")), "undefined"),
        (dict(answer=vector("-2")), "negative"),
    ],
)
async def test_bad_answers_give_no_value_and_a_reason(aiohttp_server, kwargs, problem):
    url = await serve(aiohttp_server, **kwargs)
    reading = await query_demand(url, EXPRESSION)
    assert reading.demand is None and problem in reading.problem


async def test_unreachable_and_slow(aiohttp_server, monkeypatch):
    assert "unreachable" in (await query_demand("http://127.0.0.1:9", EXPRESSION)).problem
    monkeypatch.setattr("tts_operator.prometheus.QUERY_TIMEOUT_S", 0.2)
    url = await serve(aiohttp_server, vector("1.0"), delay=2.0)
    reading = await query_demand(url, EXPRESSION)
    assert reading.demand is None and "Timeout" in reading.problem
