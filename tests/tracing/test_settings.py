"""The tracing settings' system checks (gearattach.E003)."""

from __future__ import annotations

from django_gearattach.checks import check_settings


def test_bad_tracing_settings_are_reported(settings) -> None:
    settings.GEARATTACH = {"TRACING": "yes", "TRACE_URL": "https://traces.example/"}
    messages = {m.msg for m in check_settings() if m.id == "gearattach.E003"}
    assert "GEARATTACH['TRACING'] = 'yes' must be True or False." in messages
    assert any("TRACE_URL" in m and "{trace_id}" in m for m in messages)
    settings.GEARATTACH = {"TRACING": True, "TRACE_URL": "https://t.example/{trace_id}"}
    assert check_settings() == []
