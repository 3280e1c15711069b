"""The API reference pages load everything from the app itself: no CDN, no external host."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import httpx
import pytest


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_reference_pages_reference_no_external_host_and_their_assets_are_served(
    client: httpx.AsyncClient, page: str
) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    html = response.text
    referenced = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    referenced += re.findall(r"""url:\s*["']([^"']+)["']""", html)
    assert referenced, html
    here = urlsplit(str(client.base_url)).netloc
    for address in referenced:
        assert urlsplit(urljoin(str(client.base_url), address)).netloc == here, address
    # No other spelling of an outside address either (fonts, favicons, script loaders).
    assert re.findall(r"https?://[^\s\"'<>]+", html) == []
    for address in referenced:
        asset = await client.get(urljoin(str(client.base_url), address))
        assert asset.status_code == 200, address
        assert len(asset.content) > 0
