from django.urls import path

from . import reports, views

app_name = "demo"

urlpatterns = [
    path("", views.index, name="index"),
    path("report/", reports.report_form, name="report"),
    path("report/build/", reports.build_report, name="report-build"),
    path("batch/", views.batch, name="batch"),
    # Keys may hold any character but NUL, "/" included, hence <path:>.
    path("jobs/<str:function>/<path:key>/", views.job_detail, name="job"),
]
