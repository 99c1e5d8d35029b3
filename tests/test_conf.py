"""``conf``: defaults, values read from ``settings.GEARATTACH`` at access time, conversions.

Range and type checks of the values live in :mod:`django_gearattach.checks` (see
tests/test_checks.py); here, what ``conf`` itself returns and refuses.
"""

from __future__ import annotations

import pytest
from django.test import override_settings

from django_gearattach.conf import DEFAULTS, Settings, conf
from django_gearattach.gearman.rendezvous import Address


def servers() -> list[Address]:
    return conf.SERVERS


#: Every setting but SERVERS, with the type its property returns.
TYPED = {
    "MAX_ATTEMPTS": int,
    "TIMEOUT": float,
    "RETRY_INTERVAL": float,
    "RETRY_INTERVAL_MAX": float,
    "CHECK_INTERVAL": float,
    "RECOVERY_INTERVAL": float,
    "RECOVERY_GRACE": float,
    "PROGRESS_WRITE_INTERVAL": float,
    "DEFAULT_PRIORITY": str,
    "IMMEDIATE": bool,
    "TRACING": bool,
    "TRACE_CONTEXT_IN_PAGE": bool,
    "TRACE_URL": str,
    "TOKEN_MAX_AGE": int,
    "LONGPOLL_MAX_TIMEOUT": float,
    "STREAM_LIMIT_PER_CLIENT": int,
    "STREAM_LIMIT_PER_PROCESS": int,
    "STREAM_MAX_AGE": float,
    "CAPTURED_HEADERS": list,
    "WAIT_THREADS_PER_PROCESS": int,
    "WSGI_MAX_WAIT": float,
    "OFFLOAD_QUEUE_LIMIT": int,
    "OFFLOAD_MAX_UPLOAD_SIZE": int,
    "EXTERNAL_TASKS": list,
    "STATIC_ASSETS": bool,
    "DASHBOARD_REFRESH": float,
    "LEASE": float,
    "CANCEL_CHECK_INTERVAL": float,
    "CANCEL_GRACE": float,
    "ASYNC_CONCURRENCY": int,
}
#: Settings whose default is None (no limit).
UNSET = {"TIME_LIMIT", "SOFT_TIME_LIMIT", "METRICS_TOKEN"}


def test_every_default_has_a_property_and_every_property_a_default():
    properties = {name for name, value in vars(Settings).items() if isinstance(value, property)}
    assert properties == set(DEFAULTS)
    assert set(TYPED) == set(DEFAULTS) - {"SERVERS"} - UNSET
    assert all(DEFAULTS[name] is None for name in UNSET)


@pytest.mark.parametrize("name", sorted(TYPED))
def test_an_unset_value_is_the_default_with_its_type(settings, name):
    settings.GEARATTACH = {}
    value = getattr(conf, name)
    assert value == DEFAULTS[name]
    assert type(value) is TYPED[name]


@pytest.mark.parametrize("empty", [{}, None])
def test_no_user_settings_at_all_gives_the_default_server(settings, empty):
    settings.GEARATTACH = empty
    assert servers() == [Address("127.0.0.1", 4730)]
    assert conf.MAX_ATTEMPTS == 3


def test_without_a_gearattach_setting_the_defaults_apply(settings):
    del settings.GEARATTACH
    assert servers() == [Address("127.0.0.1", 4730)]
    assert conf.DEFAULT_PRIORITY == "normal"


def test_values_are_read_at_access_time_so_override_settings_works():
    with override_settings(GEARATTACH={"MAX_ATTEMPTS": 7, "SERVERS": ["10.0.0.5:4731"]}):
        assert conf.MAX_ATTEMPTS == 7
        assert servers() == [Address("10.0.0.5", 4731)]
        with override_settings(GEARATTACH={"SERVERS": ["[::1]:4732", "gm"]}):
            assert conf.MAX_ATTEMPTS == 3  # back to the default: the whole dict is replaced
            assert servers() == [Address("::1", 4732), Address("gm", 4730)]
        assert servers() == [Address("10.0.0.5", 4731)]


def test_a_fresh_settings_object_reads_the_same_values(settings):
    settings.GEARATTACH = {"TIMEOUT": 2.5}
    assert Settings().TIMEOUT == conf.TIMEOUT == 2.5


