from django.apps import AppConfig


class TasksAppConfig(AppConfig):
    name = "tests.tasksapp"
    label = "tasksapp"
