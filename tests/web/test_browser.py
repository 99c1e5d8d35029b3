"""The widget in a real browser: Debian's chromium, driven by Playwright, against the example
project served by uvicorn, with a real gearmand and a real worker.

Screenshots go to artifacts/browser/. Without /usr/bin/chromium the tests fail (never
skip) with the command that installs it.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from django_gearattach.testing import Gearmand, free_port, wait_for_port, wait_for_workers
from example_project.rundemo import asgi_server_command
from tests.browser import ARTIFACTS

# Its servers use a SQLite database of its own: the PostgreSQL legs would run it the
# same way again (tests/conftest.py).
pytestmark = pytest.mark.own_sqlite

pytest_plugins = ["tests.browser"]

ROOT = Path(__file__).resolve().parents[2]


class Site:
    def __init__(self, url: str, database: Path, worker_log: Path, env: dict[str, str]) -> None:
        self.url = url
        self.database = database
        self.worker_log = worker_log
        self.env = env

    def manage(self, *args: str) -> str:
        cmd = [sys.executable, str(ROOT / "example_project" / "manage.py"), *args]
        return subprocess.run(
            cmd, env=self.env, cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout

    def jobs(self, function: str) -> list[tuple[str, str, int]]:
        with sqlite3.connect(self.database) as db:
            rows = db.execute(
                "SELECT key, status, attempts FROM django_gearattach_job WHERE function = ?",
                [function],
            ).fetchall()
        return [(str(k), str(s), int(a)) for k, s, a in rows]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The example project: gearmand, `gearworker --concurrency 2` and uvicorn."""
    tmp = tmp_path_factory.mktemp("demo")
    database = tmp / "demo.sqlite3"
    with Gearmand() as gearmand:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "example_project.settings",
            "DATABASE_URL": f"sqlite:///{database}",  # always SQLite: its own database
            "GEARATTACH_SERVERS": gearmand.address,
            "DJANGO_DEBUG": "1",
            "PYTHONUNBUFFERED": "1",
            "DEMO_RECENT_MAX_AGE": "1",  # the recent report goes stale after a second
        }
        manage = [sys.executable, str(ROOT / "example_project" / "manage.py")]
        subprocess.run([*manage, "migrate", "--noinput", "-v0"], env=env, cwd=ROOT, check=True)
        subprocess.run(
            [*manage, "createsuperuser", "--noinput", "--username=operator", "--email=o@x.org"],
            env={**env, "DJANGO_SUPERUSER_PASSWORD": "operator"},
            cwd=ROOT,
            check=True,
        )
        worker_log = tmp / "worker.log"
        port = free_port()
        with open(worker_log, "wb") as log, open(tmp / "server.log", "wb") as server_log:
            worker = subprocess.Popen(
                [*manage, "gearworker", "--concurrency", "2"],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            server = subprocess.Popen(
                asgi_server_command(port),
                env=env,
                cwd=ROOT,
                stdout=server_log,
                stderr=subprocess.STDOUT,
            )
            try:
                wait_for_port(port, timeout=30, process=server)
                wait_for_workers(gearmand.address, "gearattach.offload", 2)
                yield Site(f"http://127.0.0.1:{port}", database, worker_log, env)
            finally:
                for process in (server, worker):
                    process.terminate()
                for process in (server, worker):
                    try:
                        process.wait(15)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait(5)


def test_report_page_goes_live_a_second_tab_attaches_and_reload_shows_the_stored_outcome(
    site: Site, browser: Any
) -> None:
    from playwright.sync_api import Error as PlaywrightError

    context = browser.new_context(viewport={"width": 1000, "height": 800})
    page = context.new_page()
    url = f"{site.url}/report/build/?region=EU&year=2031&seconds=3"
    page.goto(url)
    bar = page.locator(".gearattach-bar[role=progressbar]")
    assert bar.get_attribute("aria-valuemin") == "0"
    assert bar.get_attribute("aria-valuemax") == "100"
    assert "gearattach=" in page.url  # the page's URL now names the job, not a new run

    # Watch the bar move; open a second tab on the same report while it does.
    seen: list[int] = []
    second = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not page.locator("#report-run").count():
        try:
            value = page.evaluate(
                "() => { const b = document.querySelector('.gearattach-bar');"
                " return b ? b.getAttribute('aria-valuenow') : null; }"
            )
        except PlaywrightError:  # the job ended: the page is going to the report
            page.wait_for_load_state()
            continue
        if value is not None and (not seen or seen[-1] != int(value)):
            seen.append(int(value))
            if second is None and 0 < int(value) < 100:
                page.screenshot(path=str(ARTIFACTS / "report-in-progress.png"))
                second = context.new_page()
                second.goto(url)
        page.wait_for_timeout(40)
    page.wait_for_selector("#report-run", timeout=20_000)
    moving = [v for v in seen if 0 < v < 100]
    assert len(moving) >= 2, f"the bar did not move through several steps: {seen}"
    assert moving == sorted(moving)
    assert page.locator("h1").inner_text() == "Sales report: Europe, 2031"
    run = page.locator("#report-run").inner_text()
    page.screenshot(path=str(ARTIFACTS / "report-done.png"))

    assert second is not None, f"no progress was seen to open a second tab at: {seen}"
    second.wait_for_selector("#report-run", timeout=20_000)
    assert second.locator("#report-run").inner_text() == run  # the same single execution
    second.screenshot(path=str(ARTIFACTS / "report-second-tab.png"))
    ((key, status, attempts),) = site.jobs("gearattach.offload")
    assert (status, attempts) == ("complete", 1)

    page.reload()
    assert page.locator("#report-run").inner_text() == run
    page.screenshot(path=str(ARTIFACTS / "report-after-reload.png"))
    third = context.new_page()
    third.goto(url)  # the report's plain URL again: the stored page, at once
    assert third.locator("#report-run").inner_text() == run
    assert site.jobs("gearattach.offload") == [(key, "complete", 1)]
    context.close()


def test_several_widgets_on_one_page_over_each_transport(site: Site, browser: Any) -> None:
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    page.goto(f"{site.url}/batch/")
    page.get_by_role("button", name="Start three jobs").click()
    widgets = page.locator("[data-gearattach]")
    # The page may still be arriving when the first widget shows: wait for all three.
    page.wait_for_function(
        "() => document.querySelectorAll('[data-gearattach]').length === 3", timeout=10_000
    )
    page.wait_for_function(
        "() => document.querySelectorAll('[data-gearattach][data-state=complete]').length === 3",
        timeout=20_000,
    )
    page.wait_for_timeout(400)  # the bars' width transitions end
    page.screenshot(path=str(ARTIFACTS / "three-widgets.png"), full_page=True)
    transports = [widgets.nth(i).get_attribute("data-transport") for i in range(3)]
    assert transports == ["ws", "sse", "poll"]
    for i in range(3):
        widget = widgets.nth(i)
        assert widget.locator(".gearattach-bar").get_attribute("aria-valuenow") == "100"
        assert '"done"' in widget.locator(".gearattach-result").inner_text()
    results = {widgets.nth(i).locator(".gearattach-result").inner_text() for i in range(3)}
    assert len(results) == 3  # three jobs, three executions
    context.close()


def test_a_stranger_cannot_follow_someone_elses_job(site: Site, browser: Any) -> None:
    owner = browser.new_context()
    page = owner.new_page()
    page.goto(f"{site.url}/batch/")
    page.get_by_role("button", name="Start three jobs").click()
    page.locator("[data-gearattach]").first.wait_for()
    ws_url = page.locator("[data-gearattach]").first.get_attribute("data-ws-url")
    assert ws_url
    stranger = browser.new_context().new_page()
    stranger.goto(f"{site.url}/")
    code = stranger.evaluate(
        """url => new Promise(resolve => {
            const socket = new WebSocket("ws://" + location.host + url);
            socket.onclose = event => resolve(event.code);
        })""",
        ws_url,
    )
    assert code == 4403
    owner.close()


def test_the_demo_shows_a_job_only_to_whoever_started_it(site: Site, browser: Any) -> None:
    owner = browser.new_context()
    page = owner.new_page()
    page.goto(f"{site.url}/")
    page.get_by_label("Seconds").fill("0.5")
    page.get_by_label("Key").fill("private-figures")
    page.get_by_role("button", name="Start").click()
    page.wait_for_url("**/jobs/**")
    job_url = page.url
    # The record's table is shown again once the job ends: not "Running" under "Done.".
    page.locator("td.status-complete").wait_for(timeout=20_000)
    page.goto(f"{site.url}/")
    assert "private-figures" in page.content()  # the owner's own list
    stranger = browser.new_context().new_page()
    assert stranger.goto(job_url).status == 404
    stranger.goto(f"{site.url}/")
    assert "private-figures" not in stranger.content()
    # Asking for the same key does not take the stranger to the owner's job either.
    stranger.get_by_label("Key").fill("private-figures")
    stranger.get_by_role("button", name="Start").click()
    assert "belongs to someone else" in stranger.content()
    # Nor does running it again once it finished (review 3, finding 6): that would
    # take the owner's record over, and the owner's token would follow the new run.
    page.goto(job_url)
    page.wait_for_selector("[data-gearattach][data-state=complete]", state="attached")
    (before,) = [row for row in site.jobs("example.slow") if row[0] == "private-figures"]
    stranger.get_by_label("Key").fill("private-figures")
    stranger.get_by_label("Run again if finished").check()
    stranger.get_by_role("button", name="Start").click()
    assert "belongs to someone else" in stranger.content()
    assert [row for row in site.jobs("example.slow") if row[0] == "private-figures"] == [before]
    page.reload()
    assert page.locator("[data-gearattach]").count() == 1  # still the owner's job page
    owner.close()


def test_the_server_refuses_an_oversized_frame_before_the_consumer_sees_it(
    site: Site, browser: Any
) -> None:
    """uvicorn's --ws-max-size (rundemo) matches the consumer's 4 KiB frame limit."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{site.url}/batch/")
    page.get_by_role("button", name="Start three jobs").click()
    ws_url = page.locator("[data-gearattach]").first.get_attribute("data-ws-url")
    outcome = page.evaluate(
        """url => new Promise(resolve => {
            const socket = new WebSocket("ws://" + location.host + url);
            const texts = [];
            socket.onopen = () => socket.send("x".repeat(8 * 1024));
            socket.onmessage = event => texts.push(event.data);
            socket.onclose = event => resolve({code: event.code, texts: texts});
        })""",
        ws_url,
    )
    assert outcome["code"] == 1009
    # The consumer would have answered with an error first: it never got the frame.
    assert not [text for text in outcome["texts"] if "frame too large" in text]
    context.close()


def test_widget_retries_with_backoff_then_falls_back_to_sse(site: Site, browser: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    attempts: list[float] = []

    def refuse(ws: Any) -> None:  # every websocket fails before delivering anything
        attempts.append(time.monotonic())
        ws.close(code=1011, reason="test: no websockets here")

    page.route_web_socket("**/ws/gearattach/**", refuse)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{site.url}/report/build/?region=US&year=2032&seconds=1&run=fallback")
    page.wait_for_selector("#report-run", timeout=30_000)
    assert page.locator("#report-title").inner_text() == "Sales report: United States, 2032"
    assert len(attempts) == 3  # then Server-Sent Events took over
    assert any("/events/" in url for url in requested)
    assert not any("/poll/" in url for url in requested)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.2  # backoff (0.5 s, then 1 s, each with jitter down to half)
    assert gaps[1] >= 0.45
    context.close()


def test_the_admin_dashboard_draws_charts_and_updates_live(site: Site, browser: Any) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"{site.url}/admin/login/?next=/admin/django_gearattach/job/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "operator")
    page.click("input[type=submit]")
    page.wait_for_selector("#changelist")
    # The whole list shows in a 1280 px window, beside the navigation and the filters.
    page.set_viewport_size({"width": 1280, "height": 1000})
    page.screenshot(path=str(ARTIFACTS / "admin-jobs-1280.png"), full_page=True)
    results = page.locator("#changelist .results")
    if results.count():  # the other tests' jobs (this one alone starts with none)
        assert results.evaluate("e => e.scrollWidth <= e.clientWidth"), "the list is clipped"
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.get_by_role("link", name="Dashboard").click()  # linked from the job list
    page.wait_for_selector("svg#gearattach-hour")
    assert page.locator("svg#gearattach-day").count() == 1
    assert page.locator("svg#gearattach-hour").get_attribute("role") == "img"
    # The websocket delivers the first refresh; mark the page to prove no reload follows.
    page.wait_for_selector("[data-gearattach-dashboard][data-state=ws]", timeout=20_000)
    page.evaluate("window.gearattachMarker = 'same page'")
    before = int(page.locator("svg#gearattach-hour").get_attribute("data-total") or "0")

    key = site.manage(
        "gearattach", "submit", "example.slow", "--kwargs", '{"seconds": 0.2, "steps": 2}'
    ).strip()
    page.wait_for_function(
        "n => +document.querySelector('svg#gearattach-hour').dataset.total > n",
        arg=before,
        timeout=30_000,
    )
    assert page.evaluate("window.gearattachMarker") == "same page"
    assert page.locator('[data-panel=latency] tr[data-function="example.slow"]').count() == 1
    bars = page.locator("svg#gearattach-hour rect[data-outcome=complete]")
    assert bars.count() >= 1
    servers = page.locator("[data-panel=servers] tr[data-function='example.slow'] td")
    assert servers.nth(3).inner_text() == "2"  # the two demo workers, from gearmand
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert any(k == key for k, _, _ in site.jobs("example.slow"))
    context.close()


def test_a_form_posted_to_a_class_based_view_sets_a_cookie_and_redirects(
    site: Site, browser: Any
) -> None:
    """A FormView with OffloadMixin: a password sealed and removed, a signed cookie, a 303."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{site.url}/account/")
    page.get_by_label("Display name").fill("Ada")
    page.get_by_label("Language").select_option("fr")
    page.get_by_label("Password").fill("correct horse")
    page.get_by_role("button", name="Save settings").click()
    page.wait_for_selector(".gearattach-bar")  # the processing page, while the view runs
    # The job ends: the page goes to its URL, gets the 303 and follows it.
    page.wait_for_url("**/account/saved/", timeout=30_000)
    assert page.locator("#language").inner_text() == "Français"
    assert page.locator(".messages").inner_text() == "Saved for Ada."
    cookie = next(c for c in context.cookies() if c["name"] == "demo_language")
    assert cookie["httpOnly"] is True
    assert cookie["value"].startswith("fr:")  # signed with SECRET_KEY, as the view did
    page.screenshot(path=str(ARTIFACTS / "account-saved.png"))
    with sqlite3.connect(site.database) as db:
        (arguments, result) = db.execute(
            "SELECT arguments, result FROM django_gearattach_job WHERE arguments LIKE ?",
            ["%AccountSettings%"],
        ).fetchall()[0]
    assert "correct horse" not in arguments
    assert '"sensitive_removed": true' in arguments
    assert "demo_language" not in result
    assert "fr:" not in result
    context.close()


