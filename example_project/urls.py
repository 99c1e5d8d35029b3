from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    # The live widget's HTTP fallbacks (JSON status, long-poll, SSE) and downloads.
    path("gearattach/", include("django_gearattach.urls")),
    path("", include("example_project.demo.urls")),
]
