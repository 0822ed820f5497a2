"""Browser tests: the app under uvicorn in a thread, driven by Debian's chromium via Playwright.

No ``playwright install``: the browser is the system's /usr/bin/chromium. Each test gets its own
database (with ``seeded``'s organisation, site and devices), its own server and a caregiver who
may sign in; the server can be stopped and started again on the same port, as on a deploy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import uvicorn
from playwright.sync_api import Browser, BrowserContext, Page, Request, sync_playwright

from app.web import create_app
from carewatch.passwords import hash_password
from carewatch.processes import free_port
from carewatch.settings import Settings
from tests.fixtures.services import SeededRegistry

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
PASSWORD = "korrekt-hast-batteri"
# Playwright's default of 30 s hides a hang for too long; the board answers within a second.
TIMEOUT_MS = 10_000


class AppServer:
    """uvicorn serving create_app(settings) in a thread, on a port kept over restarts."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        config = uvicorn.Config(
            create_app(self.settings),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            # Open SSE streams never end by themselves: close them after a second.
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="uvicorn-board", daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API did not start")
            time.sleep(0.02)
        self._server, self._thread = server, thread

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(20)
        if self._thread.is_alive():
            raise RuntimeError("the API did not stop within 20 s")
        self._server = self._thread = None


@dataclass
class RecordedPage:
    """A page and every URL it requested."""

    page: Page
    requests: list[str] = field(default_factory=list)


# Package scope, not session: Playwright's sync API keeps its asyncio loop marked as running
# in the main thread while it is started, and every later test that calls asyncio.run() would
# fail ("cannot be called from a running event loop"). So it lives exactly as long as the
# browser tests, which pytest runs together.
@pytest.fixture(scope="package")
def chromium() -> Iterator[Browser]:
    """The system's chromium, headless, shared by all browser tests."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def caregiver(seeded: SeededRegistry, database_url: str, test_token: str) -> str:
    """A caregiver of the seeded organisation (all its sites) who signs in with PASSWORD."""
    username = f"anna-{test_token}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (username, org_id, role, password_hash, display_name)"
            " VALUES (%s, %s, 'caregiver', %s, 'Anna')",
            (username, seeded.org_id, hash_password(PASSWORD)),
        )
    return username


@pytest.fixture
def app_server(settings: Settings) -> Iterator[AppServer]:
    """The app on a free loopback port, stopped at the end (after the test's pages close)."""
    server = AppServer(settings)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _context(browser: Browser, viewport: dict[str, int]) -> BrowserContext:
    context = browser.new_context(
        viewport=viewport,  # type: ignore[arg-type]  # a ViewportSize TypedDict
        locale="sv-SE",
        # Not Stockholm: the board must show Stockholm time whatever the device's zone is.
        timezone_id="America/New_York",
    )
    context.set_default_timeout(TIMEOUT_MS)
    return context


@pytest.fixture
def browser_page(chromium: Browser, app_server: AppServer) -> Iterator[RecordedPage]:
    """A fresh browser context (no cookies, no storage) at desktop size, requests recorded."""
    context = _context(chromium, DESKTOP)
    page = context.new_page()
    recorded = RecordedPage(page)

    def record(request: Request) -> None:
        recorded.requests.append(request.url)

    page.on("request", record)
    try:
        yield recorded
    finally:
        context.close()


def sign_in(page: Page, base_url: str, username: str, password: str = PASSWORD) -> None:
    """Fill in the login form and wait for the board with its list loaded and the stream open."""
    page.goto(f"{base_url}/login")
    page.get_by_label("Användarnamn").fill(username)
    page.get_by_label("Lösenord").fill(password)
    page.get_by_role("button", name="Logga in").click()
    page.wait_for_url(f"{base_url}/")
    wait_live(page)


def wait_live(page: Page) -> None:
    """Until the board has its list and an open stream."""
    page.locator("body[data-live='open'][data-loaded='true']").wait_for(state="attached")


# --- accessibility: axe-core (npm, pinned by tests/browser/axe/package-lock.json) -------------

AXE_SCRIPT = Path(__file__).resolve().parent / "axe" / "node_modules" / "axe-core" / "axe.min.js"
# WCAG 2.1 A and AA: what Swedish law (DOS-lagen, EN 301 549) asks of a municipal service.
WCAG_21_AA = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa")


@dataclass(frozen=True)
class AxeViolation:
    """One rule axe-core found broken, and where."""

    rule: str
    impact: str
    help: str
    targets: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.rule} ({self.impact}): {self.help}; at {', '.join(self.targets)}"


def format_violations(violations: Sequence[AxeViolation]) -> str:
    """One line per broken rule: its id, impact, what it asks and the selectors of the nodes."""
    return "\n".join(f"  - {violation}" for violation in violations)


@pytest.fixture(scope="package")
def axe_source() -> str:
    """axe.min.js as scripts/setup installs it (npm ci in tests/browser/axe)."""
    if not AXE_SCRIPT.exists():
        pytest.fail(
            f"{AXE_SCRIPT} is missing: run scripts/setup (npm ci --prefix tests/browser/axe)"
        )
    return AXE_SCRIPT.read_text(encoding="utf-8")


def axe_run(page: Page, source: str) -> list[AxeViolation]:
    """Run axe-core's WCAG 2.1 A and AA rules on ``page`` as it is now; the violations.

    The script goes in through Playwright's evaluate (DevTools' Runtime.evaluate), which the
    pages' Content-Security-Policy (``script-src 'self'``) does not govern, so the page is
    audited under its real CSP: no ``bypass_csp`` context that could hide a blocked style or
    script. Injected once per document; a navigation starts a fresh one.
    """
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(source)
    found: list[dict[str, object]] = page.evaluate(
        """async (tags) => {
            const results = await axe.run(document, {runOnly: {type: "tag", values: tags}});
            return results.violations.map((v) => ({
                rule: v.id,
                impact: v.impact ?? "unknown",
                help: v.help,
                targets: v.nodes.map((n) => n.target.join(" ")),
            }));
        }""",
        list(WCAG_21_AA),
    )
    return [
        AxeViolation(
            rule=str(item["rule"]),
            impact=str(item["impact"]),
            help=str(item["help"]),
            targets=tuple(str(target) for target in item["targets"]),  # type: ignore[attr-defined]  # a JSON list
        )
        for item in found
    ]
