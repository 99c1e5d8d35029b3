# The record's runs of a key (issue 24, key policies): run number and reason, the policy,
# the run waiting to follow, the previous complete result.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("django_gearattach", "0009_translatable_labels"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="next_arguments",
            field=models.JSONField(
                blank=True,
                help_text="The arguments of the run that waits.",
                null=True,
                verbose_name="next arguments",
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="next_reason",
            field=models.CharField(
                blank=True,
                choices=[("follow_up", "Follow-up"), ("replace", "Replace")],
                help_text=(
                    "A run waits to start when the current one ends: a follow-up, or a "
                    "replacement (latest wins). Empty: none."
                ),
                max_length=16,
                verbose_name="next run",
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="on_conflict",
            field=models.CharField(
                choices=[
                    ("join", "Join the run"),
                    ("follow_up", "One follow-up run"),
                    ("replace", "Latest wins"),
                ],
                default="join",
                help_text="The key policy the current run was submitted under.",
                max_length=16,
                verbose_name="on conflict",
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="previous_finished_at",
            field=models.DateTimeField(blank=True, null=True, verbose_name="previous finished at"),
        ),
        migrations.AddField(
            model_name="job",
            name="previous_result",
            field=models.JSONField(
                blank=True,
                help_text=(
                    "The result of the key's last complete run before the current one (served "
                    "while a stale outcome is refreshed)."
                ),
                null=True,
                verbose_name="previous result",
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="previous_run_number",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="The number of the run that previous_result is of.",
                null=True,
                verbose_name="previous run number",
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="run_number",
            field=models.PositiveIntegerField(
                default=1,
                help_text=(
                    "The number of the key's current run: each rerun, refresh, follow-up or "
                    "replacement counts one more."
                ),
                verbose_name="run number",
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="run_reason",
            field=models.CharField(
                choices=[
                    ("submit", "First submit"),
                    ("rerun", "Rerun asked for"),
                    ("expired", "Stored outcome too old"),
                    ("refresh", "Stale outcome refreshed"),
                    ("follow_up", "Follow-up"),
                    ("replace", "Replaced the run before"),
                ],
                default="submit",
                max_length=16,
                verbose_name="run reason",
            ),
        ),
    ]
