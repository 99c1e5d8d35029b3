from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("django_gearattach", "0004_job_scheduled"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="job",
            index=models.Index(fields=["finished_at"], name="gearattach_finished"),
        ),
    ]
