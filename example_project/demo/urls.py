from django.urls import path

from . import account, answers, reports, views

app_name = "demo"

urlpatterns = [
    path("", views.index, name="index"),
    path("report/", reports.report_form, name="report"),
    path("report/build/", reports.build_report, name="report-build"),
    path("report/recent/", reports.recent_report, name="report-recent"),
    path("batch/", views.batch, name="batch"),
    path("answer/", answers.ask, name="answer"),
    path("account/", account.AccountSettings.as_view(), name="account"),
    path("account/saved/", account.account_saved, name="account-saved"),
    path("account/export/", account.Export.as_view(), name="account-export"),
    # Keys may hold any character but NUL, "/" included, hence <path:>.
    path("jobs/<str:function>/<path:key>/", views.job_detail, name="job"),
]
