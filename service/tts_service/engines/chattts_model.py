"""The ChatTTS model directory: its layout, its verification and its geometry.

Kept apart from the engine so that start-up errors about weights are produced in one
place, before torch is touched, and say which file is missing or wrong.

Layout.  ``TTS_MODEL_DIR`` is ChatTTS's ``asset/`` tree -- the directory holding
``Vocos.safetensors``, ``gpt/config.json`` and the rest -- or a directory that contains
``asset/``.  ChatTTS itself wants the parent of ``asset/``; when the setting points at the
tree itself (a volume mounted with ``subPath: asset``), :func:`chattts_root` links it
into a private temporary directory instead of writing next to read-only weights.

Verification.  The files are checked against ChatTTS's official sha256 map before any
loading.  ChatTTS is always loaded with ``source="custom"``, never ``"local"``: on a hash
mismatch ``"local"`` renames the files to ``*.bak`` and tries to download new ones, which
in a cluster destroys a mounted model.  ``TTS_MODEL_VERIFY=false`` accepts other weights
(fine-tuned ones): their own hashes are then computed and handed to ChatTTS's check.

Geometry.  The official checkpoint's module sizes are ChatTTS's ``Config`` defaults.  A
checkpoint of another size (a fine-tune with a smaller decoder, the random-weights one the
tests build) names its sizes in a JSON file given by ``TTS_CHATTTS_CONFIG``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import TTSError

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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(asset: Path, official: dict[str, str], check_hashes: bool) -> dict[str, str]:
    """The sha256 map ChatTTS should check ``asset`` against; raise :class:`ModelError`.

    With ``check_hashes`` every file must match ``official`` (ChatTTS's own map).
    Without, every file must exist and its own hash is returned.
    """
    missing = [name for name, _ in MODEL_FILES if not (asset / name).is_file()]
    if missing:
        raise ModelError(
            f"TTS_MODEL_DIR={asset}: missing {', '.join(missing)} "
            f"(a ChatTTS asset/ tree holds: {', '.join(name for name, _ in MODEL_FILES)})"
        )
    result = dict(official)
    for name, key in MODEL_FILES:
        actual = sha256_file(asset / name)
        if check_hashes and actual != official.get(key):
            raise ModelError(
                f"TTS_MODEL_DIR={asset}: {name} has sha256 {actual[:16]}..., the official "
                f"ChatTTS file has {str(official.get(key))[:16]}...; use the official weights, or set "
                "TTS_MODEL_VERIFY=false to load custom (fine-tuned) weights"
            )
        result[key] = actual
    return result


def chattts_root(asset: Path) -> tuple[Path, tempfile.TemporaryDirectory | None]:
    """The directory to pass as ChatTTS's ``custom_path`` (the parent of an ``asset`` entry)."""
    if asset.name == "asset":
        return asset.parent, None
    holder = tempfile.TemporaryDirectory(prefix="kubetts-chattts-")
    os.symlink(asset, Path(holder.name) / "asset", target_is_directory=True)
    return Path(holder.name), holder


def load_geometry(path: str) -> dict[str, Any]:
    """Overrides of ChatTTS's ``Config`` read from ``TTS_CHATTTS_CONFIG`` (empty: none)."""
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ModelError(f"TTS_CHATTTS_CONFIG={path}: cannot read it ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"TTS_CHATTTS_CONFIG={path}: not JSON ({exc.msg} at line {exc.lineno})") from None
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
