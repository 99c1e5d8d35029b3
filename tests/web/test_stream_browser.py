"""A job's stream in a real browser: Debian's chromium (Playwright) on the example project's
"ask a question" page, served by uvicorn, with a real gearmand and real worker processes.

Streams here end after 4 seconds (``STREAM_MAX_AGE``), so every test also crosses the
widget's reconnections (and a plain ``EventSource``'s ``Last-Event-ID``) mid-answer.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from django_gearattach.testing import Gearmand, free_port, wait_for_port, wait_for_workers
from example_project.demo.tasks import compose
from example_project.rundemo import asgi_server_command
from tests.browser import ARTIFACTS

# Its servers use a SQLite database of its own: the PostgreSQL legs would run it the
# same way again (tests/conftest.py).
pytestmark = pytest.mark.own_sqlite

pytest_plugins = ["tests.browser"]

ROOT = Path(__file__).resolve().parents[2]
VENDOR = Path(__file__).resolve().parent / "vendor"
#: Records every chunk and restart a widget dispatches (before the page's scripts run).
RECORDER = """
window.__chunks = []; window.__restarts = 0;
document.addEventListener("gearattach:chunk", (e) => {
  window.__chunks.push([e.detail.run, e.detail.seq]);
});
document.addEventListener("gearattach:restart", () => { window.__restarts += 1; });
"""
STREAM = ".gearattach-stream"


class Site:
    def __init__(self, url: str, database: Path) -> None:
        self.url = url
        self.database = database

    def record(self, key: str) -> dict[str, Any]:
        with sqlite3.connect(self.database) as db:
            db.row_factory = sqlite3.Row
            row = db.execute(
                "SELECT status, worker_pid, stream_run, stream_seq, attempts "
                "FROM django_gearattach_job WHERE key = ?",
                [key],
            ).fetchone()
        return dict(row) if row else {}


def wait_for_kept(site: Site, key: str, chunks: int) -> None:
    """Wait until the record holds ``chunks`` chunks: they reach it in batches (every
    0.1 s), so a page can show a word live a moment before a reload could render it."""
    deadline = time.monotonic() + 20
    while (site.record(key).get("stream_seq") or 0) < chunks:
        assert time.monotonic() < deadline, f"the record never held {chunks} chunks"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The example project: gearmand, `gearworker --concurrency 2` and uvicorn."""
    tmp = tmp_path_factory.mktemp("streams")
    database = tmp / "demo.sqlite3"
    with Gearmand() as gearmand:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "example_project.settings",
            "DATABASE_URL": f"sqlite:///{database}",
            "GEARATTACH_SERVERS": gearmand.address,
            "GEARATTACH_STREAM_MAX_AGE": "4",
            "DJANGO_DEBUG": "1",
            "PYTHONUNBUFFERED": "1",
        }
        manage = [sys.executable, str(ROOT / "example_project" / "manage.py")]
        subprocess.run([*manage, "migrate", "--noinput", "-v0"], env=env, cwd=ROOT, check=True)
        port = free_port()
        with open(tmp / "worker.log", "wb") as log, open(tmp / "server.log", "wb") as server_log:
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
                wait_for_workers(gearmand.address, "example.answer", 2)
                yield Site(f"http://127.0.0.1:{port}", database)
            finally:
                for process in (server, worker):
                    process.terminate()
                for process in (server, worker):
                    try:
                        process.wait(15)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait(5)


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    context.add_init_script(RECORDER)
    yield context
    context.close()


def ask(question: str, pace: float = 0.03) -> str:
    return f"/answer/?q={quote(question)}&pace={pace}"


def answer_of(question: str) -> str:
    return " ".join(compose(question))


def key_of(question: str) -> str:
    from example_project.demo.answers import answer_key

    return answer_key(question)


def words(page: Any) -> int:
    return int(page.evaluate(f"document.querySelector('{STREAM}').textContent.split(' ').length"))


