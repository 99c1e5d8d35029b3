"""``manage.py gearattach``: submit, attach to and inspect jobs from the shell.

On a terminal ``attach`` shows a progress bar and the outcome as a block, and
``status`` and ``servers`` print tables; piped, or with ``--json``, they print JSON
(one line per event for ``attach``, one per server for ``servers``).

``attach`` exits 0 on complete, 1 on failed and 2 when the key is unknown.
``submit`` exits 2 for a function that no installed app defines and no worker
registers (``attach`` for one no app defines and no record has), naming close
matches; ``submit --unregistered`` sends it anyway (for a worker that is not running
yet). ``submit`` warns when no worker is running for the job's function.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.module_loading import autodiscover_modules
from rich.console import Console

from ... import presence
from ...attachment import attach, unserved_text
from ...conf import conf
from ...exceptions import GearattachError, JobNotFound, UnknownTask
from ...gearman.errors import GearmanError
from ...gearman.rendezvous import parse_cached
from ...health import probe_all
from ...housekeeping import parse_age, prunable, prune
from ...models import FINISHED, Job
from ...submission import submit
from ...tasks import registered_tasks, unknown_task_message
from .. import display
from .gearworker import positive_int


def _active_records(targets: list[tuple[str, str]]) -> list[Job]:
    from django.db.models import Q

    from ...models import ACTIVE

    query = Q()
    for function, key in targets:
        query |= Q(function=function, key=key)
    return list(Job.objects.filter(query, status__in=ACTIVE))


def json_value(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
        if not isinstance(value, kind):
            raise argparse.ArgumentTypeError(f"must be a JSON {kind.__name__}")
        return value

    return parse


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be zero or more seconds")
    return value


def aware_datetime(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time, e.g. 2026-12-01T09:00:00+01:00"
        ) from None
    if timezone.is_naive(value):
        raise argparse.ArgumentTypeError(
            f"{text!r} has no time zone; add one, e.g. {text}+00:00 or {text}Z"
        )
    return value


def age(text: str) -> timedelta:
    try:
        return parse_age(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class Command(BaseCommand):
    help = (
        "Submit, attach to or inspect jobs, show the gearmand servers, prune old records, "
        "recover lost jobs."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        p = sub.add_parser("submit", help="Submit a background job and print its key.")
        p.add_argument("function")
        p.add_argument("--key")
        p.add_argument("--args", dest="job_args", type=json_value(list), default=[])
        p.add_argument("--kwargs", dest="job_kwargs", type=json_value(dict), default={})
        p.add_argument("--priority", choices=["high", "normal", "low"])
        p.add_argument("--rerun", action="store_true", help="Run a finished key again.")
        when = p.add_mutually_exclusive_group()
        when.add_argument(
            "--delay", type=seconds, metavar="SECONDS", help="Run it this many seconds from now."
        )
        when.add_argument(
            "--at",
            dest="run_at",
            type=aware_datetime,
            metavar="TIME",
            help="Run it at this ISO 8601 time with a zone (a past time runs it now).",
        )
        p.add_argument(
            "--unregistered",
            action="store_true",
            help="Submit a function that no installed app registers (a foreign worker's).",
        )
        json_help = "Print JSON (the default when the output is not a terminal)."
        p = sub.add_parser(
            "attach", help="Follow the job until its outcome: a progress bar, or JSON lines."
        )
        p.add_argument("function")
        p.add_argument("key")
        p.add_argument("--timeout", type=float)
        p.add_argument("--json", action="store_true", help=json_help)
        p = sub.add_parser(
            "status",
            help="Show the job record (a table, or JSON); with no arguments, the functions "
            "whose waiting jobs no worker on any server can run.",
        )
        p.add_argument("function", nargs="?")
        p.add_argument("key", nargs="?")
        p.add_argument("--json", action="store_true", help=json_help)
        p = sub.add_parser(
            "cancel",
            help="Cancel a job: a queued one at once, a running one through its worker "
            "(it ends cancelled within GEARATTACH['CANCEL_GRACE'] seconds).",
        )
        p.add_argument("function")
        p.add_argument("key")
        p = sub.add_parser("servers", help="Show each server's health and queue.")
        p.add_argument("--json", action="store_true", help=json_help)
        p = sub.add_parser("prune", help="Delete old finished records, in batches.")
        p.add_argument("--older-than", required=True, type=age, metavar="AGE", help="e.g. 30d")
        p.add_argument(
            "--status", action="append", dest="statuses", choices=FINISHED, help="(repeatable)"
        )
        p.add_argument("--batch-size", type=positive_int, default=1000)
        p.add_argument("--dry-run", action="store_true", help="Only count them.")
        p = sub.add_parser(
            "recover",
            help="Run the recovery sweep over every active record now: resubmit the jobs "
            "that gearmand lost, and print what it did.",
        )
        p.add_argument(
            "--dry-run", action="store_true", help="Only say what it would resubmit or mark lost."
        )
        p.add_argument(
            "--grace",
            type=seconds,
            metavar="SECONDS",
            help="How long a job must stay unknown to every server (default RECOVERY_GRACE).",
        )
        p.add_argument(
            "--wait",
            type=seconds,
            default=60.0,
            metavar="SECONDS",
            help="How long to wait for a sweep running in a worker to end (default 60).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            getattr(self, f"do_{action}")(options)
        except (JobNotFound, UnknownTask) as exc:
            self.stderr.write(str(exc))
            sys.exit(2)
        except (GearattachError, GearmanError) as exc:
            raise CommandError(str(exc)) from None

    def _print(self, value: Any) -> None:
        self.stdout.write(json.dumps(value, default=str))
        self.stdout.flush()

    def _human(self, options: dict[str, Any]) -> bool:
        """Whether to print for a person: a terminal, and no ``--json``."""
        return not options.get("json") and self.stdout.isatty()

    def _console(self, options: dict[str, Any]) -> Console:
        stream: Any = self.stdout._out  # the real stream: OutputWrapper adds line endings
        return display.console_for(stream, no_color=options.get("no_color", False))

    def _check_registered(self, function: str) -> bool:
        """Whether an installed app registers ``function`` (their tasks imported first)."""
        autodiscover_modules("tasks")
        return function in registered_tasks()

    def do_submit(self, options: dict[str, Any]) -> None:
        function = options["function"]
        try:
            # submit() refuses a function that no app defines and no worker registers.
            with presence.unchecked() if options["unregistered"] else contextlib.nullcontext():
                job = submit(
                    function,
                    options["job_args"],
                    options["job_kwargs"],
                    key=options["key"],
                    priority=options["priority"],
                    rerun=options["rerun"],
                    run_at=options["run_at"],
                    delay=options["delay"],
                )
        except UnknownTask as exc:
            raise UnknownTask(
                f"{exc} Or pass --unregistered to submit it for a worker that is not running yet."
            ) from None
        self.stdout.write(job.key)
        if not options["unregistered"]:
            self._warn_if_unserved(job)

    def _warn_if_unserved(self, job: Job) -> None:
        """A queued job that no worker runs waits: say so."""
        if presence.unserved(job):
            address = parse_cached(job.server) if job.server else conf.SERVERS[0]
            self.stderr.write(f"warning: {unserved_text(job.function, address)}")

    def do_attach(self, options: dict[str, Any]) -> None:
        function, key = options["function"], options["key"]
        if (
            not self._check_registered(function)
            and not Job.objects.for_key(function, key).exists()
        ):
            raise UnknownTask(unknown_task_message(function))
        if not self._human(options):
            for event in attach(function, key, timeout=options["timeout"]):
                self._print(event.as_dict())
                if event.event == "failed":
                    sys.exit(1)
            return
        record = Job.objects.for_key(function, key).first()
        view = display.AttachDisplay(self._console(options), function, key)
        if record is not None:  # saves attach() reading it again
            events = attach(record, timeout=options["timeout"])
        else:  # perhaps a job another Gearman client submitted
            events = attach(function, key, timeout=options["timeout"])
        last = None
        with view.running(record.status if record is not None else "waiting"):
            for last in events:
                view.show(last)
        assert last is not None
        view.outcome(last)
        if last.event == "failed":
            sys.exit(1)

    def do_cancel(self, options: dict[str, Any]) -> None:
        from ...operations import Cancel, cancel

        outcome = cancel(options["function"], options["key"])
        messages = {
            Cancel.CANCELLED: "cancelled (it had not started)",
            Cancel.REQUESTED: "cancel requested: the worker running it stops it",
            Cancel.FINISHED: "not cancelled: the job had already finished",
        }
        self.stdout.write(messages[outcome.verdict])
        if outcome.verdict is Cancel.FINISHED:
            sys.exit(1)

    def do_status(self, options: dict[str, Any]) -> None:
        if options["function"] is None:
            self._unserved()
            return
        if options["key"] is None:
            raise CommandError("status needs a key after the function (or no arguments)")
        job = Job.objects.for_key(options["function"], options["key"]).first()
        if job is None:
            raise JobNotFound(options["function"], options["key"])
        if self._human(options):
            self._console(options).print(display.job_table(job))
        else:
            self._print(job.as_dict())
        self._warn_if_unserved(job)

    def _unserved(self) -> None:
        from ...health import unserved

        healths = probe_all(conf.SERVERS, timeout=min(conf.TIMEOUT, 3.0))
        flagged = unserved(healths)
        self._print(
            {
                "servers": {h.address: h.reachable for h in healths},
                "unserved": [
                    {"function": u.function, "waiting": u.waiting, "servers": u.servers}
                    for u in flagged
                ],
            }
        )
        for u in flagged:
            self.stderr.write(
                f"warning: {u.function}: {u.waiting} job(s) waiting and no worker on any "
                "server registers it"
            )

    def do_servers(self, options: dict[str, Any]) -> None:
        servers = probe_all(conf.SERVERS, timeout=min(conf.TIMEOUT, 5.0))
        if self._human(options):
            self._console(options).print(display.servers_table(servers))
            return
        for server in servers:
            report: dict[str, Any] = {"server": server.address, "reachable": server.reachable}
            if server.reachable:
                report["version"] = server.version
                report["functions"] = [
                    {
                        "function": f.function,
                        "queued": f.total,
                        "running": f.running,
                        "workers": f.workers,
                    }
                    for f in server.functions
                ]
            else:
                report["error"] = server.error
            self._print(report)

    def do_recover(self, options: dict[str, Any]) -> None:
        from ...worker.recovery import Sweeper
        from ...worker.sweeplock import SweepLock

        grace = conf.RECOVERY_GRACE if options["grace"] is None else options["grace"]
        dry_run = options["dry_run"]
        lock = SweepLock("recovery")
        if not lock.acquire(wait=options["wait"]):
            raise CommandError("another recovery sweep is running; try again later")
        try:
            sweeper = Sweeper(grace=grace)
            checked, actions, down = 0, [], set()
            for records in sweeper.batches():
                checked += len(records)
                actions += sweeper.check(records, dry_run)
                down |= sweeper.unreachable
            suspects = sweeper.suspects
            if suspects and grace > 0:
                self.stdout.write(
                    f"{len(suspects)} job(s) unknown to gearmand; checking again in {grace:g}s "
                    "(the grace period)."
                )
                time.sleep(grace)
                for start in range(0, len(suspects), sweeper.batch):
                    chunk = suspects[start : start + sweeper.batch]
                    records = _active_records(chunk)
                    actions += sweeper.check(records, dry_run)
                    down |= sweeper.unreachable
        finally:
            lock.release()
        for action in actions:
            self.stdout.write(str(action))
        resubmitted = sum(a.kind == "resubmitted" for a in actions)
        lost = sum(a.kind == "lost" for a in actions)
        verb = "would be " if dry_run else ""
        self.stdout.write(
            f"Checked {checked} active records: {resubmitted} {verb}resubmitted, "
            f"{lost} {verb}marked lost."
        )
        for address in sorted(down, key=str):
            self.stderr.write(f"warning: {address} did not answer; its jobs were not checked")

    def do_prune(self, options: dict[str, Any]) -> None:
        statuses = options["statuses"] or FINISHED
        if options["dry_run"]:
            count = prunable(options["older_than"], statuses).count()
            self.stdout.write(f"{count} records would be deleted.")
            return
        count = prune(options["older_than"], statuses, options["batch_size"])
        self.stdout.write(f"Deleted {count} records.")