def test_a_file_response_downloads_with_its_name(site: Site, browser: Any) -> None:
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.goto(f"{site.url}/account/")
    with page.expect_download(timeout=30_000) as info:
        page.locator("#export").click()
    download = info.value
    assert download.suggested_filename == "orders-2024.csv"
    lines = Path(download.path()).read_text().splitlines()
    assert lines[0] == "month,orders"
    assert len(lines) == 13
    # The processing page stays, with a link to the same file.
    link = page.locator(".gearattach-download")
    link.wait_for()
    assert link.inner_text() == "Download orders-2024.csv"
    # The heading says it is done (it said "Working on it…" before issue 21).
    assert page.locator("h1").inner_text() == "Done"
    page.screenshot(path=str(ARTIFACTS / "download.png"))
    context.close()


def _forged_widget(page: Any, site: Site, outcome_url: str, message: dict[str, Any]) -> None:
    """A processing page's widget on one of the site's pages, whose websocket delivers
    ``message``: what a hub that relayed a forged gearmand packet would send."""
    page.route_web_socket("**/ws/gearattach/**", lambda ws: ws.send(json.dumps(message)))
    page.goto(f"{site.url}/")
    page.evaluate(
        """outcomeUrl => {
            const el = document.createElement("div");
            el.innerHTML = `<div class="gearattach" data-gearattach data-transports="ws"
                data-ws-url="/ws/gearattach/forged/"
                data-download-url="/gearattach/jobs/x/download/"
                data-swap="document" data-outcome-url="${outcomeUrl}">
              <div class="gearattach-bar"><div class="gearattach-fill"></div></div>
              <p class="gearattach-status"></p><pre class="gearattach-data" hidden></pre>
              <ul class="gearattach-warnings" hidden></ul>
              <div class="gearattach-outcome" hidden></div></div>`;
            document.body.appendChild(el);
        }""",
        outcome_url,
    )
    page.add_script_tag(url=f"{site.url}/static/gearattach/gearattach.js")


