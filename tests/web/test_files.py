"""A stored download served through the ASGI application, as uvicorn serves it."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from django.http import HttpResponse

from django_gearattach.models import Job, Status
from django_gearattach.web.messages import OFFLOAD_FUNCTION
from django_gearattach.web.responses import open_response, replay, response_to_result
from django_gearattach.web.tokens import make_token
from tests.asgi import django_asgi_app

pytestmark = pytest.mark.django_db(transaction=True)


async def asgi_get(path: str, query: str = "") -> tuple[int, dict[str, str], bytes, int]:
    """Status, headers, body and the number of body messages of one GET."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    app = ApplicationCommunicator(django_asgi_app, scope)
    await app.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await app.receive_output(10)
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    body, parts = b"", 0
    while True:
        message = await app.receive_output(10)
        body += message.get("body", b"")
        parts += 1
        if not message.get("more_body"):
            break
    await app.wait(5)
    return start["status"], headers, body, parts


def stored_csv(key: str, size: int) -> tuple[bytes, Any]:
    content = b"month,orders\n" + b"1,2\n" * (size // 4)
    response = HttpResponse(content, content_type="text/csv")
    response["Content-Disposition"] = 'attachment; filename="orders.csv"'
    result = response_to_result(response, private=False)
    Job.objects.create(function=OFFLOAD_FUNCTION, key=key, status=Status.COMPLETE, result=result)
    return content, result


def test_a_download_streams_under_asgi_in_chunks_without_django_s_warning() -> None:
    """Issue 21: Django's FileResponse made every CSV download log "StreamingHttpResponse
    must consume synchronous iterators" under ASGI, and read the file whole first."""
    content, _ = stored_csv("csv", 300_000)
    token = make_token(OFFLOAD_FUNCTION, "csv", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status, headers, body, parts = async_to_sync(asgi_get)(
            f"/gearattach/jobs/{token}/download/"
        )
    assert status == 200
    assert body == content
    assert 'filename="orders.csv"' in headers["content-disposition"]
    assert parts > 2  # sent in chunks, not read whole
    assert not [w for w in caught if "StreamingHttpResponse" in str(w.message)]


def test_the_pages_own_url_serves_the_file_the_same_way() -> None:
    content, _ = stored_csv("page-csv", 100_000)
    # The page's own URL (?gearattach=TOKEN) serves the stored response through replay().
    job = Job.objects.get(key="page-csv")
    response = replay(open_response(job.result))
    assert response is not None
    assert b"".join(response) == content
    assert type(response).__module__ == "django_gearattach.web.files"
