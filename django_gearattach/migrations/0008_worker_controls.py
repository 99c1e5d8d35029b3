from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("django_gearattach", "0007_job_fencing"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="cancel_requested_at",
            field=models.DateTimeField(
                blank=True,
                help_text="When someone cancelled the job while it ran; its worker stops it.",
                null=True,
            ),
        ),
        migrations.CreateModel(
            name="Throttle",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("function", models.CharField(max_length=255)),
                ("slot", models.IntegerField()),
                ("holder", models.CharField(blank=True, max_length=300)),
                ("until", models.FloatField(default=0.0)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("function", "slot"), name="gearattach_throttle_function_slot"
                    )
                ],
            },
        ),
    ]
