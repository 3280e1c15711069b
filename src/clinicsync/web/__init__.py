"""Server-rendered pages: booking, the practitioner portal, the diary and the admin screens."""

from pathlib import Path

WEB_ASSETS = Path(__file__).parent / "static"
