"""Class-based views behind ``@offload`` that answer as the view made them.

``/account/`` is a ``FormView`` with ``OffloadMixin``: a slow "apply settings" job that
checks a password (sealed in the job record, and removed from it once the view has
run), sets a signed language cookie and redirects after the POST; the browser follows
the redirect and sends the cookie. ``/account/export/`` is a ``View`` offloaded with
``method_decorator``: its CSV downloads under the name the view gave it.
"""

from __future__ import annotations

import csv
import io
import time

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.generic import FormView

from django_gearattach.decorators import OffloadMixin, offload

LANGUAGES = [("en", "English"), ("fr", "Français"), ("de", "Deutsch")]
COOKIE = "demo_language"
SALT = "demo.account"


class SettingsForm(forms.Form):
    display_name = forms.CharField(max_length=60)
    language = forms.ChoiceField(choices=LANGUAGES)
    password = forms.CharField(
        widget=forms.PasswordInput, help_text="Any word of 4 letters or more (a demo)."
    )

    def clean_password(self) -> str:
        password: str = self.cleaned_data["password"]
        if len(password) < 4:
            raise forms.ValidationError("At least 4 characters.")
        return password


class AccountSettings(OffloadMixin, FormView):  # type: ignore[type-arg]
    form_class = SettingsForm
    template_name = "demo/account_form.html"
    offload_template = "demo/working.html"
    offload_methods = ["post"]  # the empty form is quick: shown at once, here

    def form_valid(self, form: SettingsForm) -> HttpResponse:
        progress = self.request.gearattach  # type: ignore[attr-defined]
        for step in range(1, 4):
            time.sleep(0.3)  # the slow part: checking the password, saving, notifying
            progress.progress(step, 3)
        response = HttpResponseRedirect(reverse("demo:account-saved"))
        response.status_code = 303  # See Other: the browser GETs the next page
        response.set_signed_cookie(
            COOKIE, form.cleaned_data["language"], salt=SALT, httponly=True, samesite="Lax"
        )
        messages.success(self.request, f"Saved for {form.cleaned_data['display_name']}.")
        return response


def account_saved(request: HttpRequest) -> HttpResponse:
    language = request.get_signed_cookie(COOKIE, default="", salt=SALT) or ""
    context = {"language": dict(LANGUAGES).get(language, "not set"), "code": language}
    return render(request, "demo/account_saved.html", context)


@method_decorator(offload(template="demo/working.html"), name="dispatch")
class Export(View):
    def get(self, request: HttpRequest) -> HttpResponse:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["month", "orders"])
        for month in range(1, 13):
            time.sleep(0.05)
            writer.writerow([month, 100 + month])
            request.gearattach.progress(month, 12)  # type: ignore[attr-defined]
        response = HttpResponse(out.getvalue(), content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="orders-2024.csv"'
        return response
