"""Files an offloaded request leaves in storage go with its record (security review, 7)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from django_gearattach.housekeeping import prune
from django_gearattach.models import Job, Status
from django_gearattach.operations import cancel
from django_gearattach.web.capture import UPLOAD_DIR, sign
from django_gearattach.web.messages import OFFLOAD_FUNCTION
from django_gearattach.web.responses import DOWNLOAD_DIR, stored_response

pytestmark = pytest.mark.django_db(transaction=True)


def saved(path: str) -> str:
    return default_storage.save(path, ContentFile(b"figures"))


def offloaded(
    key: str, status: str, uploads: list[str], result: object = None, signed: bool = True
) -> Job:
    """A record as the web process writes it, its request signed for its key (or not:
    a job someone else submitted to gearmand)."""
    files = {"document": [{"path": path, "name": "x.txt"} for path in uploads]}
    request = {"method": "POST", "files": files}
    signature = sign("v:v", request, key) if signed else "forged"
    return Job.objects.create(
        function=OFFLOAD_FUNCTION,
        key=key,
        status=status,
        arguments={
            "args": [],
            "kwargs": {"view": "v:v", "request": request, "signature": signature},
        },
        result=result,
        created_at=timezone.now() - timedelta(days=40),
    )


def test_cancelling_a_queued_offloaded_request_deletes_its_uploads(settings) -> None:
    settings.GEARATTACH = {**settings.GEARATTACH, "SERVERS": ["127.0.0.1:9"]}  # unreachable
    upload = saved(f"{UPLOAD_DIR}/abc/figures.txt")
    job = offloaded("queued-upload", Status.QUEUED, [upload])
    assert cancel(job).verdict.value == "cancelled"
    assert not default_storage.exists(upload)


def test_pruning_deletes_downloads_and_leftover_uploads_but_nothing_else() -> None:
    download = saved(f"{DOWNLOAD_DIR}/def/totals.csv")
    upload = saved(f"{UPLOAD_DIR}/ghi/never-read.txt")
    elsewhere = saved("reports/keep-me.txt")  # named by a forged record: not ours to delete
    result = stored_response(
        200, "text/csv", {"download": {"path": download, "name": "t.csv"}}, private=False
    )
    offloaded("done", Status.COMPLETE, [], result)
    offloaded("cancelled", Status.CANCELLED, [upload, elsewhere, f"{UPLOAD_DIR}/../x"])
    # A record whose request this site did not sign for its key names files it may not
    # delete: anyone on gearmand's network can submit one (review 3, finding 2).
    someone_elses = saved(f"{UPLOAD_DIR}/jkl/someone-elses.txt")
    offloaded("forged", Status.FAILED, [someone_elses], signed=False)
    offloaded("copied", Status.FAILED, [someone_elses], signed=True)
    Job.objects.filter(key="copied").update(key="copied-under-another-key")
    assert prune(timedelta(days=30)) == 4
    assert not default_storage.exists(download)
    assert not default_storage.exists(upload)
    assert default_storage.exists(elsewhere)
    assert default_storage.exists(someone_elses)
    for path in (elsewhere, someone_elses):
        default_storage.delete(path)
