"""Debian's Chromium driven by Playwright (never a downloaded browser), and
logging in through the hub's login form."""

from __future__ import annotations

import re

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def login(hub, browser, name: str, password: str):
    """A new browser context logged in as ``name``; returns (context, page)."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(hub.url + "/hub/login")
    page.fill("#username_input", name)
    page.fill("#password_input", password)
    page.click("#login_submit")
    page.wait_for_url(re.compile(r".*/hub/(workspaces|home)$"))
    return context, page
