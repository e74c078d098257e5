"""The service's settings: one typed object, read from ``TTS_*`` environment variables.

This module is the single source of truth for configuration.  The service reads it with
:meth:`Settings.from_env`; the operator builds a :class:`Settings` from a TTSService spec
and writes the container env with :meth:`Settings.to_env`, so variable names, defaults
and validation rules are never copied as string literals anywhere else.  The README's
settings table is generated from :data:`SETTINGS_FIELDS` (and a test keeps it in sync).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .segmentation import MIN_SEGMENT_CHARS

ENV_PREFIX = "TTS_"

ENGINES = ("espeak", "chattts")
# request: DynamicBatcher (batches per engine call); continuous: ContinuousBatcher (token steps).
SCHEDULERS = ("continuous", "request")
DEVICES = ("auto", "cuda", "cpu")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class SettingsError(ValueError):
    """A setting has a value outside what is allowed; the message is one line naming both."""

    def __init__(self, env: str, value: str, allowed: str) -> None:
        super().__init__(f"invalid setting {env}={value!r}: allowed {allowed}")
        self.env = env
        self.value = value
        self.allowed = allowed


def _setting(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> Any:
    return field(
        default=default,
        metadata={"help": help, "choices": choices, "minimum": minimum, "maximum": maximum},
    )


@dataclass(frozen=True)
class Settings:
    """Everything the service can be told; each field is read from ``TTS_<FIELD NAME>``."""

    host: str = _setting("127.0.0.1", "Address to listen on (use 0.0.0.0 in a container).")
    port: int = _setting(8080, "TCP port to listen on.", minimum=1, maximum=65535)
    engine: str = _setting("espeak", "Synthesis engine.", choices=ENGINES)
    max_batch_size: int = _setting(
        8, "Largest batch handed to the engine in one call.", minimum=1, maximum=256
    )
    scheduler: str = _setting(
        "continuous",
        "How requests share the engine: continuous (rows join and leave a running generation at "
        "each token step; engines without a token loop, like espeak, batch per request) or "
        "request (one batch per engine call, runs to its longest row).",
        choices=SCHEDULERS,
    )
    max_wait_ms: float = _setting(
        80.0,
        "Request-level batching: the most a free engine holds a batch back to gather batch-mates. "
        "Only waited when requests have been overlapping in the last second (a lone client never "
        "waits); 0: never.",
        minimum=0,
        maximum=10_000,
    )
    max_queue_size: int = _setting(
        256, "Requests waiting for the engine before new ones get 503 + Retry-After.", minimum=1
    )
    request_timeout_s: float = _setting(
        30.0,
        "Deadline per segment of a request (TTS_SEGMENT_CHARS), from arrival to its last audio: a "
        "request split into N segments must finish within N times this, or the client gets 504.",
        minimum=0.1,
    )
    stream_buffer_s: float = _setting(
        120.0,
        "Seconds of audio held for a streamed response whose client reads slower than the audio is "
        "made: its next segments wait while this much is buffered, and past it within one segment "
        "the stream is cut off (the client sees an incomplete response). "
        "Memory: about 96 KB per second per stream.",
        minimum=1,
        maximum=3600,
    )
    max_input_chars: int = _setting(
        4096,
        "Longest accepted input text, in characters (OpenAI's limit too); longer input gets 400 "
        "input_too_long naming the limit.",
        minimum=1,
        maximum=100_000,
    )
    segment_chars: int = _setting(
        100,
        "Longest segment of input the engine speaks in one generation: longer input is split at "
        "sentence ends, then clauses, then words (about 20-25 s of Mandarin, inside ChatTTS's "
        "comfortable 15-30 s).",
        minimum=MIN_SEGMENT_CHARS,
        maximum=4096,
    )
    max_body_bytes: int = _setting(
        65536, "Largest accepted request body; larger bodies get 413.", minimum=1024
    )
    default_voice: str = _setting(
        "", "Voice used when a request names none; empty = chosen by the text's script."
    )
    playground: bool = _setting(
        True,
        "Serve the playground page at GET / (type a text, listen, download); false = no page (404). "
        "TTSServices leave it off unless spec.playground is true.",
    )
    warmup: bool = _setting(
        True,
        "Before /readyz reports ready, run the few tokens that make the first request cost what "
        "later ones do (compilation, lazy imports, device memory).",
    )
    cache_dir: str = _setting(
        "",
        "Writable directory for start-up caches kept between starts: verified weight hashes, and "
        "torch.compile's kernels (TORCHINDUCTOR_CACHE_DIR's default); empty = none, every start "
        "hashes and compiles afresh.",
    )
    shutdown_timeout_s: float = _setting(
        30.0, "On SIGTERM, how long to finish queued and in-flight requests.", minimum=0
    )
    log_level: str = _setting("INFO", "Log level.", choices=LOG_LEVELS)
    api_keys: str = _setting(
        "", "Comma-separated bearer tokens clients must send (Authorization: Bearer ...); empty = no auth."
    )
    api_keys_file: str = _setting(
        "", "File with one bearer token per line (e.g. a mounted Secret), added to TTS_API_KEYS."
    )
    auth_probes: bool = _setting(
        False, "Also require a token on /healthz, /readyz and /metrics (off: probes and scrapes stay open)."
    )
    model_dir: str = _setting(
        "", "ChatTTS weights directory (an asset/ tree) for the chattts engine; unused by espeak."
    )
    voices: str = _setting(
        "",
        'Named voices for the chattts engine, as JSON: {"name": {"seed": 42} or {"embedding": "..."}}.',
    )
    cuda_memory_pool_mb: int = _setting(
        0, "CUDA memory to reserve up front for the chattts engine (0 = off); unused on CPU.", minimum=0
    )
    model_verify: bool = _setting(
        True,
        "Check the ChatTTS weights against the official sha256 map; false accepts custom (fine-tuned) weights.",
    )
    model_sha256_file: str = _setting(
        "",
        "JSON sha256 map (the format of ChatTTS's res/sha256_map.json) to check the weights against "
        "instead of the official one, e.g. a fine-tune's published hashes; empty = the official map.",
    )
    chattts_config: str = _setting(
        "", "JSON file overriding ChatTTS's module sizes, for checkpoints not of the official geometry."
    )
    device: str = _setting(
        "auto", "Where the chattts engine runs: auto = cuda if available, else cpu.", choices=DEVICES
    )
    torch_threads: int = _setting(
        0, "CPU threads for torch in the chattts engine; 0 = the CPUs this container may use.", minimum=0
    )
    compile: bool = _setting(
        False, "torch.compile the ChatTTS GPT (CUDA only; cached in TORCHINDUCTOR_CACHE_DIR)."
    )
    half_precision: bool = _setting(
        False, "Run the ChatTTS GPT in float16: about half its memory (meant for GPUs; slower on CPUs)."
    )
    refine_text: bool = _setting(
        False, "Run ChatTTS's text-refinement pass before speech (adds latency; off = skip_refine_text)."
    )
    temperature: float = _setting(
        0.3,
        "ChatTTS sampling temperature for audio tokens (a request's own temperature may be anything "
        "in this setting's range).",
        minimum=0.01,
        maximum=2.0,
    )
    top_p: float = _setting(
        0.7, "ChatTTS nucleus-sampling top_P (requests: top_p, same range).", minimum=0.01, maximum=1.0
    )
    top_k: int = _setting(20, "ChatTTS top_K (requests: top_k, same range).", minimum=1, maximum=626)
    max_new_tokens: int = _setting(
        2048,
        "Upper bound on audio tokens per segment (about 46.9 per second of speech); "
        "each segment's own budget follows its text's length.",
        minimum=16,
        maximum=4096,
    )
    min_new_tokens: int = _setting(
        0,
        "Audio tokens ChatTTS must generate before it may end a segment (0 = it ends when the model "
        "says); capped at the segment's own budget. Benchmarks set it to TTS_MAX_NEW_TOKENS so every "
        "segment runs to its budget (a real checkpoint's worst case).",
        minimum=0,
        maximum=4096,
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every field from ``env`` (default ``os.environ``); raise :class:`SettingsError`."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in SETTINGS_FIELDS:
            name = env_name(f)
            if name in env:
                values[f.name] = _parse(f, name, env[name])
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The env mapping that :meth:`from_env` turns back into exactly these settings."""
        return {env_name(f): _format(getattr(self, f.name)) for f in SETTINGS_FIELDS}

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated like values read from env."""
        merged = dataclasses.replace(self, **changes)
        return Settings.from_env(merged.to_env())


# Environment read by PyTorch/CUDA rather than by the service; the operator sets these from
# a TTSService's spec.cuda, and they are named here so no other module spells them.
TORCH_CUDA_ARCH_LIST_ENV = "TORCH_CUDA_ARCH_LIST"
CUDA_MODULE_LOADING_ENV = "CUDA_MODULE_LOADING"
TORCHINDUCTOR_CACHE_DIR_ENV = "TORCHINDUCTOR_CACHE_DIR"

SETTINGS_FIELDS: tuple[dataclasses.Field, ...] = dataclasses.fields(Settings)


def env_name(f: dataclasses.Field | str) -> str:
    """``max_wait_ms`` -> ``TTS_MAX_WAIT_MS``."""
    name = f if isinstance(f, str) else f.name
    return ENV_PREFIX + name.upper()


def _allowed(f: dataclasses.Field) -> str:
    meta = f.metadata
    if meta["choices"]:
        return "one of " + ", ".join(meta["choices"])
    kind = {bool: "true or false", int: "an integer", float: "a number"}.get(_field_type(f), "a string")
    lo, hi = meta["minimum"], meta["maximum"]
    if lo is not None and hi is not None:
        return f"{kind} from {lo:g} to {hi:g}"
    if lo is not None:
        return f"{kind} >= {lo:g}"
    return kind


def _field_type(f: dataclasses.Field) -> type:
    return {"str": str, "int": int, "float": float, "bool": bool}[str(f.type)]


def _parse(f: dataclasses.Field, name: str, raw: str) -> Any:
    kind = _field_type(f)
    text = raw.strip()
    try:
        if kind is bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError(text)
        if kind is int:
            value: Any = int(text)
        elif kind is float:
            value = float(text)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError(text)
        else:
            value = text
    except ValueError:
        raise SettingsError(name, raw, _allowed(f)) from None
    meta = f.metadata
    if meta["choices"] and value not in meta["choices"]:
        # Accept a different case for enumerations, report the canonical spelling.
        matches = [c for c in meta["choices"] if c.lower() == str(value).lower()]
        if not matches:
            raise SettingsError(name, raw, _allowed(f))
        value = matches[0]
    if meta["minimum"] is not None and value < meta["minimum"]:
        raise SettingsError(name, raw, _allowed(f))
    if meta["maximum"] is not None and value > meta["maximum"]:
        raise SettingsError(name, raw, _allowed(f))
    if f.name == "voices" and value:
        _check_voices(name, raw, value)
    return value


_VOICES_ALLOWED = 'a JSON object {"name": {"seed": <integer>} or {"embedding": "<string>"}}'


def _check_voices(name: str, raw: str, value: str) -> None:
    import json

    try:
        voices = json.loads(value)
    except ValueError:
        raise SettingsError(name, raw, _VOICES_ALLOWED) from None
    if not isinstance(voices, dict):
        raise SettingsError(name, raw, _VOICES_ALLOWED)
    for voice in voices.values():
        ok = (
            isinstance(voice, dict)
            and len(voice) == 1
            and (
                (isinstance(voice.get("seed"), int) and not isinstance(voice.get("seed"), bool))
                or isinstance(voice.get("embedding"), str)
            )
        )
        if not ok:
            raise SettingsError(name, raw, _VOICES_ALLOWED)


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}" if value == int(value) else repr(value)
    return str(value)


def settings_markdown_table() -> str:
    """The README's settings table, generated so the docs cannot drift from the code."""
    rows = ["| Variable | Default | Allowed | Meaning |", "| --- | --- | --- | --- |"]
    for f in SETTINGS_FIELDS:
        default = _format(f.default) or "(empty)"
        rows.append(f"| `{env_name(f)}` | `{default}` | {_allowed(f)} | {f.metadata['help']} |")
    return "\n".join(rows)
