"""Tracing in the web layer: the processing page's trace context, the hub's subscriber
spans, and trace ids on the dashboard's slowest list."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from django_gearattach import submit
from django_gearattach.dashboard.queries import snapshot
from django_gearattach.web.hub import get_hub
from tests.test_dashboard import DASHBOARD, finished_job

pytestmark = pytest.mark.django_db


def context_of(span) -> tuple[str, str]:
    context = span.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


@pytest.mark.usefixtures("gearmand")  # no worker: the job stays queued, the page is shown
def test_the_processing_page_tells_a_frontend_tracer_the_jobs_trace(recorded, tracer, settings):
    with tracer.start_as_current_span("request") as span:
        page = Client().get("/offload/sync/").content.decode()
    assert "traceparent" not in page  # not without the setting
    settings.GEARATTACH = {**settings.GEARATTACH, "TRACE_CONTEXT_IN_PAGE": True}
    with tracer.start_as_current_span("request") as span:
        page = Client().get("/offload/sync/").content.decode()
    trace_id, span_id = context_of(span)
    assert re.search(
        f'<meta name="traceparent" content="00-{trace_id}-{span_id}-[0-9a-f]{{2}}">', page
    )


@pytest.mark.django_db(transaction=True)
async def test_each_hub_subscriber_records_its_wait_linked_to_the_jobs_trace(
    recorded, tracer, settings
):
    from asgiref.sync import sync_to_async

    settings.GEARATTACH = {**settings.GEARATTACH, "IMMEDIATE": True}
    with tracer.start_as_current_span("request") as span:
        job = await sync_to_async(submit)("tests.add", (1, 2))
    hub = get_hub()
    with tracer.start_as_current_span("websocket") as socket:
        async with hub.subscribe("tests.add", job.key) as subscription:
            messages = [m.type async for m in subscription]
    assert messages[-1] == "complete"
    received: list[object] = []
    stop = hub.listen("tests.add", job.key, received.append)
    stop()
    await hub.aclose()
    waits = recorded.spans().named("wait tests.add")
    assert len(waits) == 2
    first = next(w for w in waits if w["parent_id"] == context_of(socket)[1])
    assert first["attributes"]["gearattach.outcome"] == "complete"
    assert first["attributes"]["gearattach.told"] == "at once"
    assert [(x["trace_id"], x["span_id"]) for x in first["links"]] == [context_of(span)]
    (second,) = [w for w in waits if w is not first]
    assert second["attributes"]["gearattach.outcome"] == "left"  # it stopped listening


def test_the_slowest_list_shows_the_trace_of_the_job_behind_its_p95(
    recorded, admin_client, settings
):
    for i in range(1, 21):
        job = finished_job(f"r{i}", "reports.build", "complete", ago=60, wait=0.1, run=i)
        trace_id = f"{i:032x}"
        job.arguments = {
            "args": [],
            "kwargs": {},
            "trace": {"traceparent": f"00-{trace_id}-{'1' * 16}-01"},
        }
        job.save()
    assert snapshot("hour").functions[0].exemplars[0.95] is not None
    settings.GEARATTACH = {
        **settings.GEARATTACH,
        "TRACE_URL": "https://traces.example/t/{trace_id}",
    }
    html = admin_client.get(reverse(DASHBOARD)).content.decode()
    p95 = f"{19:032x}"  # the 19th of 20 jobs by run time
    assert f'<a href="https://traces.example/t/{p95}">trace <code>{p95}</code></a>' in html
    settings.GEARATTACH = {**settings.GEARATTACH, "TRACING": False}
    assert "gearattach-trace" not in admin_client.get(reverse(DASHBOARD)).content.decode()
