from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class GearattachConfig(AppConfig):
    name = "django_gearattach"
    verbose_name = _("Gearman jobs")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the "gearattach.offload" task, so that gearworker runs @offload views,
        # and the system checks (which run no queries and open no connections here).
        from . import checks  # noqa: F401
        from .web import offloading  # noqa: F401
