"""The playground: one static page to type a text and hear it, served at ``GET /``.

Plain HTML, CSS and JavaScript shipped in the package (``tts_service/playground/``): no build
step, no CDN, no external fonts, and a Content-Security-Policy that forbids loading anything
from elsewhere.  The page calls the service's own public API (``/v1/voices``,
``/v1/audio/speech``) like any client, so it needs no routes of its own beyond its files, and
it holds nothing secret: it is served without a key even when the API requires one (the page
then asks for the key and sends it as a bearer token).  ``TTS_PLAYGROUND=false`` turns it off:
its paths then answer 404 like any unknown path.
"""

from __future__ import annotations

import functools
from pathlib import Path

PAGE_DIR = Path(__file__).resolve().parent / "playground"
PAGE = "index.html"
# The page's assets, by the name in /playground/{name}, and their content types.
ASSETS: dict[str, str] = {
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
}
PAGE_PATHS = ("/", "/playground/{name}")
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "media-src 'self' blob:; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


@functools.cache
def read(name: str) -> bytes:
    """A file of the page (read once: they are part of the installed package)."""
    return (PAGE_DIR / name).read_bytes()


def is_page_path(path: str) -> bool:
    """Whether ``path`` is the page or one of its assets (served without a key)."""
    return path == "/" or path.removeprefix("/playground/") in ASSETS
