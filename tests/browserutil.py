"""Debian's Chromium driven by Playwright (never a downloaded browser), logging
in through the hub's login form, and axe-core's accessibility checks (from npm,
``make install``) run in the page."""

from __future__ import annotations

import re
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
#: axe-core's browser build, installed from npm by `make install` (package.json)
AXE_JS = Path(__file__).resolve().parent.parent / "node_modules" / "axe-core" / "axe.min.js"
#: a phone's viewport (CSS pixels), as the phone tests use it
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}


def login(hub, browser, name: str, password: str, **context_options):
    """A new browser context logged in as ``name``; returns (context, page).

    ``context_options`` go to ``browser.new_context`` (a viewport, ``color_scheme``...).
    """
    context = browser.new_context(**context_options)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(hub.url + "/hub/login")
    page.fill("#username_input", name)
    page.fill("#password_input", password)
    page.click("#login_submit")
    page.wait_for_url(re.compile(r".*/hub/(workspaces|home)$"))
    return context, page


def axe_violations(page, impacts: tuple[str, ...] = ("critical", "serious"), rules: tuple[str, ...] = ()) -> list[str]:
    """axe-core's violations on the page as it is now of ``impacts``, and of the
    ``rules`` (axe's ids) whatever their impact; one line per element: the
    impact, the rule, the element, and axe's summary of what to fix."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=AXE_JS.read_text())
    violations = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    lines = []
    for v in violations:
        if v["impact"] not in impacts and v["id"] not in rules:
            continue
        for node in v["nodes"]:
            summary = " ".join(node.get("failureSummary", "").split())
            lines.append(f"{v['impact']} {v['id']}: {' '.join(map(str, node['target']))} -- {summary[:300]}")
    return lines
