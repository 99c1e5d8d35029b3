from django.apps import AppConfig


class MetricsConfig(AppConfig):
    name = "django_gearattach.metrics"
    label = "gearattach_metrics"
    verbose_name = "django-gearattach metrics"

    def ready(self) -> None:
        from .receivers import connect

        connect()
