"""``gearworker --reload``: notice changed Python files, as ``runserver`` does (development).

The supervisor asks :meth:`CodeWatcher.changed` between waits for its children. On a
change it stops its worker processes gracefully (each finishes its job in hand) and
replaces itself with a fresh ``gearworker`` (``exec``, same pid and arguments), so
every module, the tasks included, is imported anew.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from django.utils import autoreload


class CodeWatcher:
    """The modification times of every imported module's file (Django's StatReloader)."""

    def __init__(self) -> None:
        self._reloader = autoreload.StatReloader()
        self._mtimes: dict[Path, float] = dict(self._reloader.snapshot_files())

    def changed(self) -> Path | None:
        """A watched file whose modification time changed since the last call, if any."""
        found = None
        for path, mtime in self._reloader.snapshot_files():
            previous = self._mtimes.get(path)
            self._mtimes[path] = mtime
            if previous is not None and previous != mtime and found is None:
                found = path
        return found


def restart() -> None:
    """Replace this process with the same command run anew (never returns)."""
    arguments = autoreload.get_child_arguments()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(arguments[0], arguments)
