"""Weight files are hashed once, and not at all on a later start when nothing changed.

The cache trusts a file's identity (path, size, inode, device, mtime, ctime); these tests
change a file in the ways a person or a tool would and check it is hashed again, and that
the engine then refuses it by name.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from tts_service.engines.chattts import ChatTTSEngine
from tts_service.engines.chattts_model import MODEL_FILES, ModelError
from tts_service.engines.weight_hash_cache import CACHE_FILE, WeightHashCache, sha256_file
from tts_service.settings import Settings


def _wait_for_a_later_timestamp(directory: Path, after_ns: int) -> None:
    """Until the filesystem stamps changes later than ``after_ns`` (its clock ticks coarsely):
    a change made now is then visible in the ctime.  Bounded; observes, does not sleep."""
    probe = directory / ".tick"
    for _ in range(1_000_000):
        probe.write_bytes(b"x")
        if os.stat(probe).st_ctime_ns > after_ns:
            probe.unlink()
            return
    raise AssertionError("the filesystem's timestamps did not advance")


def _rewrite_keeping_size_and_mtime(path: Path) -> None:
    """New content of the same size, and the old mtime put back (what ``touch -d`` can do)."""
    st = os.stat(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size and os.stat(path).st_mtime_ns == st.st_mtime_ns


@pytest.fixture
def weights(tmp_path) -> Path:
    path = tmp_path / "weights.bin"
    path.write_bytes(os.urandom(3 << 20))
    return path


def test_an_unchanged_file_is_not_hashed_again_by_a_later_start(weights, tmp_path):
    cache_dir = tmp_path / "cache"
    first = WeightHashCache(cache_dir, racy_seconds=0)
    digest = first.sha256(weights)
    first.save()
    assert first.hashed == [weights] and digest == sha256_file(weights)
    second = WeightHashCache(cache_dir, racy_seconds=0)  # the next start
    assert second.sha256(weights) == digest
    assert second.hashed == []


def test_changed_content_with_size_and_mtime_put_back_is_hashed_again(weights, tmp_path):
    cache_dir = tmp_path / "cache"
    first = WeightHashCache(cache_dir, racy_seconds=0)
    old = first.sha256(weights)
    first.save()
    _wait_for_a_later_timestamp(tmp_path, os.stat(weights).st_ctime_ns)
    _rewrite_keeping_size_and_mtime(weights)  # only the ctime (set by the kernel) shows it
    second = WeightHashCache(cache_dir, racy_seconds=0)
    new = second.sha256(weights)
    assert second.hashed == [weights]
    assert new != old and new == sha256_file(weights)


def test_a_replaced_file_is_hashed_again(weights, tmp_path):
    cache_dir = tmp_path / "cache"
    first = WeightHashCache(cache_dir, racy_seconds=0)
    first.sha256(weights)
    first.save()
    replacement = tmp_path / "new.bin"
    shutil.copy2(weights, replacement)  # same bytes, same mtime, another inode
    os.replace(replacement, weights)
    second = WeightHashCache(cache_dir, racy_seconds=0)
    second.sha256(weights)
    assert second.hashed == [weights]


def test_a_file_changed_just_before_it_was_hashed_is_not_remembered(weights, tmp_path):
    # Written moments ago: a change within the same timestamp tick could not be told apart.
    cache_dir = tmp_path / "cache"
    first = WeightHashCache(cache_dir)  # the default racy window
    first.sha256(weights)
    first.save()
    second = WeightHashCache(cache_dir)
    second.sha256(weights)
    assert second.hashed == [weights]


def test_a_malformed_or_unwritable_cache_costs_only_hashing(weights, tmp_path, caplog):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    (cache_dir / CACHE_FILE).write_text("{not json")
    cache = WeightHashCache(cache_dir, racy_seconds=0)
    assert cache.sha256(weights) == sha256_file(weights)
    assert "ignoring the weight hash cache" in caplog.text
    cache.save()  # replaces the malformed file
    assert json.loads((cache_dir / CACHE_FILE).read_text())["format"] == 1

    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    unwritable = WeightHashCache(blocked / "cache", racy_seconds=0)
    assert unwritable.sha256(weights) == sha256_file(weights)
    unwritable.save()  # logs, does not raise
    assert "could not write the weight hash cache" in caplog.text


# -- the engine ---------------------------------------------------------------------------


def _settings(checkpoint, asset: Path, cache_dir: Path) -> Settings:
    return Settings(
        engine="chattts",
        model_dir=str(asset),
        chattts_config=str(checkpoint["config"]),
        model_sha256_file=str(checkpoint["sha256_file"]),
        cache_dir=str(cache_dir),
        torch_threads=1,
        max_new_tokens=32,
        max_batch_size=2,
    )


def _load(settings: Settings) -> ChatTTSEngine:
    engine = ChatTTSEngine(settings)
    engine.weight_hashes = WeightHashCache(settings.cache_dir, racy_seconds=0)  # files made just now
    try:
        engine.load()
    finally:
        engine.close()
    return engine


def test_the_engine_verifies_each_file_once_and_a_restart_reads_none(checkpoint, tmp_path):
    # The asset tree in a directory not named asset/ (a volume mounted with subPath: asset).
    asset = tmp_path / "weights"
    shutil.copytree(checkpoint["asset"], asset)
    settings = _settings(checkpoint, asset, tmp_path / "cache")

    first = _load(settings)
    assert sorted(first.weight_hashes.hashed) == sorted(asset / name for name, _ in MODEL_FILES)
    assert first.startup_phases()["weight_verification"] >= 0
    second = _load(settings)
    assert second.weight_hashes.hashed == []

    _wait_for_a_later_timestamp(tmp_path, os.stat(asset / "DVAE.safetensors").st_ctime_ns)
    _rewrite_keeping_size_and_mtime(asset / "DVAE.safetensors")
    third = ChatTTSEngine(settings)
    third.weight_hashes = WeightHashCache(settings.cache_dir, racy_seconds=0)
    with pytest.raises(ModelError, match=r"DVAE\.safetensors has sha256 .* TTS_MODEL_SHA256_FILE"):
        third.load()
    assert third.weight_hashes.hashed == [asset / "DVAE.safetensors"]  # only the changed file


def test_a_bad_sha256_map_file_is_a_clear_error(checkpoint, tmp_path):
    bad = tmp_path / "map.json"
    bad.write_text(json.dumps({"sha256_asset_Vocos_safetensors": "00"}))
    settings = _settings(checkpoint, Path(checkpoint["asset"]), tmp_path / "cache").replace(
        model_sha256_file=str(bad)
    )
    with pytest.raises(ModelError, match=r"TTS_MODEL_SHA256_FILE=.*sha256_asset_Decoder_safetensors"):
        ChatTTSEngine(settings).load()
