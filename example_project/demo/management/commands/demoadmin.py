"""``manage.py demoadmin``: the demo's admin login, made once and printed each time.

The first run creates the superuser ``admin`` with a random password, which it keeps
in ``example_project/.demo/admin-password`` (ignored by git) to print it again on the
next runs. ``rundemo.py`` runs it after ``migrate``.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

STATE_DIR = Path(__file__).resolve().parents[3] / ".demo"
USERNAME = "admin"


class Command(BaseCommand):
    help = "Create the demo's admin login (once) and print it: 'admin PASSWORD'."

    def handle(self, *args: Any, **options: Any) -> None:
        kept = STATE_DIR / "admin-password"
        users = get_user_model()._default_manager
        if not users.filter(username=USERNAME).exists():
            password = secrets.token_urlsafe(9)
            users.create_superuser(USERNAME, "admin@example.invalid", password)
            STATE_DIR.mkdir(exist_ok=True)
            kept.write_text(password + "\n")
            kept.chmod(0o600)
        elif kept.exists():
            password = kept.read_text().strip()
        else:
            password = "(the one you set)"
        self.stdout.write(f"{USERNAME} {password}")
