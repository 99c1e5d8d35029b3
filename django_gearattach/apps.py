from django.apps import AppConfig


class GearattachConfig(AppConfig):
    name = "django_gearattach"
    verbose_name = "Gearman jobs"
    default_auto_field = "django.db.models.BigAutoField"
