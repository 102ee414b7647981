"""Debian's Chromium driven by Playwright (never a downloaded browser):
logging in through the hub's login form, what pages of other users' servers
ask of a visitor, the user guide's screenshots, and axe-core's accessibility
checks (from npm, ``make install``) run in the page."""

from __future__ import annotations

import io
import re
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
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


def axe_violations(
    page, impacts: tuple[str, ...] = ("critical", "serious"), rules: tuple[str, ...] = (), within: str | None = None
) -> list[str]:
    """axe-core's violations on the page as it is now of ``impacts``, and of the
    ``rules`` (axe's ids) whatever their impact; one line per element: the
    impact, the rule, the element, and axe's summary of what to fix.
    ``within``: a CSS selector, to check one part of the page (the part a test is about)."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=AXE_JS.read_text())
    # colours are checked as they end, not halfway through a transition (a button the
    # mouse just clicked is still fading into its hover colours for 0.15 s)
    page.add_style_tag(content="*, *::before, *::after { transition: none !important; animation: none !important; }")
    violations = page.evaluate(
        "async (within) => (await axe.run(within || document, {resultTypes: ['violations']})).violations", within
    )
    lines = []
    for v in violations:
        if v["impact"] not in impacts and v["id"] not in rules:
            continue
        for node in v["nodes"]:
            summary = " ".join(node.get("failureSummary", "").split())
            lines.append(f"{v['impact']} {v['id']}: {' '.join(map(str, node['target']))} -- {summary[:300]}")
    return lines


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


#: the size of the user guide's screenshots (docs/images/), in CSS pixels at scale 1
SCREENSHOT_SIZE = {"width": 1200, "height": 800}
#: the share of pixels that may differ before a screenshot replaces the one in
#: docs/images/: a clock that moved on, another id or an animation's phase (up to
#: 0.4% between two runs) does not churn the repository, a page that changed its
#: layout does (delete a picture to have it taken again after a smaller change)
SCREENSHOT_CHANGED = 0.01


def save_screenshot(page, path: Path) -> bool:
    """The page as a PNG of 256 colours at ``path``, unless the PNG there
    already shows the same (all but :data:`SCREENSHOT_CHANGED` of the pixels);
    returns whether it wrote one."""
    from PIL import Image, ImageChops

    shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    if path.exists():
        with Image.open(path) as old:
            old_rgb = old.convert("RGB")
        if old_rgb.size == shot.size:
            diff = ImageChops.difference(old_rgb, shot).convert("L").point(lambda v: 255 if v > 16 else 0)
            if diff.histogram()[255] <= SCREENSHOT_CHANGED * shot.width * shot.height:
                return False
    path.parent.mkdir(parents=True, exist_ok=True)
    shot.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return True


def launch_and_open(page, job_type: str):
    """On a workspace's page: launch ``job_type`` from the launch form, wait
    until it runs, and open it with the Open button; returns the job's tab."""
    from playwright.sync_api import expect

    page.select_option("#job-type-select", job_type)
    page.click("#launch-job")
    expect(page.locator("#job-status")).to_have_text("running", timeout=90_000)
    with page.context.expect_page() as opened:
        page.click("#open-job")
    tab = opened.value
    tab.set_default_timeout(90_000)
    return tab
