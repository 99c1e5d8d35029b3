"""``python -m django_gearattach.testworker [gearworker options]``: a worker for test suites.

Runs ``manage.py gearworker`` with two settings taken from the environment instead of
the project's settings module, so that the workers a test starts use that test's
gearmand and the test database whatever the settings file says:

* ``GEARATTACH_SERVERS``: comma-separated ``host:port`` list (``GEARATTACH["SERVERS"]``);
* ``GEARATTACH_TEST_DATABASES``: JSON ``{"alias": "database name"}``.

``DJANGO_SETTINGS_MODULE`` names the settings, as for ``django-admin``. The
:mod:`django_gearattach.pytest_plugin` fixtures start workers this way.
"""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str] | None = None) -> None:
    import django
    from django.conf import settings
    from django.core.management import execute_from_command_line

    servers = os.environ.get("GEARATTACH_SERVERS")
    if servers:
        user = getattr(settings, "GEARATTACH", None) or {}
        settings.GEARATTACH = {**user, "SERVERS": servers.split(",")}
    databases = json.loads(os.environ.get("GEARATTACH_TEST_DATABASES") or "{}")
    for alias, name in databases.items():
        settings.DATABASES[alias]["NAME"] = name
    django.setup()
    args = sys.argv[1:] if argv is None else argv
    execute_from_command_line(["testworker", "gearworker", *args])


if __name__ == "__main__":
    main()
