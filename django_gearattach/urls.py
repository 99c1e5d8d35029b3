"""HTTP fallbacks, downloads and the widget's script and style:
``path("gearattach/", include("django_gearattach.urls"))``."""

from __future__ import annotations

from django.urls import path

from .web import assets, views

app_name = "gearattach"

urlpatterns = [
    path("jobs/<str:token>/", views.status, name="status"),
    path("jobs/<str:token>/poll/", views.poll, name="poll"),
    path("jobs/<str:token>/events/", views.events, name="events"),
    path("jobs/<str:token>/download/", views.download, name="download"),
    path("widget/<str:name>", assets.serve, name="asset"),
]
