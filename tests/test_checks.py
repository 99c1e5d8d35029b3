"""System checks: each stable id, and an AppConfig.ready() that needs no database or network."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.core.checks import run_checks

from django_gearattach import checks
from django_gearattach.testing import free_port

ROOT = Path(__file__).resolve().parent.parent


def ids(deploy: bool = False) -> list[str]:
    return [
        m.id
        for m in run_checks(tags=["gearattach"], include_deployment_checks=deploy)
        if m.id and m.id.startswith("gearattach.")
    ]


def messages(check_id: str, deploy: bool = False):
    return [
        m
        for m in run_checks(tags=["gearattach"], include_deployment_checks=deploy)
        if m.id == check_id
    ]


@pytest.fixture(autouse=True)
def no_websockets(monkeypatch):
    """The websocket checks only look at projects that use the routes; here, none does."""
    # (tests/asgi.py does serve them: look for an asgi module in a package that has none)
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "no_such_project.settings")


@pytest.fixture
def gearattach(settings):
    def configure(**values):
        settings.GEARATTACH = values

    settings.ASGI_APPLICATION = None
    return configure


def test_a_sound_configuration_has_no_messages(gearattach):
    gearattach(SERVERS=["127.0.0.1:4730", "10.1.2.3:4730", "[::1]:4731"], MAX_ATTEMPTS=5)
    assert ids() == []


def test_e001_gearattach_is_not_a_dict(settings):
    settings.GEARATTACH = ["127.0.0.1:4730"]
    [message] = messages("gearattach.E001")
    assert "GEARATTACH must be a dict, not list" in message.msg


@pytest.mark.parametrize(
    ("servers", "text"),
    [
        ("127.0.0.1:4730", "must be a list"),
        ([], "is empty"),
        (["127.0.0.1:notaport"], "non-numeric port"),
        (["127.0.0.1:4730", "host:99999"], "port out of range"),
        (["::1:4730"], "write IPv6 gearmand addresses as [host]:port"),
    ],
)
def test_e002_malformed_servers(gearattach, servers, text):
    gearattach(SERVERS=servers)
    [message] = messages("gearattach.E002")
    assert text in message.msg
    assert "host:port" in message.hint


@pytest.mark.parametrize(
    ("key", "value", "text"),
    [
        ("DEFAULT_PRIORITY", "urgent", '"high", "normal" or "low"'),
        ("MAX_ATTEMPTS", 0, "greater than 0"),
        ("TIMEOUT", "soon", "cannot be read"),
        ("PROGRESS_WRITE_INTERVAL", -1, "must not be negative"),
        ("IMMEDIATE", "yes", "True or False"),
        ("STREAM_LIMIT_PER_CLIENT", -1, "must not be negative"),
        ("OFFLOAD_QUEUE_LIMIT", "many", "cannot be read"),
        ("STREAM_MAX_AGE", 0, "greater than 0"),
        ("TIME_LIMIT", -5, "must be a positive number of seconds"),
        ("SOFT_TIME_LIMIT", "1m", "must be a number of seconds or None"),
        ("CANCEL_CHECK_INTERVAL", 0, "greater than 0"),
        ("ASYNC_CONCURRENCY", 0, "greater than 0"),
        ("ASYNC_CONCURRENCY", "many", "cannot be read"),
        ("CANCEL_GRACE", -1, "must not be negative"),
    ],
)
def test_e003_malformed_values(gearattach, key, value, text):
    gearattach(SERVERS=["127.0.0.1:4730"], **{key: value})
    [message] = messages("gearattach.E003")
    assert key in message.msg
    assert text in message.msg


def test_w001_servers_not_set_only_under_deploy(gearattach):
    gearattach(MAX_ATTEMPTS=3)
    assert "gearattach.W001" not in ids()
    [message] = messages("gearattach.W001", deploy=True)
    assert "127.0.0.1:4730" in message.msg


def test_w002_unknown_key(gearattach):
    gearattach(SERVERS=["127.0.0.1:4730"], SERVER=["10.0.0.1:4730"])
    [message] = messages("gearattach.W002")
    assert "GEARATTACH['SERVER']" in message.msg
    assert "SERVERS" in message.hint


def test_w002_names_the_key_that_replaced_a_renamed_one(gearattach):
    gearattach(SERVERS=["127.0.0.1:4730"], POLL_INTERVAL=0.02)
    [message] = messages("gearattach.W002")
    assert "GEARATTACH['POLL_INTERVAL']" in message.msg
    assert "RETRY_INTERVAL" in message.hint


def test_w003_unreachable_server_only_under_deploy(gearattach, gearmand):
    missing = f"127.0.0.1:{free_port()}"
    gearattach(SERVERS=[gearmand.address, missing])
    assert "gearattach.W003" not in ids()
    [message] = messages("gearattach.W003", deploy=True)
    assert missing in message.msg
    assert gearmand.address not in message.msg


@pytest.mark.parametrize(
    ("server", "public"),
    [
        ("8.8.8.8:4730", True),
        ("[2001:4860:4860::8888]:4730", True),
        ("127.0.0.1:4730", False),
        ("[::1]:4730", False),
        ("10.0.0.5:4730", False),
        ("172.16.3.4:4730", False),
        ("192.168.1.20:4730", False),
        ("[fd00::5]:4730", False),
        ("localhost:4730", False),
    ],
)
def test_w004_public_address(gearattach, server, public):
    gearattach(SERVERS=[server])
    found = messages("gearattach.W004")
    assert bool(found) is public
    if public:
        assert "neither a loopback nor a private address" in found[0].msg
        assert "docs/deployment.rst#security" in found[0].hint
        assert "no authentication" in found[0].hint


def test_w004_host_names_are_resolved_under_deploy_only(gearattach, monkeypatch):
    gearattach(SERVERS=["jobs.example.com:4730"])

    def resolve(host, port, *args, **kwargs):
        # What a public DNS answer looks like; checks must not need the real internet.
        assert host == "jobs.example.com"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    assert messages("gearattach.W004") == []
    # Only the resolving check: the deploy reachability check would try to connect.
    [message] = checks.check_server_exposure_of_names()
    assert message.id == "gearattach.W004"
    assert "resolves to 93.184.215.14" in message.msg


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project package whose asgi.py serves the app's websocket routes."""
    package = tmp_path / "wsproject"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "asgi.py").write_text(
        textwrap.dedent(
            """
            from channels.routing import ProtocolTypeRouter, URLRouter
            from django_gearattach.routing import websocket_urlpatterns

            application = ProtocolTypeRouter({"websocket": URLRouter(websocket_urlpatterns)})
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "wsproject"


def test_w005_channels_not_installed(gearattach, settings, project):
    gearattach(SERVERS=["127.0.0.1:4730"])
    settings.ASGI_APPLICATION = f"{project}.asgi.application"
    without = [a for a in settings.INSTALLED_APPS if a != "channels"]
    settings.INSTALLED_APPS = without
    [message] = messages("gearattach.W005")
    assert "'channels' is not in INSTALLED_APPS" in message.msg
    # The module was only read, never imported (importing builds the application).
    assert f"{project}.asgi" not in sys.modules
    settings.INSTALLED_APPS = [*without, "channels"]
    assert messages("gearattach.W005") == []


def test_w006_no_asgi_application(gearattach, settings, project, monkeypatch):
    gearattach(SERVERS=["127.0.0.1:4730"])
    assert "channels" in settings.INSTALLED_APPS
    # No ASGI_APPLICATION: the asgi module next to the settings module is looked at.
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", f"{project}.settings")
    [message] = messages("gearattach.W006")
    assert "ASGI_APPLICATION is not set" in message.msg
    # A project whose asgi.py does not use the routes gets neither warning.
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "no_such_project.settings")
    assert messages("gearattach.W006") == []


def test_importing_the_routes_does_not_count_as_using_them(gearattach, settings):
    """Issue 21: the template tags and the dashboard need the websocket path, and a test
    run or a tool may import the routes; none of that means the project serves them."""
    import django_gearattach.dashboard.views
    import django_gearattach.routing
    import django_gearattach.templatetags.gearattach  # noqa: F401

    gearattach(SERVERS=["127.0.0.1:4730"])
    settings.INSTALLED_APPS = [a for a in settings.INSTALLED_APPS if a != "channels"]
    assert messages("gearattach.W005") == []
    assert messages("gearattach.W006") == []


def test_the_tag_and_the_dashboard_do_not_import_the_routes():
    script = textwrap.dedent(
        """
        import sys
        import django
        django.setup()
        from django.template import engines
        engines["django"].from_string("{% load gearattach %}")
        import django_gearattach.dashboard.views
        assert "django_gearattach.routing" not in sys.modules, "routing imported"
        assert "django_gearattach.web.consumers" not in sys.modules, "consumers imported"
        """
    )
    subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        check=True,
    )


def test_a_new_project_with_the_app_installed_checks_clean(tmp_path):
    """installation.rst in a project from ``startproject``: only "django_gearattach"
    added to INSTALLED_APPS, no routes used. ``manage.py check`` has nothing to say."""
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "mysite"], cwd=tmp_path, check=True
    )
    project = tmp_path / "mysite"
    settings_py = project / "mysite" / "settings.py"
    settings_py.write_text(settings_py.read_text() + '\nINSTALLED_APPS += ["django_gearattach"]\n')
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "gearattach" not in done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_w007_immediate_mode_under_deploy(gearattach):
    gearattach(SERVERS=["127.0.0.1:4730"], IMMEDIATE=True)
    assert "gearattach.W007" not in ids()
    [message] = messages("gearattach.W007", deploy=True)
    assert "unit-test convenience" in message.hint


def test_app_ready_runs_no_query_and_opens_no_connection():
    script = textwrap.dedent(
        """
        import socket
        from django.db.backends.utils import CursorWrapper

        def refuse(*args, **kwargs):
            raise AssertionError("AppConfig.ready() touched the network or the database")

        socket.socket.connect = refuse
        socket.create_connection = refuse
        CursorWrapper.execute = CursorWrapper.executemany = refuse

        import django
        django.setup()
        from django.core.checks import registry
        names = {check.__name__ for check in registry.registry.get_checks(True)}
        assert {"check_settings", "check_servers_reachable"} <= names, names
        print("ready")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={"DJANGO_SETTINGS_MODULE": "tests.settings", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ready"
