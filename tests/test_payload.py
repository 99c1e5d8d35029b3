"""``payload``: JSON job arguments and results, the attach marker, key checks."""

from __future__ import annotations

import datetime
import decimal
import json
import uuid

import pytest

from django_gearattach.exceptions import BadPayload, InvalidKey
from django_gearattach.payload import (
    ATTACH_MARKER,
    check_key,
    decode_arguments,
    decode_result,
    dumps,
    encode_arguments,
    is_attach_marker,
    new_key,
    shown,
    to_json_value,
)

# -- arguments ---------------------------------------------------------------------------


def test_no_arguments_encode_as_an_empty_object_never_as_empty_data():
    assert encode_arguments() == b"{}"
    assert encode_arguments([], {}) == b"{}"
    assert encode_arguments((), None) == b"{}"
    assert decode_arguments(b"{}") == ([], {})


def test_arguments_encode_as_compact_json_with_args_and_kwargs():
    data = encode_arguments((1, "two"), {"three": [3]})
    assert data == b'{"args":[1,"two"],"kwargs":{"three":[3]}}'
    assert decode_arguments(data) == ([1, "two"], {"three": [3]})


def test_only_kwargs_or_only_args_keep_both_keys():
    assert json.loads(encode_arguments(kwargs={"a": 1})) == {"args": [], "kwargs": {"a": 1}}
    assert json.loads(encode_arguments([1])) == {"args": [1], "kwargs": {}}


def test_django_json_types_are_encoded_as_their_text():
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    args, _ = decode_arguments(encode_arguments([when, decimal.Decimal("1.50"), ident]))
    assert args == ["2026-01-02T03:04:05Z", "1.50", "12345678-1234-5678-1234-567812345678"]


def test_unicode_round_trips():
    args, kwargs = decode_arguments(encode_arguments(["żółw €"], {"ключ": "值"}))
    assert (args, kwargs) == (["żółw €"], {"ключ": "值"})


@pytest.mark.parametrize("data", [b"", b"   ", b"\n"])
def test_empty_job_data_means_no_arguments(data):
    # The stock gearman CLI sends none.
    assert decode_arguments(data) == ([], {})


def test_one_of_args_or_kwargs_may_be_left_out():
    assert decode_arguments(b'{"args": [1]}') == ([1], {})
    assert decode_arguments(b'{"kwargs": {"a": 1}}') == ([], {"a": 1})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "job data is not JSON"),
        (b"\xff\xfe", "job data is not JSON"),
        (b"[1, 2]", 'only "args" and "kwargs"'),
        (b'"text"', 'only "args" and "kwargs"'),
        (b"null", 'only "args" and "kwargs"'),
        (b'{"args": [], "kwargs": {}, "extra": 1}', 'only "args" and "kwargs"'),
        (b'{"args": {"a": 1}}', '"args" must be a JSON array'),
        (b'{"args": "1, 2"}', '"args" must be a JSON array'),
        (b'{"kwargs": [1]}', '"kwargs" a JSON object'),
        (b'{"args": null}', '"args" must be a JSON array'),
    ],
)
def test_malformed_job_data_is_bad_payload_saying_what_is_wrong(data, message):
    with pytest.raises(BadPayload, match=message):
        decode_arguments(data)


def test_the_attach_marker_is_not_mistaken_for_arguments():
    with pytest.raises(BadPayload, match='only "args" and "kwargs"'):
        decode_arguments(ATTACH_MARKER)


# -- values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [object(), {1, 2}, b"bytes", {"nested": [object()]}, {(1, 2): 3}]
)
def test_values_json_cannot_hold_are_bad_payload(value):
    with pytest.raises(BadPayload, match="value is not JSON serialisable"):
        dumps(value)


