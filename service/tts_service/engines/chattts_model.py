"""The ChatTTS model directory: its layout, its verification and its geometry.

Kept apart from the engine so that start-up errors about weights are produced in one
place, before torch is touched, and say which file is missing or wrong.

Layout.  ``TTS_MODEL_DIR`` is ChatTTS's ``asset/`` tree -- the directory holding
``Vocos.safetensors``, ``gpt/config.json`` and the rest -- or a directory that contains
``asset/`` (a volume mounted with ``subPath: asset`` works as well as the whole tree).
:func:`model_paths` names each file for ChatTTS's loader directly, so nothing is written
or linked next to read-only weights.

Verification.  The files are checked against ChatTTS's official sha256 map (or the map in
``TTS_MODEL_SHA256_FILE``) before any loading, each file hashed once at most, and not at
all when ``TTS_CACHE_DIR`` remembers it unchanged (:mod:`.weight_hash_cache`).  ChatTTS's
own check (``Chat.load`` hashes every file again, ~1 s per GB) is not run: the engine
calls ChatTTS's loader past it.  ChatTTS's ``source="local"`` is never used either: on a
hash mismatch it renames the files to ``*.bak`` and tries to download new ones, which in a
cluster destroys a mounted model.  ``TTS_MODEL_VERIFY=false`` accepts other weights
(fine-tuned ones) unhashed: every file must exist, nothing is read twice.

Geometry.  The official checkpoint's module sizes are ChatTTS's ``Config`` defaults.  A
checkpoint of another size (a fine-tune with a smaller decoder, the random-weights one the
tests build) names its sizes in a JSON file given by ``TTS_CHATTTS_CONFIG``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..errors import TTSError
from .weight_hash_cache import WeightHashCache

# (path inside asset/, the key of ChatTTS's res/sha256_map.json)
MODEL_FILES: tuple[tuple[str, str], ...] = (
    ("Decoder.safetensors", "sha256_asset_Decoder_safetensors"),
    ("DVAE.safetensors", "sha256_asset_DVAE_safetensors"),
    ("Embed.safetensors", "sha256_asset_Embed_safetensors"),
    ("Vocos.safetensors", "sha256_asset_Vocos_safetensors"),
    ("gpt/config.json", "sha256_asset_gpt_config_json"),
    ("gpt/model.safetensors", "sha256_asset_gpt_model_safetensors"),
    ("tokenizer/special_tokens_map.json", "sha256_asset_tokenizer_special_tokens_map_json"),
    ("tokenizer/tokenizer_config.json", "sha256_asset_tokenizer_tokenizer_config_json"),
    ("tokenizer/tokenizer.json", "sha256_asset_tokenizer_tokenizer_json"),
)


class ModelError(TTSError):
    """The model directory cannot be used; the message says what to fix."""

    code = "model_error"


def asset_dir(model_dir: str) -> Path:
    """The ``asset/`` tree that ``model_dir`` is or contains."""
    if not model_dir:
        raise ModelError("TTS_MODEL_DIR is not set: the chattts engine needs a ChatTTS asset/ directory")
    root = Path(model_dir)
    if not root.is_dir():
        raise ModelError(f"TTS_MODEL_DIR={model_dir}: no such directory")
    if (root / "asset").is_dir() and not (root / "Vocos.safetensors").exists():
        return root / "asset"
    return root


def verify(asset: Path, official: dict[str, str], check_hashes: bool, hashes: WeightHashCache) -> None:
    """Raise :class:`ModelError` unless every file exists and, with ``check_hashes``, has
    the sha256 that ``official`` (ChatTTS's map, or ``TTS_MODEL_SHA256_FILE``'s) gives it."""
    missing = [name for name, _ in MODEL_FILES if not (asset / name).is_file()]
    if missing:
        raise ModelError(
            f"TTS_MODEL_DIR={asset}: missing {', '.join(missing)} "
            f"(a ChatTTS asset/ tree holds: {', '.join(name for name, _ in MODEL_FILES)})"
        )
    if not check_hashes:
        return
    try:
        for name, key in MODEL_FILES:
            actual = hashes.sha256(asset / name)
            if actual != official.get(key):
                raise ModelError(
                    f"TTS_MODEL_DIR={asset}: {name} has sha256 {actual[:16]}..., the expected "
                    f"file has {str(official.get(key))[:16]}...; use the official weights (or give "
                    "their own map in TTS_MODEL_SHA256_FILE), or set TTS_MODEL_VERIFY=false to load "
                    "custom (fine-tuned) weights unchecked"
                )
    finally:
        hashes.save()  # what was hashed is remembered, a mismatch included


def _read_json(setting: str, path: str) -> Any:
    """The JSON in the file a setting names; :class:`ModelError` saying what is wrong with it."""
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise ModelError(f"{setting}={path}: cannot read it ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{setting}={path}: not JSON ({exc.msg} at line {exc.lineno})") from None


def load_sha256_map(path: str) -> dict[str, str] | None:
    """The sha256 map in ``TTS_MODEL_SHA256_FILE`` (empty: None, ChatTTS's official one)."""
    if not path:
        return None
    data = _read_json("TTS_MODEL_SHA256_FILE", path)
    keys = [key for _, key in MODEL_FILES]
    if not isinstance(data, dict) or not all(isinstance(data.get(key), str) for key in keys):
        raise ModelError(
            f"TTS_MODEL_SHA256_FILE={path}: expected a JSON object with a sha256 string for each of "
            + ", ".join(keys)
        )
    return {key: data[key] for key in keys}


def model_paths(asset: Path, config_paths: dict[str, str]) -> dict[str, str]:
    """ChatTTS's loader arguments (``Config().path``: ``vocos_ckpt_path='asset/Vocos...'``)
    pointed at the files in ``asset``."""
    return {key: str(asset / rel.removeprefix("asset/")) for key, rel in config_paths.items()}


def load_geometry(path: str) -> dict[str, Any]:
    """Overrides of ChatTTS's ``Config`` read from ``TTS_CHATTTS_CONFIG`` (empty: none)."""
    if not path:
        return {}
    data = _read_json("TTS_CHATTTS_CONFIG", path)
    if not isinstance(data, dict):
        raise ModelError(f"TTS_CHATTTS_CONFIG={path}: expected a JSON object of Config overrides")
    return data


def fresh_config(template: Any, overrides: dict[str, Any] | None = None, where: str = "Config") -> Any:
    """A deep copy of the dataclass ``template`` with ``overrides`` applied.

    ChatTTS's ``Config`` dataclasses use shared instances as defaults (every ``Config()``
    holds the SAME ``Decoder()`` object), so mutating one leaks into every later ``Chat``.
    This builds new objects all the way down instead.
    """
    overrides = dict(overrides or {})
    values = {}
    for field in dataclasses.fields(template):
        current = getattr(template, field.name)
        given = overrides.pop(field.name, None)
        if dataclasses.is_dataclass(current):
            if given is not None and not isinstance(given, dict):
                raise ModelError(f"TTS_CHATTTS_CONFIG: {where}.{field.name} must be an object")
            values[field.name] = fresh_config(current, given, f"{where}.{field.name}")
        elif given is not None:
            values[field.name] = tuple(given) if isinstance(current, tuple) else given
        else:
            values[field.name] = current
    if overrides:
        raise ModelError(f"TTS_CHATTTS_CONFIG: unknown field(s) {', '.join(sorted(overrides))} in {where}")
    return type(template)(**values)
