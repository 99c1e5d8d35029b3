from django.contrib import admin
from django.urls import include, path

from django_gearattach.metrics.views import metrics
from tests.testapp import classviews, views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("gearattach/", include("django_gearattach.urls")),
    path("metrics/", metrics, name="metrics"),
    path("offload/sync/", views.sync_report, name="sync-report"),
    path("offload/async/", views.async_report, name="async-report"),
    path("offload/keyed/", views.keyed_report, name="keyed-report"),
    path("offload/shared/", views.shared_report, name="shared-report"),
    path("offload/yearly/", views.yearly_report, name="yearly-report"),
    path("offload/private/", views.private_report, name="private-report"),
    path("offload/staff-inside/", views.shared_checks_inside, name="shared-checks-inside"),
    path("offload/staff-outside/", views.shared_checks_outside, name="shared-checks-outside"),
    path("offload/item/<int:number>/", views.item, name="item"),
    path("offload/redirect/", views.redirecting, name="redirecting"),
    path("offload/streaming/", views.streaming_report, name="streaming-report"),
    path("offload/streaming-async/", views.async_streaming_report, name="async-streaming"),
    path("offload/csv/", views.csv_export, name="csv-export"),
    path("offload/upload/", views.upload, name="upload"),
    path("offload/upload-queue/", views.upload_queue, name="upload-queue"),
    path("offload/no-files/", views.no_files, name="no-files"),
    path("offload/broken/", views.broken, name="broken"),
    path("offload/missing/", views.missing, name="missing"),
    path("explicit/", views.explicit, name="explicit"),
    path("offload/headers/", views.headers_report, name="headers-report"),
]

urlpatterns += [
    path("classes/inventory/<int:shelf>/", classviews.Inventory.as_view(), name="inventory"),
    path("classes/greeting/", classviews.Greeting.as_view(greeting="Bonjour"), name="greeting"),
    path("classes/users/", classviews.Users.as_view(), name="users"),
    path("preferences/", classviews.Preferences.as_view(), name="preferences"),
    path("preferences/below/", classviews.PreferencesMarkedBelow.as_view()),
    path("preferences/saved/", classviews.saved, name="preferences-saved"),
    path("payment/", classviews.payment, name="payment"),
    path("api/figures/<int:year>/", classviews.Figures.as_view(), name="figures"),
    path("api/echo/", classviews.Echo.as_view(), name="echo"),
    path("classes/async/", classviews.AsyncPing.as_view(), name="async-ping"),
    path("classes/note/", classviews.Note.as_view(), name="note"),
]