def wait_for_words(page: Any, count: int, timeout: float = 30) -> None:
    page.wait_for_function(
        f"document.querySelector('{STREAM}').textContent.split(' ').length >= {count}",
        timeout=timeout * 1000,
    )


def wait_done(page: Any, timeout: float = 60) -> None:
    page.wait_for_selector("[data-gearattach][data-state=complete]", timeout=timeout * 1000)


def chunks_seen(page: Any) -> list[list[int]]:
    return list(page.evaluate("window.__chunks"))


def in_order_once(chunks: list[list[int]]) -> bool:
    return all(tuple(a) < tuple(b) for a, b in itertools.pairwise(chunks))


def test_two_tabs_show_the_same_text_growing_and_a_late_tab_joins(
    site: Site, context: Any
) -> None:
    question = "Why stream an answer to two tabs?"
    first = context.new_page()
    first.goto(site.url + ask(question))
    wait_for_words(first, 8)
    wait_for_kept(site, key_of(question), 8)
    second = context.new_page()
    second.goto(site.url + ask(question))
    shown_at_once = second.locator(STREAM).text_content() or ""
    assert len(shown_at_once.split()) >= 8  # the late tab starts with the text so far
    wait_for_words(second, len(shown_at_once.split()) + 5)  # ... which grows live
    wait_done(first)
    wait_done(second)
    first.screenshot(path=str(ARTIFACTS / "stream-first-tab.png"))
    assert first.locator(STREAM).text_content() == answer_of(question)
    assert second.locator(STREAM).text_content() == answer_of(question)
    for page in (first, second):
        assert chunks_seen(page)
        assert in_order_once(chunks_seen(page))
    assert site.record(key_of(question))["attempts"] == 1  # one job for both tabs


def test_a_reload_resumes_after_the_text_it_shows_without_repeating_a_word(
    site: Site, context: Any
) -> None:
    question = "What does a reload show?"
    page = context.new_page()
    page.goto(site.url + ask(question))
    wait_for_words(page, 10)
    wait_for_kept(site, key_of(question), 10)
    page.reload()
    position = page.locator("[data-gearattach]").get_attribute("data-stream-after") or ""
    rendered = int(position.split(":")[1])
    assert rendered >= 10  # the text so far, from the record, in the page at once
    wait_done(page)
    assert page.locator(STREAM).text_content() == answer_of(question)
    after_reload = chunks_seen(page)
    assert after_reload
    assert in_order_once(after_reload)
    assert after_reload[0][1] == rendered + 1  # resumed right after the rendered text


def test_the_finished_answer_is_served_whole_to_the_next_visitor(site: Site, browser: Any) -> None:
    question = "Is a finished answer kept?"
    first = browser.new_context()
    page = first.new_page()
    page.goto(site.url + ask(question, pace=0.005))
    wait_done(page)
    first.close()
    visitor = browser.new_context()
    try:
        page = visitor.new_page()
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(site.url + ask(question, pace=0.005))
        assert page.locator("#answer").text_content() == answer_of(question)
        assert page.locator("[data-gearattach]").count() == 0  # no connection needed
        assert not [u for u in requests if "/gearattach/jobs/" in u]
        assert site.record(key_of(question))["attempts"] == 1  # nothing ran again
    finally:
        visitor.close()


def test_html_in_the_text_shows_as_text(site: Site, context: Any) -> None:
    question = '<img src=x onerror="window.__injected=1"><b id="bold">bold</b>'
    page = context.new_page()
    page.goto(site.url + ask(question, pace=0.005))
    wait_done(page)
    assert page.locator(STREAM).text_content() == answer_of(question)
    assert page.locator(f"{STREAM} b, {STREAM} img, #bold").count() == 0
    assert page.evaluate("window.__injected") is None


