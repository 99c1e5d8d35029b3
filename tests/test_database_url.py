"""``DATABASE_URL`` as the example project and the test settings read it (dj-database-url)."""

from __future__ import annotations

import os

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from example_project.settings import database_from_url


def test_postgres_query_parameters_become_typed_options():
    database = database_from_url(
        "postgres://app:s%40cret@db.internal:6432/shop"
        "?server_side_binding=true&prepare_threshold=5&sslmode=require"
    )
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert (database["USER"], database["PASSWORD"]) == ("app", "s@cret")
    assert (database["HOST"], database["PORT"], database["NAME"]) == ("db.internal", 6432, "shop")
    # A string "true" would be ignored by Django's PostgreSQL backend; it must be a bool.
    assert database["OPTIONS"] == {
        "server_side_binding": True,
        "prepare_threshold": 5,
        "sslmode": "require",
    }


def test_sqlite_gets_a_shared_file_in_wal_mode(tmp_path):
    database = database_from_url(f"sqlite:///{tmp_path}/demo.sqlite3")
    assert database["NAME"] == f"{tmp_path}/demo.sqlite3"
    assert "journal_mode=WAL" in database["OPTIONS"]["init_command"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "give SQLite a file"),
        ("sqlite://:memory:", "give SQLite a file"),
        ("mongodb://localhost/db", "Scheme 'mongodb://' is unknown"),
        ("postgres://host:notaport/db", "not a valid url"),
    ],
)
def test_a_url_it_cannot_use_is_a_clear_error(url, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        database_from_url(url)


@pytest.mark.skipif(
    not os.environ.get("GEARATTACH_PG_OPTIONS"),
    reason="only the django6-postgres leg sets GEARATTACH_PG_OPTIONS",
)
def test_the_prepared_statements_leg_really_enables_them():
    options = connection.settings_dict["OPTIONS"]
    assert options["server_side_binding"] is True
    assert options["prepare_threshold"] == 5
