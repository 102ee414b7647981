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


def authorize(page) -> None:
    """JupyterHub asks someone opening another user's server to let it know who they are: agree."""
    button = page.locator("button:has-text('Authorize')")
    if button.count():
        button.click()


#: a PUT of JSON from the page, with the page's XSRF cookie, as JupyterLab sends one; returns the status
_PUT = """async ([url, body]) => {
    const xsrf = document.cookie.split('; ').find(c => c.startsWith('_xsrf='));
    const r = await fetch(url, {method: 'PUT', headers: {'Content-Type': 'application/json',
        'X-XSRFToken': xsrf ? decodeURIComponent(xsrf.split('=')[1]) : ''}, body: JSON.stringify(body)});
    return r.status;
}"""


def put_from_page(page, url: str, body: dict) -> int:
    """The status of a PUT of ``body`` to ``url`` sent by the page's own JavaScript (its cookies, its XSRF token)."""
    return page.evaluate(_PUT, [url, body])

