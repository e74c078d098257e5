"""Optional bearer-token authentication."""

from __future__ import annotations

import openai
import pytest
from service_process import running_service
from tts_service.auth import Authenticator, load_api_keys
from tts_service.errors import Unauthorized
from tts_service.settings import Settings, SettingsError

SPEECH = "/v1/audio/speech"
BODY = {"input": "secret speech", "response_format": "pcm"}


async def test_auth_is_off_by_default(client):
    assert (await client.post(SPEECH, json=BODY)).status == 200


async def test_api_routes_need_a_valid_key(make_client):
    client = await make_client(api_keys="k1, k2")
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic k1"},
        {"Authorization": "Bearer "},
    ):
        response = await client.post(SPEECH, json=BODY, headers=headers)
        assert response.status == 401
        error = (await response.json())["error"]
        assert error["code"] == "invalid_api_key" and "Bearer" in response.headers["WWW-Authenticate"]
    for key in ("k1", "k2"):
        assert (
            await client.post(SPEECH, json=BODY, headers={"Authorization": f"Bearer {key}"})
        ).status == 200
    assert (await client.get("/v1/voices")).status == 401
    # Probes and metrics stay open, and the refusals are counted.
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await client.get(path)).status == 200
    metrics = await (await client.get("/metrics")).text()
    assert 'tts_rejected_total{reason="invalid_api_key"} 5.0' in metrics


async def test_probes_can_be_protected_too(make_client):
    client = await make_client(api_keys="k1", auth_probes=True)
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers={"Authorization": "Bearer k1"})).status == 200


def test_keys_file(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# comment\nalpha\n\n beta \n")
    loaded = load_api_keys(Settings(api_keys="gamma", api_keys_file=str(keys)))
    assert loaded == (b"gamma", b"alpha", b"beta")
    with pytest.raises(SettingsError, match="TTS_API_KEYS_FILE"):
        load_api_keys(Settings(api_keys_file=str(tmp_path / "missing")))


def test_authenticator_unit():
    auth = Authenticator((b"abc",), protect_probes=False)
    auth.check("/metrics", None)
    auth.check(SPEECH, "Bearer abc")
    with pytest.raises(Unauthorized):
        auth.check(SPEECH, "Bearer abd")
    assert not Authenticator((), protect_probes=True).enabled


def test_openai_sdk_sends_its_api_key_as_the_bearer_token(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("sdk-key\n")
    with running_service(TTS_API_KEYS_FILE=str(keys)) as service:
        good = openai.OpenAI(base_url=service.url + "/v1", api_key="sdk-key", max_retries=0)
        audio = good.audio.speech.create(
            model="tts-1", voice="alloy", input="authorized", response_format="pcm"
        )
        assert len(audio.content) > 1000
        bad = openai.OpenAI(base_url=service.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.audio.speech.create(model="tts-1", voice="alloy", input="denied")


def test_unreadable_keys_file_fails_start_up(tmp_path):
    import os
    import subprocess
    import sys

    from service_process import free_port

    result = subprocess.run(
        [sys.executable, "-m", "tts_service"],
        env={**os.environ, "TTS_API_KEYS_FILE": str(tmp_path / "missing"), "TTS_PORT": str(free_port())},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "TTS_API_KEYS_FILE" in result.stderr
