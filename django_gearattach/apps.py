from django.apps import AppConfig


class GearattachConfig(AppConfig):
    name = "django_gearattach"
    verbose_name = "Gearman jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the "gearattach.offload" task, so that gearworker runs @offload views.
        from . import offloading  # noqa: F401
