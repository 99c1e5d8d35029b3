"""Take the admin screenshots in docs/_static/ (run: python docs/_tools/admin_screenshots.py).

Starts a real gearmand, a throwaway SQLite database with sample jobs, ``runserver``
and Debian's chromium (through Playwright, which never downloads a browser here).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "_static"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def main() -> None:
    sys.path.insert(0, str(ROOT))
    workdir = Path(tempfile.mkdtemp(prefix="gearattach-shots-"))
    database = workdir / "db.sqlite3"
    from django_gearattach.testing import Gearmand, free_port, wait_for_port

    with Gearmand() as gearmand:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "GEARATTACH_TEST_DATABASE": str(database),
            # The second server is down, to show how the servers page reports it.
            "GEARATTACH_SERVERS": f"{gearmand.address},127.0.0.1:{free_port()}",
            "PYTHONPATH": str(ROOT),
        }
        os.environ.update(env)
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        populate(gearmand.address)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "django", "runserver", "--noreload", "--insecure", str(port)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, process=server)
            shoot(f"http://127.0.0.1:{port}")
        finally:
            server.terminate()
            server.wait(10)


def populate(address: str) -> None:
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from django_gearattach import submit
    from django_gearattach.models import Job, Status

    User = get_user_model()
    User.objects.create_superuser("operator", "ops@example.com", "operator")
    owners = [User.objects.create_user(name) for name in ("alice", "bob", "carol")]
    rng = random.Random(7)
    now = timezone.now()
    functions = ["reports.build", "exports.csv", "images.thumbnail", "billing.invoice"]
    statuses = [Status.COMPLETE] * 6 + [Status.FAILED, Status.RUNNING, Status.RUNNING]
    statuses += [Status.CANCELLED, Status.LOST]
    for i in range(24):
        status = statuses[i % len(statuses)]
        created = now - timedelta(minutes=i * 7 + rng.randint(0, 5))
        started = created + timedelta(seconds=rng.uniform(0.1, 4))
        ran = timedelta(seconds=rng.uniform(0.5, 95))
        total = rng.choice([10, 12, 100, 250])
        done = {
            Status.COMPLETE: total,
            Status.FAILED: total // 3,
            Status.RUNNING: rng.randint(1, total - 1),
        }.get(status, 0)
        function = functions[i % len(functions)]
        Job.objects.create(
            function=function,
            key=f"{rng.getrandbits(128):032x}",
            status=status,
            arguments={"args": [2026, i], "kwargs": {"format": "pdf"}},
            progress_numerator=done,
            progress_denominator=total if status != Status.CANCELLED else 0,
            result={"url": f"/media/{function}/{i}.pdf"} if status == Status.COMPLETE else None,
            error="ValueError: no rows for 2026-13" if status == Status.FAILED else "",
            server=address,
            owner=owners[i % 3] if i % 4 else None,
            attempts=0 if status in (Status.CANCELLED,) else 1 + (i % 7 == 0),
            worker_host="worker-1" if status != Status.CANCELLED else "",
            worker_pid=4100 + i % 2 if status != Status.CANCELLED else None,
            created_at=created,
            started_at=started if status != Status.CANCELLED else None,
            finished_at=started + ran if status not in (Status.RUNNING,) else None,
        )
    # A day of finished jobs for the dashboard's charts: busier in the last hours.
    rows = []
    for i in range(3000):
        ago = timedelta(seconds=(i**1.35) % 86400)
        function = functions[i % len(functions)]
        slow = {"reports.build": 30, "exports.csv": 8, "images.thumbnail": 0.6}.get(function, 2)
        ran = timedelta(seconds=rng.lognormvariate(0, 0.6) * slow)
        waited = timedelta(seconds=rng.lognormvariate(-1, 1.2))
        status = rng.choices(
            [Status.COMPLETE, Status.FAILED, Status.LOST, Status.CANCELLED],
            [90, 6 if function == "billing.invoice" else 2, 1, 1],
        )[0]
        finished = now - ago
        rows.append(
            Job(
                function=function,
                key=f"day-{i}",
                status=status,
                arguments={"args": [i], "kwargs": {}},
                server=address,
                attempts=1,
                created_at=finished - ran - waited,
                started_at=finished - ran,
                finished_at=finished,
            )
        )
    Job.objects.bulk_create(rows)
    # A few real queued jobs, so that the servers page has a queue to show.
    for i in range(3):
        submit("tests.add", [i, i])


def shoot(base: str) -> None:
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    args += ["--disable-component-update", "--disable-sync", "--no-first-run"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        page = browser.new_page(viewport={"width": 1760, "height": 900})
        page.goto(f"{base}/admin/login/?next=/admin/django_gearattach/job/")
        page.fill("#id_username", "operator")
        page.fill("#id_password", "operator")
        page.click("input[type=submit]")
        page.wait_for_selector("#result_list")
        page.click("#toggle-nav-sidebar")  # the list needs the width
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(OUT / "admin-jobs.png"), full_page=False)
        page.get_by_role("link", name="Gearman servers").click()
        page.wait_for_selector(".gearattach-server")
        page.screenshot(path=str(OUT / "admin-servers.png"), full_page=True)
        page.goto(f"{base}/admin/django_gearattach/job/dashboard/")
        page.wait_for_selector("svg#gearattach-hour")
        page.screenshot(path=str(OUT / "admin-dashboard.png"), full_page=True)
        page.goto(f"{base}/admin/django_gearattach/job/?status__exact=failed")
        page.click("#result_list tbody tr th a")
        page.wait_for_selector(".gearattach-pre")
        page.screenshot(path=str(OUT / "admin-job.png"), full_page=True)
        browser.close()
    time.sleep(0.1)


if __name__ == "__main__":
    main()