def test_a_plain_event_source_resumes_with_last_event_id(site: Site, context: Any) -> None:
    """The docs' snippet: the server ends each stream after 4 s, the browser reconnects by
    itself with Last-Event-ID, and the text has every word once."""
    question = "Does a plain EventSource resume?"
    page = context.new_page()
    page.goto(site.url + ask(question, pace=0.06))
    events_url = page.locator("[data-gearattach]").get_attribute("data-events-url")
    page.goto(site.url + "/")  # the widget's page is left; the job goes on
    page.set_content(
        f"""<pre id="answer"></pre><script>
        window.__ids = []; window.__opened = 0;
        const answer = document.getElementById("answer");
        const source = new EventSource({json.dumps(events_url)});
        source.onopen = () => {{ window.__opened += 1; }};
        source.addEventListener("chunk", (event) => {{
          window.__ids.push(event.lastEventId);
          const chunk = JSON.parse(event.data);
          answer.append(typeof chunk.data === "string" ? chunk.data : JSON.stringify(chunk.data));
        }});
        source.addEventListener("restart", () => {{ answer.textContent = ""; }});
        source.addEventListener("end", () => {{ source.close(); window.__ended = true; }});
        </script>"""
    )
    page.wait_for_function("window.__ended === true", timeout=60_000)
    ids = page.evaluate("window.__ids")
    assert page.evaluate("window.__opened") >= 2  # it did reconnect mid-answer
    assert len(ids) == len(set(ids))
    assert page.locator("#answer").text_content() == answer_of(question)


def _fulfil(route: Any, body: str, content_type: str) -> None:
    route.fulfill(body=body, content_type=content_type)


def test_htmx_sse_extension_swaps_escaped_chunks(site: Site, context: Any) -> None:
    question = "Can htmx <i>follow</i> it?"
    page = context.new_page()
    page.goto(site.url + ask(question, pace=0.02))
    events_url = page.locator("[data-gearattach]").get_attribute("data-events-url")
    # A page of this site's origin, not served by it: htmx is the test's, not the app's.
    test_url = site.url + "/__htmx-test__/"
    html = f"""<!doctype html><html><head>
      <script src="{site.url}/__vendor__/htmx.min.js"></script>
      <script src="{site.url}/__vendor__/htmx-ext-sse.js"></script></head><body>
      <div hx-ext="sse" sse-connect="{events_url}?format=html" sse-close="end">
        <div id="answer" sse-swap="chunk" hx-swap="beforeend"></div>
        <span hidden sse-swap="restart" hx-target="#answer" hx-swap="innerHTML"></span>
      </div>
      <script>
        document.body.addEventListener("htmx:sseClose", () => {{ window.__closed = true; }});
      </script>
      </body></html>"""
    page.route(test_url, functools.partial(_fulfil, body=html, content_type="text/html"))
    for name in ("htmx.min.js", "htmx-ext-sse.js"):
        script = (VENDOR / name).read_text()
        page.route(
            f"{site.url}/__vendor__/{name}",
            functools.partial(_fulfil, body=script, content_type="text/javascript"),
        )
    page.goto(test_url)
    page.wait_for_function("window.__closed === true", timeout=60_000)
    assert page.locator("#answer").text_content() == answer_of(question)
    assert page.locator("#answer i").count() == 0


def test_a_killed_worker_restarts_the_stream_and_shows_the_new_runs_text_only(
    site: Site, context: Any
) -> None:
    question = "What if the worker dies?"
    page = context.new_page()
    page.goto(site.url + ask(question, pace=0.05))
    wait_for_words(page, 12)
    record = site.record(key_of(question))
    os.kill(record["worker_pid"], signal.SIGKILL)
    deadline = time.monotonic() + 120
    while site.record(key_of(question))["stream_run"] == record["stream_run"]:
        assert time.monotonic() < deadline, "the job did not run again"
        time.sleep(0.2)
    wait_done(page, timeout=120)
    page.screenshot(path=str(ARTIFACTS / "stream-restarted.png"))
    assert page.evaluate("window.__restarts") >= 1
    assert page.locator(STREAM).text_content() == answer_of(question)  # never spliced
    runs = {run for run, _ in chunks_seen(page)}
    assert runs == {record["stream_run"], site.record(key_of(question))["stream_run"]}
