"""What the submitter and attacher hosts run (``python -m tests.faults.client ...``).

``submit PREFIX COUNT SECONDS [FUNCTION]``: submit COUNT jobs with keys PREFIX-0 ... as
fast as it can (of ``faults.body``, or FUNCTION).
``load KEYS ROUNDS SECONDS``: submit each of KEYS keys ROUNDS times, shuffled, spread
evenly over SECONDS (the 10,000 submits over 1,000 keys come from two such hosts).
``attach PREFIX FIRST COUNT``: follow the jobs PREFIX-FIRST ... with ``attach()``, one
thread each, until they finish or the host is killed.

A submit that raises (a database or every gearmand unreachable) is retried after a
short pause, as a user would retry: the count of such errors is printed as JSON at
the end with the number of submits.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.faults.settings")
django.setup()

from django.db import close_old_connections  # noqa: E402

from django_gearattach import attach, submit  # noqa: E402

FUNCTION = "faults.body"


def submit_one(key: str, seconds: float, errors: list[str], function: str = FUNCTION) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            submit(function, [key, seconds], key=key)
            return
        except Exception as error:
            errors.append(f"{type(error).__name__}: {error}"[:200])
            close_old_connections()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main(argv: list[str]) -> None:
    command, *rest = argv
    errors: list[str] = []
    submits = 0
    if command == "submit":
        prefix, count, seconds = rest[0], int(rest[1]), float(rest[2])
        function = rest[3] if len(rest) > 3 else FUNCTION
        for i in range(count):
            submit_one(f"{prefix}-{i}", seconds, errors, function)
            submits += 1
    elif command == "load":
        keys, rounds, span, seed = int(rest[0]), int(rest[1]), float(rest[2]), int(rest[3])
        order = [i for _ in range(rounds) for i in range(keys)]
        random.Random(seed).shuffle(order)
        start = time.monotonic()
        gap = span / len(order)
        for n, i in enumerate(order):
            pause = start + n * gap - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            submit_one(f"load-{i}", 0.02, errors)
            submits += 1
    elif command == "attach":
        prefix, first, count = rest[0], int(rest[1]), int(rest[2])

        def follow(key: str) -> None:
            try:
                for _event in attach(FUNCTION, key, timeout=120):
                    pass
            except Exception as error:
                errors.append(f"{type(error).__name__}: {error}"[:200])

        threads = [
            threading.Thread(target=follow, args=(f"{prefix}-{i}",), daemon=True)
            for i in range(first, first + count)
        ]
        for thread in threads:
            thread.start()
        print("attached", flush=True)
        for thread in threads:
            thread.join()
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps({"submits": submits, "errors": len(errors), "first_errors": errors[:3]}))


if __name__ == "__main__":
    main(sys.argv[1:])
