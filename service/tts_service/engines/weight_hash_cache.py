"""Weight files' sha256, computed once per file and remembered between starts.

Hashing the official ChatTTS weights (1.1 GB) costs about a second per GB on every start.
A file whose identity is unchanged since it was last hashed has the same content, so its
hash is kept in ``TTS_CACHE_DIR`` and read back on the next start instead of the file.

A file's identity is its resolved path, size, inode, device, mtime and ctime, all to the
nanosecond.  Any write to the file changes its mtime and ctime; replacing it (a new
download, ``cp``, a re-mounted volume) changes the inode or the device; and ``touch -d``,
which can put an mtime back, cannot put back the ctime: the kernel sets it to the current
time on every change and offers no way to set it.  Only someone able to rewrite the disk
under the filesystem, or to turn the clock back, could change a file and keep its identity,
and such a person can change the cache too.  The cache is therefore only as trustworthy as
its directory: give the service a cache directory nobody else writes (the operator mounts
its own volume).  A file is re-hashed when anything in its identity differs, and a hash is
only remembered if the file's identity was the same before and after it was read.

Timestamps tick coarsely (a few milliseconds on Linux, up to 2 s on some network and FAT
filesystems): a change made within the same tick as the change before it keeps the
timestamps.  So, as git does with its index, a hash is only remembered for a file last
changed at least :data:`RACY_SECONDS` before it was hashed: any later change then falls in
a later tick and shows.  A file written moments ago is hashed again on the next start.

The cache file is written atomically (a temporary file renamed over it); an unreadable or
malformed cache is ignored (every file is hashed), and an unwritable directory only costs
the next start its hashing.  Both are logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

log = logging.getLogger("tts_service.engines.weight_hash_cache")

CACHE_FILE = "weight-sha256.json"
RACY_SECONDS = 2.0  # a file changed this recently when hashed is not remembered (see above)
FORMAT = 1  # bumped if the identity or the file's layout changes: older caches are ignored


def sha256_file(path: Path) -> str:
    """The file's sha256, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_identity(path: Path) -> dict[str, int]:
    """What must be unchanged for a remembered hash to hold (see the module docstring)."""
    st = os.stat(path)
    return {
        "size": st.st_size,
        "inode": st.st_ino,
        "device": st.st_dev,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
    }


class WeightHashCache:
    """sha256 of files, remembered in ``directory`` (None: nothing is remembered)."""

    def __init__(self, directory: str | Path | None, racy_seconds: float = RACY_SECONDS) -> None:
        self._path = Path(directory) / CACHE_FILE if directory else None
        self._racy_ns = int(racy_seconds * 1e9)
        self._entries: dict[str, dict[str, object]] = self._read()
        self._changed = False
        self.hashed: list[Path] = []  # files read to hash them in this instance (tests, logs)

    def _read(self) -> dict[str, dict[str, object]]:
        if self._path is None or not self._path.exists():
            return {}
        try:
            data = json.loads(self._path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("ignoring the weight hash cache %s (%s): every file is hashed", self._path, exc)
            return {}
        if (
            not isinstance(data, dict)
            or data.get("format") != FORMAT
            or not isinstance(data.get("files"), dict)
        ):
            log.warning("ignoring the weight hash cache %s: not of format %d", self._path, FORMAT)
            return {}
        return {k: v for k, v in data["files"].items() if isinstance(v, dict)}

    def sha256(self, path: Path) -> str:
        """The file's sha256: remembered if its identity is unchanged, else read and hashed."""
        key = str(path.resolve())
        before = file_identity(path)
        entry = self._entries.get(key)
        if entry is not None and isinstance(entry.get("sha256"), str):
            if {k: entry.get(k) for k in before} == before:
                return str(entry["sha256"])
        hashed_at = time.time_ns()
        digest = sha256_file(path)
        self.hashed.append(path)
        settled = hashed_at - max(before["mtime_ns"], before["ctime_ns"]) >= self._racy_ns
        if self._path is not None and settled and file_identity(path) == before:  # unchanged while read
            self._entries[key] = {**before, "sha256": digest}
            self._changed = True
        return digest

    def save(self) -> None:
        """Write the remembered hashes back, if any were added (atomically)."""
        if self._path is None or not self._changed:
            return
        temp = None
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=self._path.parent, prefix=CACHE_FILE, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump({"format": FORMAT, "files": self._entries}, f, indent=1, sort_keys=True)
            os.replace(temp, self._path)
            self._changed = False
        except OSError as exc:
            if temp is not None and os.path.exists(temp):
                os.unlink(temp)
            log.warning(
                "could not write the weight hash cache %s (%s): the next start hashes the weights again",
                self._path,
                exc,
            )