def test_arguments_json_cannot_hold_are_bad_payload():
    with pytest.raises(BadPayload, match="not JSON serialisable"):
        encode_arguments([object()])
    with pytest.raises(BadPayload, match="not JSON serialisable"):
        encode_arguments(kwargs={"when": datetime.datetime.now})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_are_refused_rather_than_sent_as_invalid_json(value):
    with pytest.raises(BadPayload, match="not JSON serialisable"):
        encode_arguments([value])


def test_to_json_value_gives_what_the_record_will_hold():
    value = {"t": (1, 2), "d": decimal.Decimal("2.5"), "n": None, "k": {"x": True}}
    assert to_json_value(value) == {"t": [1, 2], "d": "2.5", "n": None, "k": {"x": True}}
    with pytest.raises(BadPayload):
        to_json_value(object())


# -- results -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"", None),
        (b"42", 42),
        (b'{"a":[1,2]}', {"a": [1, 2]}),
        (b'"text"', "text"),
        (b"null", None),
        (b"true", True),
    ],
)
def test_results_are_json(data, value):
    assert decode_result(data) == value


def test_a_result_that_is_not_json_stays_text():
    # A foreign worker's reply (not this app's JSON) is shown as the text it sent.
    assert decode_result(b"plain text") == "plain text"
    assert decode_result(b"caf\xc3\xa9 ok") == "café ok"
    assert decode_result(b"bad \xff byte") == "bad \ufffd byte"


def test_a_result_round_trips_through_dumps():
    value = {"rows": [[1, "a"], [2, "b"]], "total": 2.5}
    assert decode_result(dumps(value)) == value


# -- the attach marker -------------------------------------------------------------------


def test_the_attach_marker_is_recognised_exactly():
    assert is_attach_marker(ATTACH_MARKER)
    assert json.loads(ATTACH_MARKER) == {"gearattach": "attach"}
    # The same JSON spelled otherwise is job data, not the marker.
    assert not is_attach_marker(b'{"gearattach":"attach"}')
    assert not is_attach_marker(ATTACH_MARKER + b" ")
    assert not is_attach_marker(b"")
    assert not is_attach_marker(encode_arguments())


# -- keys --------------------------------------------------------------------------------


def test_new_keys_are_32_hex_characters_and_distinct():
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert len(key) == 32
        int(key, 16)
        assert check_key(key) == key.encode()


@pytest.mark.parametrize("key", ["k", "report-7", "k" * 63, "é" * 31, "a b/c:d"])
def test_good_keys_come_back_as_bytes(key):
    assert check_key(key) == key.encode()


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "must not be empty"),
        ("a\0b", "must not contain NUL bytes"),
        ("-", 'the unique "-" makes gearmand hash the payload'),
        ("k" * 64, "at most 63 bytes, got 64"),
        ("é" * 32, "at most 63 bytes, got 64"),  # bytes, not characters
        ("x] complete\njob admin.reset_all_passw", "must not contain control characters"),
    ],
)
def test_bad_keys_are_invalid_key_saying_why(key, message):
    with pytest.raises(InvalidKey, match=message):
        check_key(key)


def test_a_too_long_key_gets_a_hint_to_hash_it():
    with pytest.raises(InvalidKey, match=r"Hash long keys, e\.g\. sha256 hex\[:40\]\."):
        check_key("x" * 100)
    with pytest.raises(InvalidKey) as empty:
        check_key("")
    assert "Hash long keys" not in str(empty.value)


@pytest.mark.parametrize("key", [b"bytes-key", 42, None])
def test_a_key_that_is_not_a_string_is_invalid_key(key):
    with pytest.raises(InvalidKey, match=f"must be a string, got {type(key).__name__}"):
        check_key(key)


def test_invalid_key_is_a_value_error():
    # Callers that catch ValueError (operations.cancel, the CLI) catch it too.
    assert issubclass(InvalidKey, ValueError)


def test_a_key_is_logged_as_it_is_or_quoted_when_it_holds_a_control_character():
    assert shown("report-2024") == "report-2024"
    assert shown("x] complete\njob admin") == "'x] complete\\njob admin'"
