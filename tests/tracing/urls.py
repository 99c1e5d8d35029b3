from django.urls import include, path

urlpatterns = [path("gearattach/", include("django_gearattach.urls"))]