def test_the_widget_follows_only_this_sites_http_urls_and_navigates_once(
    site: Site, browser: Any
) -> None:
    """Finding 2 of the third review: the widget assigned the download URL, then fell
    through to ``location.assign(redirect)`` with the forged ``javascript:`` URL."""
    probe = "/pwned-probe/"
    forged = {
        "type": "complete",
        "result": {"status": 200, "content_type": "text/csv"},
        "html": None,
        "download": {"name": "statement.csv", "size": 9},
        "redirect": f"javascript:fetch('{probe}'+document.cookie)",
    }
    cases = [
        # An offloaded view's page: one navigation, to its own outcome URL.
        ("/account/export/?gearattach=forged", forged, "/account/export/?gearattach=forged"),
        # A page without an outcome URL: a redirect elsewhere or not over http(s) is not
        # followed; one to this site is.
        ("", forged, None),
        ("", {**forged, "download": None, "redirect": "https://evil.example/"}, None),
        ("", {**forged, "download": None, "redirect": "//evil.example/x"}, None),
        ("", {**forged, "download": None, "redirect": "/account/"}, "/account/"),
    ]
    for outcome_url, message, destination in cases:
        context = browser.new_context(accept_downloads=True)
        page = context.new_page()
        requested: list[str] = []
        navigations: list[str] = []
        page.on("request", lambda request, seen=requested: seen.append(request.url))
        page.on(  # documents loaded (history.replaceState is no navigation)
            "request",
            lambda request, seen=navigations: (
                request.is_navigation_request() and seen.append(request.url)
            ),
        )
        _forged_widget(page, site, outcome_url, message)
        if destination is None:
            page.wait_for_selector("[data-gearattach][data-state=complete]", state="attached")
        else:
            page.wait_for_url(f"{site.url}{destination}")
        page.wait_for_timeout(800)  # time for any (wrong) second navigation or request
        assert not [url for url in requested if probe in url], (outcome_url, message)
        assert not [url for url in requested if "evil.example" in url], (outcome_url, message)
        followed = navigations[1:]  # the first is the page itself
        if destination is None:
            assert followed == [], (message, followed)
        else:
            assert followed == [f"{site.url}{destination}"], (message, followed)
        context.close()


