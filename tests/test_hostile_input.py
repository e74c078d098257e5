"""Hostile and odd input: never a 5xx, never a hang, always audio or a clear 4xx."""

from __future__ import annotations

import pytest
from numeric_edges import SYNTHESIS_ROUTES, cases, numeric_fields, raw_body
from test_api import scrape

SPEECH = "/v1/audio/speech"
NUMERIC_CASES = cases()
JSON = {"Content-Type": "application/json"}

ODD_TEXTS = {
    "ssml": "<speak><prosody rate='x-fast'>Hello <break time='3s'/> world</prosody></speak>",
    "markup_injection": "<script>alert(1)</script> & &amp; &#x41; ]]>",
    "punctuation_only": "!!! ??? ... ,,, ;;; ---",
    "emoji_only": "😀🎉🔥👍🏽👨‍👩‍👧",
    "digits_only": "1234567890 3.14159 -42 1e10 0x1F",
    "mixed_scripts": "Hello 你好 Привет مرحبا こんにちは 안녕 שלום",
    "control_mixed": "tab\there\x1b[31mred\x1b[0m\u202eright-to-left\u200b",
    "lone_surrogate_escape": "\\ud800 written as text",
    "very_long_word": "a" * 2000,
    "repeated_newlines": "line\n" * 500,
    "combining_marks": "Z̷͎̓a̶̰̔l̸̙̐g̴̲̈́o̵͍͒",
}


@pytest.mark.parametrize("name", ODD_TEXTS)
async def test_odd_texts_get_audio_or_a_clear_4xx(client, name):
    response = await client.post(SPEECH, json={"input": ODD_TEXTS[name], "response_format": "pcm"})
    assert response.status in (200, 400), await response.text()
    if response.status == 400:
        assert (await response.json())["error"]["message"]


@pytest.mark.parametrize(
    "text",
    [
        ("The quick brown fox jumps over the lazy dog. " * 100)[:4096],
        ("今天天气很好，我们去公园散步吧。" * 300)[:4096],
        ("Price 价格 123元 and 25℃ today. " * 200)[:4096],
    ],
    ids=["en", "zh", "mixed"],
)
async def test_maximum_length_input_in_every_language(client, text):
    assert len(text) == 4096
    response = await client.post(SPEECH, json={"input": text, "response_format": "pcm"})
    assert response.status == 200
    assert float(response.headers["X-TTS-Audio-Seconds"]) > 30


async def test_raw_lone_surrogate_in_json_is_rejected_or_spoken(client):
    body = b'{"input": "bad \\ud800 surrogate", "response_format": "pcm"}'
    response = await client.post(SPEECH, data=body, headers={"Content-Type": "application/json"})
    assert response.status in (200, 400)


MALFORMED_BODIES = [
    b"",
    b"null",
    b"0",
    b'"text"',
    b"{" * 10,
    b'{"input": "a", "input": 5}',
    b"\x00\x01\x02",
    b"{}" * 1000,
    b"[" * 60_000,  # deeper than Python's recursion limit, within TTS_MAX_BODY_BYTES
    b"9" * 5000,  # a bare integer past Python's digit limit
    b"NaN",
]


@pytest.mark.parametrize("body", MALFORMED_BODIES)
async def test_malformed_bodies_are_400(client, body):
    response = await client.post(SPEECH, data=body, headers={"Content-Type": "application/json"})
    assert 400 <= response.status < 500
    assert "error" in await response.json()


@pytest.mark.parametrize(
    "model", ["tts\x05", "a\r\nX-Injected: 1", "\u009a\u00a9y", "\udae9\ude7b", "m" * 129, "-leading-dash"]
)
async def test_model_names_unsafe_for_a_header_are_400(client, model):
    # The model is echoed in X-TTS-Model; found by schemathesis: a control character in it
    # made aiohttp refuse the response headers and the client waited for nothing.
    response = await client.post(SPEECH, json={"model": model, "input": "hi", "response_format": "pcm"})
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["param"] == "model"


@pytest.mark.parametrize("model", ["tts-1", "tts-1-hd", "gpt-4o-mini-tts", "org/custom:v2.1", ""])
async def test_ordinary_model_names_are_echoed(client, model):
    response = await client.post(SPEECH, json={"model": model, "input": "hi", "response_format": "pcm"})
    assert response.status == 200
    assert response.headers["X-TTS-Model"] == (model or "tts-1")


def test_numeric_edge_cases_cover_every_numeric_field_of_every_route():
    fields = {(route, field) for route, field, _ in NUMERIC_CASES}
    assert {route for route, _ in fields} == set(SYNTHESIS_ROUTES)
    assert ("/v1/audio/speech", "speed") in fields and ("/tts", "speed") in fields
    assert sum(1 for *_, edge in NUMERIC_CASES if edge.valid) >= 2 * len(fields)  # both ways are tried


@pytest.mark.parametrize(
    ("route", "field", "edge"),
    NUMERIC_CASES,
    ids=[f"{route}-{field}-{edge.label}" for route, field, edge in NUMERIC_CASES],
)
async def test_numeric_edge_cases_get_audio_or_a_400_naming_the_field(client, route, field, edge):
    response = await client.post(route, data=raw_body(route, field, edge), headers=JSON)
    if edge.valid:
        assert response.status == 200, await response.text()
        assert len(await response.read()) > 0
        return
    assert response.status == 400, (edge.label, response.status, await response.text())
    error = (await response.json())["error"]
    assert error["param"] == field and error["code"] == "invalid_request"
    schema = numeric_fields(route)[field]  # the message names the field and what it allows
    assert field in error["message"] and f"{schema['minimum']} to {schema['maximum']}" in error["message"]


async def test_the_same_service_still_serves_after_all_that(client):
    """Every hostile input above against ONE service, then it must still answer with audio and
    must have answered none of it with a 5xx."""
    for text in ODD_TEXTS.values():
        await (await client.post(SPEECH, json={"input": text, "response_format": "pcm"})).read()
    for body in MALFORMED_BODIES:
        await (await client.post(SPEECH, data=body, headers=JSON)).read()
    for route, field, edge in NUMERIC_CASES:
        await (await client.post(route, data=raw_body(route, field, edge), headers=JSON)).read()
    response = await client.post(SPEECH, json={"input": "still fine", "response_format": "pcm"})
    assert response.status == 200 and len(await response.read()) > 0
    served: dict[str, float] = {}
    for (name, labels), value in (await scrape(client)).items():
        if name == "tts_requests_total" and dict(labels)["route"] in SYNTHESIS_ROUTES:
            served[dict(labels)["code"]] = served.get(dict(labels)["code"], 0) + value
    assert sum(served.values()) == len(ODD_TEXTS) + len(MALFORMED_BODIES) + len(NUMERIC_CASES) + 1
    assert not [code for code in served if not code.startswith(("2", "4"))], served
