from django.apps import AppConfig


class CeleryappConfig(AppConfig):
    name = "tests.celeryapp"
    label = "celeryapp"
