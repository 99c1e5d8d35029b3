# Labels the admin shows, marked for translation (issue 21): no change to the schema.

import uuid

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("django_gearattach", "0008_worker_controls"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="job",
            options={
                "ordering": ["-created_at"],
                "verbose_name": "job",
                "verbose_name_plural": "jobs",
            },
        ),
        migrations.AlterField(
            model_name="job",
            name="arguments",
            field=models.JSONField(
                blank=True,
                help_text="{'args': [...], 'kwargs': {...}} as submitted.",
                null=True,
                verbose_name="arguments",
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="attempts",
            field=models.PositiveIntegerField(default=0, verbose_name="attempts"),
        ),
        migrations.AlterField(
            model_name="job",
            name="cancel_requested_at",
            field=models.DateTimeField(
                blank=True,
                help_text="When someone cancelled the job while it ran; its worker stops it.",
                null=True,
                verbose_name="cancel requested at",
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="created_at",
            field=models.DateTimeField(
                default=django.utils.timezone.now, verbose_name="created at"
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="data",
            field=models.JSONField(
                blank=True, help_text="The last WORK_DATA payload.", null=True, verbose_name="data"
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="error",
            field=models.TextField(blank=True, verbose_name="error"),
        ),
        migrations.AlterField(
            model_name="job",
            name="exception_module",
            field=models.CharField(
                blank=True,
                help_text="The module of the exception the task raised.",
                max_length=255,
                verbose_name="exception module",
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="exception_qualname",
            field=models.CharField(
                blank=True,
                help_text="Its qualified name (Widget.DoesNotExist).",
                max_length=255,
                verbose_name="exception qualname",
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="execution",
            field=models.CharField(
                blank=True,
                help_text="The id of the run that holds the job's claim (fenced execution).",
                max_length=32,
                verbose_name="execution",
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="finished_at",
            field=models.DateTimeField(blank=True, null=True, verbose_name="finished at"),
        ),
        migrations.AlterField(
            model_name="job",
            name="function",
            field=models.CharField(max_length=255, verbose_name="function"),
        ),
        migrations.AlterField(
            model_name="job",
            name="handle",
            field=models.CharField(
                blank=True, help_text="gearmand job handle.", max_length=64, verbose_name="handle"
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="id",
            field=models.UUIDField(
                default=uuid.uuid4,
                editable=False,
                primary_key=True,
                serialize=False,
                verbose_name="id",
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="key",
            field=models.CharField(max_length=63, verbose_name="key"),
        ),
        migrations.AlterField(
            model_name="job",
            name="lease_until",
            field=models.DateTimeField(
                blank=True,
                help_text=(
                    "Until when the running claim holds unless renewed; past it, another "
                    "copy of the job may run."
                ),
                null=True,
                verbose_name="lease until",
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="owner",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="gearattach_jobs",
                to=settings.AUTH_USER_MODEL,
                verbose_name="owner",
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="priority",
            field=models.CharField(default="normal", max_length=8, verbose_name="priority"),
        ),
        migrations.AlterField(
            model_name="job",
            name="progress_denominator",
            field=models.BigIntegerField(default=0, verbose_name="progress denominator"),
        ),
        migrations.AlterField(
            model_name="job",
            name="progress_numerator",
            field=models.BigIntegerField(default=0, verbose_name="progress numerator"),
        ),
        migrations.AlterField(
            model_name="job",
            name="recoveries",
            field=models.PositiveIntegerField(
                default=0,
                help_text="Times the recovery sweep resubmitted the job that gearmand had lost.",
                verbose_name="recoveries",
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="result",
            field=models.JSONField(blank=True, null=True, verbose_name="result"),
        ),
        migrations.AlterField(
            model_name="job",
            name="retries",
            field=models.PositiveIntegerField(
                default=0,
                help_text="Times the task asked to run again (Celery's self.retry()).",
                verbose_name="retries",
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="scheduled_for",
            field=models.DateTimeField(
                blank=True,
                help_text="When the job is to run (run_at/delay); gearmand holds it until then.",
                null=True,
                verbose_name="scheduled for",
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="server",
            field=models.CharField(
                blank=True, help_text="gearmand host:port.", max_length=255, verbose_name="server"
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="session_hash",
            field=models.CharField(
                blank=True,
                help_text=(
                    "A keyed hash of the key of the session that submitted the job (never "
                    "the key)."
                ),
                max_length=64,
                verbose_name="session hash",
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="started_at",
            field=models.DateTimeField(blank=True, null=True, verbose_name="started at"),
        ),
        migrations.AlterField(
            model_name="job",
            name="status",
            field=models.CharField(
                choices=[
                    ("scheduled", "Scheduled"),
                    ("queued", "Queued"),
                    ("running", "Running"),
                    ("complete", "Complete"),
                    ("failed", "Failed"),
                    ("lost", "Lost"),
                    ("cancelled", "Cancelled"),
                ],
                default="queued",
                max_length=16,
                verbose_name="status",
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="traceback",
            field=models.TextField(blank=True, verbose_name="traceback"),
        ),
        migrations.AlterField(
            model_name="job",
            name="worker_host",
            field=models.CharField(blank=True, max_length=255, verbose_name="worker host"),
        ),
        migrations.AlterField(
            model_name="job",
            name="worker_pid",
            field=models.PositiveIntegerField(blank=True, null=True, verbose_name="worker pid"),
        ),
    ]
