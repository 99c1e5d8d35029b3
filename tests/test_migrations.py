"""Data migrations, run forward from the schema before them on the test database."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from django_gearattach.sealing import session_hash, unseal
from django_gearattach.web.capture import verify

APP = "django_gearattach"


@pytest.fixture
def migrate(transactional_db: None) -> Iterator[Any]:
    """``migrate(name)``: move the app to migration ``name``; returns that state's apps."""

    def to(name: str) -> Any:
        executor = MigrationExecutor(connection)
        executor.migrate([(APP, name)])
        executor.loader.build_graph()
        return executor.loader.project_state([(APP, name)]).apps

    yield to
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_0003_hashes_session_keys_and_seals_an_offloaded_requests_secrets(migrate) -> None:
    old = migrate("0002_job_key_index").get_model(APP, "Job")
    view = "tests.testapp.views:sync_report"
    request = {
        "method": "POST",
        "path_info": "/offload/sync/",
        "post": [["colour", "red"], ["csrfmiddlewaretoken", "masked-form-token"]],
        "user_id": 7,
        "session_key": "the-visitors-session-key",
        "csrf_cookie": "the-visitors-csrf-secret",
        "files": {},
    }
    kwargs = {"view": view, "request": request, "signature": "the old scheme's signature"}
    arguments = {"args": [], "kwargs": kwargs}
    old.objects.create(
        function="gearattach.offload",
        key="offloaded",
        arguments=arguments,
        session_key="the-visitors-session-key",
    )
    old.objects.create(function="tests.add", key="plain", session_key="another-session")

    new = migrate("0003_seal_session_secrets").get_model(APP, "Job")

    job = new.objects.get(key="offloaded")
    stored = str(new.objects.filter(pk=job.pk).values().get())
    for secret in ("the-visitors-session-key", "the-visitors-csrf-secret", "masked-form-token"):
        assert secret not in stored
    assert job.session_hash == session_hash("the-visitors-session-key")
    migrated = job.arguments["kwargs"]["request"]
    assert migrated["post"] == [["colour", "red"]]
    assert migrated["session_login"] is True
    assert unseal(migrated["sealed"]) == {
        "session_key": "the-visitors-session-key",
        "csrf_cookie": "the-visitors-csrf-secret",
    }
    # Re-signed: a worker still runs it.
    assert verify(view, migrated, "offloaded", job.arguments["kwargs"]["signature"])
    assert new.objects.get(key="plain").session_hash == session_hash("another-session")
