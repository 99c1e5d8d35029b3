# Streams (issue 22): the record's stream run and length, and the chunks of its stream.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("django_gearattach", "0010_key_policies"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="stream_run",
            field=models.PositiveIntegerField(
                default=0,
                help_text="Counts the runs workers started: the run of the stream's chunks.",
                verbose_name="stream run",
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="stream_seq",
            field=models.PositiveIntegerField(
                default=0,
                help_text="The number of the last chunk of the current run's stream kept here.",
                verbose_name="stream length",
            ),
        ),
        migrations.CreateModel(
            name="JobChunk",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("run", models.PositiveIntegerField(verbose_name="run")),
                ("seq", models.PositiveIntegerField(verbose_name="sequence number")),
                (
                    "data",
                    models.TextField(help_text="The chunk as JSON text.", verbose_name="data"),
                ),
                (
                    "job",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="chunks",
                        to="django_gearattach.job",
                        verbose_name="job",
                    ),
                ),
            ],
            options={
                "verbose_name": "stream chunk",
                "verbose_name_plural": "stream chunks",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("job", "run", "seq"), name="gearattach_chunk_job_run_seq"
                    )
                ],
            },
        ),
    ]