@pytest.mark.parametrize(
    ("name", "given", "read"),
    [
        ("MAX_ATTEMPTS", "5", 5),
        ("TIMEOUT", 3, 3.0),
        ("TIMEOUT", "0.25", 0.25),
        ("TOKEN_MAX_AGE", 60.9, 60),
        ("DEFAULT_PRIORITY", "high", "high"),
        ("IMMEDIATE", 1, True),
        ("IMMEDIATE", 0, False),
        ("STREAM_LIMIT_PER_CLIENT", 0, 0),
    ],
)
def test_values_are_converted_to_the_setting_type(settings, name, given, read):
    settings.GEARATTACH = {name: given}
    value = getattr(conf, name)
    assert value == read
    assert type(value) is TYPED[name]


@pytest.mark.parametrize(
    ("name", "given", "error", "message"),
    [
        ("MAX_ATTEMPTS", "three", ValueError, "invalid literal for int"),
        ("TIMEOUT", "soon", ValueError, "could not convert string to float"),
        ("TIMEOUT", None, TypeError, "float"),
        ("STREAM_MAX_AGE", [], TypeError, "float"),
    ],
)
def test_a_value_that_does_not_convert_raises_when_read(settings, name, given, error, message):
    # (manage.py check reports these as gearattach.E003 before anything reads them.)
    settings.GEARATTACH = {name: given}
    with pytest.raises(error, match=message):
        getattr(conf, name)


def test_servers_accept_a_list_or_a_tuple_of_host_port_strings(settings):
    settings.GEARATTACH = {"SERVERS": ("127.0.0.1:4730", " 10.1.2.3:5000 ")}
    assert servers() == [Address("127.0.0.1", 4730), Address("10.1.2.3", 5000)]
    settings.GEARATTACH = {"SERVERS": ["127.0.0.1:4730", "10.1.2.3:5000"]}
    assert servers() == [Address("127.0.0.1", 4730), Address("10.1.2.3", 5000)]


def test_each_read_of_servers_is_a_new_list(settings):
    settings.GEARATTACH = {"SERVERS": ["127.0.0.1:4730"]}
    first = conf.SERVERS
    first.append(Address("evil", 1))
    assert servers() == [Address("127.0.0.1", 4730)]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "at least one gearmand address is needed"),
        (["127.0.0.1:port"], "non-numeric port"),
        (["127.0.0.1:0"], "port out of range"),
        (["127.0.0.1:65536"], "port out of range"),
        ([":4730"], "has no host"),
        (["::1:4730"], r"write IPv6 gearmand addresses as \[host\]:port"),
        (["[::1"], "malformed IPv6"),
        ([""], "must be a 'host:port' string"),
        ([4730], "must be a 'host:port' string"),
    ],
)
def test_malformed_servers_raise_a_clear_value_error(settings, value, message):
    settings.GEARATTACH = {"SERVERS": value}
    with pytest.raises(ValueError, match=message):
        servers()


def test_an_unhashable_servers_value_is_parsed_uncached_with_the_same_error(settings):
    settings.GEARATTACH = {"SERVERS": [["127.0.0.1", 4730]]}  # a list inside: unhashable
    with pytest.raises(ValueError, match="must be a 'host:port' string"):
        servers()


def test_a_bare_string_for_servers_is_refused(settings):
    settings.GEARATTACH = {"SERVERS": "gearmand"}
    with pytest.raises((TypeError, ValueError), match=r"SERVERS|list"):
        servers()


@pytest.mark.parametrize("value", ["X-Region", ["X-Region", 3]])
def test_captured_headers_must_be_a_list_of_names(settings, value):
    settings.GEARATTACH = {"CAPTURED_HEADERS": value}
    with pytest.raises(ValueError, match=r"must be a list of header names, such as \["):
        _ = conf.CAPTURED_HEADERS


@pytest.mark.parametrize("value", ["short", 12345678901234567])
def test_the_metrics_token_must_be_a_long_string(settings, value):
    settings.GEARATTACH = {"METRICS_TOKEN": value}
    with pytest.raises(ValueError, match="at least 16 characters"):
        _ = conf.METRICS_TOKEN
