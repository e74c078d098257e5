"""The playground page's files over HTTP (the browser test is tests/test_playground.py): served
from the package, self-contained, open without a key, and gone with TTS_PLAYGROUND=false."""

from __future__ import annotations

import re

from tts_service import playground_page

ASSET_REFERENCE = re.compile(r'(?:src|href)="([^"]+)"')


def test_the_page_loads_nothing_from_elsewhere():
    html = playground_page.read(playground_page.PAGE).decode()
    references = ASSET_REFERENCE.findall(html)
    assert {r for r in references if r.startswith("/playground/")} == {
        f"/playground/{name}" for name in playground_page.ASSETS
    }
    assert all(r.startswith(("/", "#", "data:")) for r in references), references
    for name in (playground_page.PAGE, *playground_page.ASSETS):
        text = playground_page.read(name).decode()
        assert not re.search(r"https?://|@import|url\(", text), name  # no CDN, no fonts, no imports
    script = playground_page.read("playground.js").decode()
    for keeper in ("localStorage", "sessionStorage", "indexedDB", "document.cookie"):
        assert keeper not in script, keeper  # the API key stays in the page's memory


async def test_served_with_its_types_and_a_policy_that_forbids_other_origins(make_client):
    client = await make_client()
    page = await client.get("/")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "kubetts" in await page.text()
    for name, content_type in playground_page.ASSETS.items():
        asset = await client.get(f"/playground/{name}")
        assert asset.status == 200 and asset.headers["Content-Type"] == content_type
        assert await asset.read() == playground_page.read(name)
    missing = await client.get("/playground/secrets.txt")
    assert missing.status == 404
    assert "playground.js" in (await missing.json())["error"]["message"]


async def test_open_without_a_key_while_the_api_needs_one(make_client):
    client = await make_client(api_keys="k1")
    assert (await client.get("/")).status == 200
    assert (await client.get("/playground/playground.js")).status == 200
    assert (await client.get("/v1/voices")).status == 401


async def test_turned_off_it_is_not_found(make_client):
    client = await make_client(playground=False)
    for path in ("/", "/playground/playground.js"):
        response = await client.get(path)
        assert response.status == 404
        assert "TTS_PLAYGROUND=false" in (await response.json())["error"]["message"]
    assert (await client.get("/v1/voices")).status == 200  # the API is unaffected
