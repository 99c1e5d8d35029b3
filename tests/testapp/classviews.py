"""Class-based views the web-layer tests offload: Django's View, generic views, DRF."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.utils.decorators import method_decorator
from django.utils.html import escape
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_post_parameters
from django.views.generic import FormView, ListView, TemplateView
from rest_framework.authentication import BasicAuthentication, SessionAuthentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from django_gearattach.web.decorators import OffloadMixin, offload
from tests.testapp.views import _wait_for_gate


@method_decorator(offload, name="dispatch")
class Inventory(View):
    """A plain View with URL arguments; GET and POST."""

    def get(self, request: HttpRequest, shelf: int) -> HttpResponse:
        request.gearattach.progress(1, 1)  # type: ignore[attr-defined]
        return HttpResponse(
            f'<p id="shelf">{shelf!r} {type(shelf).__name__}</p>'
            f'<p id="method">GET</p><p id="worker">{hasattr(request, "gearattach")}</p>'
        )

    def post(self, request: HttpRequest, shelf: int) -> HttpResponse:
        return HttpResponse(
            f'<p id="method">POST</p><p id="item">{escape(request.POST["item"])}</p>'
        )


class Greeting(OffloadMixin, TemplateView):
    """The mixin, with as_view() arguments the worker must find again."""

    template_name = "testapp/greeting.html"
    greeting = "Hello"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        user = self.request.user
        return {
            **super().get_context_data(**kwargs),
            "greeting": self.greeting,
            "name": self.request.GET.get("name", ""),
            "user": user.get_username() if user.is_authenticated else "anonymous",
        }


@method_decorator(offload(key=lambda request: "all-users"), name="dispatch")
class Users(ListView):  # type: ignore[type-arg]
    model = User
    template_name = "testapp/user_list.html"
    ordering = ["username"]


class PasswordForm(forms.Form):
    name = forms.CharField()
    password = forms.CharField(widget=forms.PasswordInput)
    pin = forms.CharField(required=False)
    language = forms.ChoiceField(choices=[("en", "English"), ("fr", "Français")])


@method_decorator(sensitive_post_parameters("pin"), name="dispatch")
@method_decorator(offload, name="dispatch")
class Preferences(FormView):  # type: ignore[type-arg]
    """A form with a password input and a field marked sensitive; the answer sets a
    signed cookie and a header, and redirects (303) after the POST."""

    form_class = PasswordForm
    template_name = "testapp/password_form.html"

    def form_valid(self, form: PasswordForm) -> HttpResponse:
        _wait_for_gate(self.request)
        data = form.cleaned_data
        response = HttpResponseRedirect("/preferences/saved/")
        response.status_code = 303
        response.set_signed_cookie("language", data["language"], salt="prefs", httponly=True)
        response.set_cookie("theme", "dark", max_age=3600, samesite="Strict")
        response["X-Password-Length"] = str(len(data["password"]))
        response["X-Pin"] = data["pin"]
        return response


@method_decorator(offload, name="dispatch")
@method_decorator(sensitive_post_parameters("pin"), name="dispatch")
class PreferencesMarkedBelow(FormView):  # type: ignore[type-arg]
    """The same view with ``sensitive_post_parameters`` listed below ``offload``: the
    marking only runs in the worker, so ``offload`` reads it from the class."""

    form_class = PasswordForm
    template_name = "testapp/password_form.html"
    form_valid = Preferences.form_valid


def saved(request: HttpRequest) -> HttpResponse:
    """Not offloaded: reads the signed cookie the offloaded view set."""
    language = request.get_signed_cookie("language", default="none", salt="prefs")
    return HttpResponse(f'<p id="language">{escape(language)}</p>')


@csrf_exempt  # an API for programs: no CSRF cookie to send
@offload(sensitive=["card"])
def payment(request: HttpRequest) -> HttpResponse:
    """A function view with a field named sensitive in @offload; JSON bodies too."""
    card = request.POST.get("card") or ""
    body = request.body.decode() if request.content_type == "application/json" else ""
    return JsonResponse({"card_digits": len(card), "body": body})


@method_decorator(offload, name="dispatch")
class Figures(APIView):  # type: ignore[misc]
    """Django REST framework: basic auth (checked in the web process), a permission."""

    authentication_classes = [BasicAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]
    renderer_classes = [JSONRenderer]

    def get(self, request: Request, year: int) -> Response:
        request._request.gearattach.progress(1, 1)
        response = Response({"year": year, "user": request.user.get_username(), "total": 42})
        response["X-Report"] = f"figures-{year}"
        return response

    def post(self, request: Request, year: int) -> Response:
        return Response({"year": year, "posted": request.data}, status=201)


class Echo(OffloadMixin, APIView):  # type: ignore[misc]
    """DRF with the mixin, anonymous."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    renderer_classes = [JSONRenderer]

    def post(self, request: Request) -> Response:
        return Response({"echo": request.data, "worker": hasattr(request._request, "gearattach")})


@method_decorator(offload, name="dispatch")
class AsyncPing(View):
    """An async class-based view."""

    async def get(self, request: HttpRequest) -> HttpResponse:
        await request.gearattach.aprogress(1, 1)  # type: ignore[attr-defined]
        return HttpResponse('<p id="async">pong</p>')


@method_decorator(offload, name="post")
class Note(View):
    """Offloaded on one handler: refused with advice (the job's link is a GET)."""

    def get(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse('<p id="where">web</p>')

    def post(self, request: HttpRequest) -> HttpResponse:
        note = escape(request.POST.get("note", ""))
        return HttpResponse(f'<p id="where">worker</p><p id="note">{note}</p>')
