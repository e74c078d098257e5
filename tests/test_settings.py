"""Settings: one typed object read from env, written back to env, validated with clear errors."""

from __future__ import annotations

import pytest
from tts_service.settings import SETTINGS_FIELDS, Settings, SettingsError, env_name


def test_defaults_are_the_write_ups_values():
    s = Settings.from_env({})
    assert s.engine == "espeak"
    assert s.max_batch_size == 8
    # 80 ms is now an upper bound, waited only while requests overlap (#18); the continuous
    # scheduler admits rows at every token step and waits for nothing.
    assert s.max_wait_ms == 80 and s.scheduler == "continuous"
    assert s.max_input_chars == 4096
    assert s.host == "127.0.0.1" and s.port == 8080


def test_reads_every_field_from_prefixed_env():
    env = {
        "TTS_HOST": "0.0.0.0",
        "TTS_PORT": "9000",
        "TTS_ENGINE": "chattts",
        "TTS_MAX_BATCH_SIZE": "16",
        "TTS_MAX_WAIT_MS": "12.5",
        "TTS_MAX_QUEUE_SIZE": "10",
        "TTS_REQUEST_TIMEOUT_S": "3",
        "TTS_MAX_INPUT_CHARS": "100",
        "TTS_DEFAULT_VOICE": "cmn",
        "TTS_WARMUP": "false",
        "TTS_LOG_LEVEL": "debug",
    }
    s = Settings.from_env(env)
    assert (s.host, s.port, s.engine, s.max_batch_size) == ("0.0.0.0", 9000, "chattts", 16)
    assert (s.max_wait_ms, s.max_queue_size, s.request_timeout_s) == (12.5, 10, 3.0)
    assert (s.max_input_chars, s.default_voice, s.warmup, s.log_level) == (100, "cmn", False, "DEBUG")


def test_round_trips_through_env():
    s = Settings(port=1234, max_wait_ms=2.5, warmup=False, default_voice="en-us+f2")
    env = s.to_env()
    assert set(env) == {env_name(f) for f in SETTINGS_FIELDS}
    assert all(key.startswith("TTS_") and isinstance(value, str) for key, value in env.items())
    assert Settings.from_env(env) == s


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("TTS_ENGINE", "piper", "one of espeak, chattts"),
        ("TTS_MAX_BATCH_SIZE", "0", "an integer from 1 to 256"),
        ("TTS_MAX_BATCH_SIZE", "eight", "an integer from 1 to 256"),
        ("TTS_MAX_WAIT_MS", "-1", "a number from 0 to 10000"),
        ("TTS_MAX_WAIT_MS", "nan", "a number from 0 to 10000"),
        ("TTS_PORT", "70000", "an integer from 1 to 65535"),
        ("TTS_WARMUP", "maybe", "true or false"),
        ("TTS_LOG_LEVEL", "LOUD", "one of DEBUG, INFO, WARNING, ERROR"),
    ],
)
def test_invalid_values_name_the_variable_and_what_is_allowed(variable, value, allowed):
    with pytest.raises(SettingsError) as excinfo:
        Settings.from_env({variable: value})
    message = str(excinfo.value)
    assert "\n" not in message
    assert variable in message and repr(value) in message and allowed in message


def test_replace_validates_like_env():
    assert Settings().replace(max_batch_size=4).max_batch_size == 4
    with pytest.raises(SettingsError, match="TTS_MAX_BATCH_SIZE"):
        Settings().replace(max_batch_size=0)


def test_voices_must_be_a_json_object_of_seeds_or_embeddings():
    good = '{"narrator": {"seed": 42}, "host": {"embedding": "abc"}}'
    assert Settings.from_env({"TTS_VOICES": good}).voices == good
    for bad in ("[1]", "{", '{"a": {"seed": "x"}}', '{"a": {"seed": 1, "embedding": "e"}}', '{"a": 3}'):
        with pytest.raises(SettingsError, match="TTS_VOICES"):
            Settings.from_env({"TTS_VOICES": bad})
