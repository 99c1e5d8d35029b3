from django.urls import path

from . import views

app_name = "demo"

urlpatterns = [
    path("", views.index, name="index"),
    # Keys may hold any character but NUL, "/" included, hence <path:>.
    path("jobs/<str:function>/<path:key>/", views.job_detail, name="job"),
]
