"""No session secret at rest in readable form.

``Job.session_key`` held the raw key of the session that submitted a job, and an
offloaded request's arguments held the visitor's session key and CSRF secret in clear:
anyone who could read a record could sign in as that visitor. This migration replaces
the column with a keyed hash (``session_hash``) and seals the offloaded requests'
secrets (:mod:`django_gearattach.sealing`), re-signing each request so that the
workers still run it. It runs with the project's ``SECRET_KEY``; reversing it keeps
the hashes (a hash cannot be turned back into a key) and leaves the secrets sealed.
"""

from typing import Any

from django.db import migrations, models

OFFLOAD_FUNCTION = "gearattach.offload"


def seal_secrets(apps: Any, schema_editor: Any) -> None:
    from ..sealing import seal, session_hash
    from ..web.capture import CSRF_FIELD, sign

    Job = apps.get_model("django_gearattach", "Job")
    alias = schema_editor.connection.alias
    jobs = Job.objects.using(alias)
    for job in jobs.exclude(session_key="").only("pk", "session_key").iterator():
        jobs.filter(pk=job.pk).update(session_hash=session_hash(job.session_key))
    for job in jobs.filter(function=OFFLOAD_FUNCTION).only("pk", "key", "arguments").iterator():
        kwargs = (job.arguments or {}).get("kwargs") or {}
        request, view = kwargs.get("request"), kwargs.get("view")
        if not isinstance(request, dict) or not isinstance(view, str) or "sealed" in request:
            continue
        credentials = {
            "session_key": request.pop("session_key", None),
            "csrf_cookie": request.pop("csrf_cookie", None),
        }
        request["sealed"] = seal(credentials) if any(credentials.values()) else None
        request.setdefault("shared", False)
        signed_in = request.get("user_id") is not None and bool(credentials["session_key"])
        request.setdefault("session_login", signed_in)
        if isinstance(request.get("post"), list):
            request["post"] = [item for item in request["post"] if item[:1] != [CSRF_FIELD]]
        kwargs["signature"] = sign(view, request, job.key)
        jobs.filter(pk=job.pk).update(arguments=job.arguments)


class Migration(migrations.Migration):
    dependencies = [
        ("django_gearattach", "0002_job_key_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="session_hash",
            field=models.CharField(
                blank=True,
                help_text=(
                    "A keyed hash of the key of the session that submitted the job "
                    "(never the key)."
                ),
                max_length=64,
            ),
        ),
        migrations.RunPython(seal_secrets, migrations.RunPython.noop, elidable=True),
        migrations.RemoveField(model_name="job", name="session_key"),
    ]
