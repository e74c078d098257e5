"""Optional bearer-token authentication (off unless TTS_API_KEYS or TTS_API_KEYS_FILE is set).

Tokens are compared in constant time against every configured key, so neither the
comparison nor the number of keys tried leaks where a guess went wrong.  Probes and
metrics stay open by default, so Kubernetes and Prometheus need no token
(``TTS_AUTH_PROBES=true`` closes them too).  The playground page's files are always open: they
hold nothing secret, and the page asks for a key to send with its API calls.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from .errors import Unauthorized
from .playground_page import is_page_path
from .settings import Settings, SettingsError, env_name

OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/openapi.json")


def load_api_keys(settings: Settings) -> tuple[bytes, ...]:
    """All configured tokens; raises SettingsError when the keys file cannot be read."""
    keys = [k.strip() for k in settings.api_keys.split(",") if k.strip()]
    if settings.api_keys_file:
        try:
            text = Path(settings.api_keys_file).read_text()
        except OSError as exc:
            raise SettingsError(
                env_name("api_keys_file"), settings.api_keys_file, f"a readable file ({exc.strerror})"
            ) from None
        keys += [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return tuple(k.encode() for k in keys)


class Authenticator:
    def __init__(self, keys: tuple[bytes, ...], protect_probes: bool) -> None:
        self._keys = keys
        self._protect_probes = protect_probes

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, path: str, authorization: str | None) -> None:
        """Raise :class:`Unauthorized` unless the request may pass."""
        if not self._keys or (path in OPEN_PATHS and not self._protect_probes) or is_page_path(path):
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("this service requires an API key: send 'Authorization: Bearer <key>'")
        given = token.strip().encode()
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(given, key)
        if not matched:
            raise Unauthorized("the API key is not valid")
