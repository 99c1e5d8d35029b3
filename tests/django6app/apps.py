from django.apps import AppConfig


class Django6AppConfig(AppConfig):
    name = "tests.django6app"
    label = "django6app"