def test_a_stale_report_shows_at_once_marked_updating_then_the_fresh_one_replaces_it(
    site: Site, browser: Any
) -> None:
    """``@offload(max_age=..., stale_while_revalidate=...)`` (the demo's recent report)."""
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    page = context.new_page()
    url = f"{site.url}/report/recent/?region=US&year=2040&seconds=3"
    page.goto(url)
    page.wait_for_selector("#report-run", timeout=20_000)  # the first build, waited for
    first = page.locator("#report-run").inner_text()
    page.wait_for_timeout(1200)  # past max_age

    started = time.monotonic()
    page.goto(url)
    # At once: the stored page, with the notice over it; its widget follows the rebuild.
    assert page.locator("#report-run").inner_text() == first
    notice = page.locator(".gearattach-updating")
    assert notice.is_visible()
    assert "Updating" in notice.inner_text()
    assert time.monotonic() - started < 2.5  # not the 3 s rebuild
    page.screenshot(path=str(ARTIFACTS / "report-stale-updating.png"))
    page.wait_for_function(
        "run => { const r = document.querySelector('#report-run');"
        " return r && r.textContent !== run; }",
        arg=first,
        timeout=20_000,
    )
    assert page.locator(".gearattach-updating").count() == 0
    page.screenshot(path=str(ARTIFACTS / "report-stale-refreshed.png"))
    recent = [row for row in site.jobs("gearattach.offload") if row[1] == "complete"]
    assert len(recent) >= 1
    context.close()
