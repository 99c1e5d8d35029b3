"""The processing page and the widget's states in French, in Debian's chromium: waiting
for a worker that is not running, recovering by itself when one starts, steps, done,
and a failure. No English is left on the page.

uvicorn serves ``tests.asgi`` (LocaleMiddleware reads the browser's Accept-Language)
on the test database; gearmand and the worker are real, the worker started only once
the page says that no worker runs the job.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from django_gearattach.testing import Gearmand, WorkerProcess, free_port, wait_for_port
from tests.browser import ARTIFACTS

# Its servers use a SQLite database of its own: the PostgreSQL legs would run it the
# same way again (tests/conftest.py).
pytestmark = pytest.mark.own_sqlite

pytest_plugins = ["tests.browser"]

ROOT = Path(__file__).resolve().parents[2]
#: English texts of the page and the widget (the task's own data is not the app's).
ENGLISH = re.compile(
    r"working on it|waiting for the job|no worker|step \d+ of|\bdone\b|\bfailed\b|"
    r"\bready\b|that did not work|the job failed|\bprogress\b",
    re.IGNORECASE,
)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Gearmand, dict[str, str]]]:
    # A database of its own (SQLite, migrated here): the browser's event loop runs in
    # this thread, where pytest-django could not flush a test database afterwards.
    database = tmp_path / "site.sqlite3"
    with Gearmand() as gearmand:
        env = {
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": "",
            "GEARATTACH_TEST_DATABASE": str(database),
            "GEARATTACH_SERVERS": gearmand.address,
        }
        subprocess.run(
            [sys.executable, "-m", "django", "migrate", "-v0"],
            env={**os.environ, **env},
            cwd=ROOT,
            check=True,
        )
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "tests.asgi:application", f"--port={port}"],
            env={**os.environ, **env},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, timeout=30, process=server)
            yield f"http://127.0.0.1:{port}", gearmand, env
        finally:
            server.terminate()
            server.wait(15)


def texts_seen(page: Any) -> list[str]:
    return list(page.evaluate("window.seen || []"))


def test_the_widgets_states_in_french(site, browser, tmp_path: Path) -> None:
    url, gearmand, env = site
    gate = tmp_path / "gate"
    context = browser.new_context(locale="fr-FR")
    # Every text the status line takes, as it changes.
    context.add_init_script(
        """
        window.seen = [];
        new MutationObserver(function () {
          document.querySelectorAll(".gearattach-status").forEach(function (el) {
            if (window.seen[window.seen.length - 1] !== el.textContent) {
              window.seen.push(el.textContent);
            }
          });
        }).observe(document, { subtree: true, childList: true, characterData: true });
        """
    )
    page = context.new_page()
    page.goto(f"{url}/explicit/?gate={gate}")
    status = page.locator(".gearattach-status")
    assert page.locator("html").get_attribute("lang") == "fr"
    assert page.title() == "Traitement en cours…"

    # No worker runs tests.chatty: the page says so within seconds.
    unserved = "Aucun processus de travail n'exécute tests.chatty : la tâche démarrera dès "
    page.wait_for_function(
        "text => document.querySelector('.gearattach-status').textContent.startsWith(text)",
        arg=unserved,
        timeout=15_000,
    )
    page.screenshot(path=str(ARTIFACTS / "i18n-fr-no-worker.png"))

    # A worker starts: the page recovers by itself and follows the job to its end.
    worker = WorkerProcess([gearmand.address], "tests.settings", env=env, cwd=str(ROOT))
    worker.start()
    try:
        page.wait_for_function(
            "() => document.querySelector('.gearattach-status').textContent === 'En cours…'",
            timeout=30_000,
        )
        gate.touch()
        page.wait_for_function(
            "() => document.querySelector('[data-gearattach]').dataset.state === 'complete'",
            timeout=30_000,
        )
        assert status.inner_text() == "Terminé."
        assert page.locator("h1").inner_text() == "Prêt"
        assert page.title() == "Prêt"
        bar = page.locator(".gearattach-bar")
        assert bar.get_attribute("aria-valuetext") == "Terminé"
        assert page.locator(".gearattach-label").inner_text() == "Progression"
        seen = texts_seen(page)
        assert any(t.startswith(unserved) for t in seen)
        assert "Étape 3 sur 3 (100 %)" in seen or "Étape 1 sur 3 (33 %)" in seen, seen
        page.screenshot(path=str(ARTIFACTS / "i18n-fr-done.png"))
        visible = page.inner_text("main")
        # The task's own data and warning ("careful") are not the app's to translate.
        assert ENGLISH.findall(visible) == [], visible

        failing = context.new_page()
        failing.goto(f"{url}/explicit/?fail=1")
        failing.wait_for_selector(".gearattach-failed .gearattach-error", timeout=30_000)
        assert failing.locator(".gearattach-status").inner_text() == "Échec."
        assert failing.locator(".gearattach-error").inner_text() == "la tâche a échoué"
        assert failing.locator("h1").inner_text() == "Cela n'a pas fonctionné"
        assert ENGLISH.findall(failing.inner_text("main")) == []
        failing.screenshot(path=str(ARTIFACTS / "i18n-fr-failed.png"))
    finally:
        gate.touch()
        worker.cleanup()
        context.close()
