from __future__ import annotations

from django import forms

from django_gearattach.exceptions import InvalidKey
from django_gearattach.payload import check_key

from .tasks import MAX_SECONDS, MAX_STEPS


class SlowJobForm(forms.Form):
    seconds = forms.FloatField(min_value=0, max_value=MAX_SECONDS, initial=3)
    steps = forms.IntegerField(min_value=1, max_value=MAX_STEPS, initial=5)
    key = forms.CharField(
        required=False,
        strip=True,
        help_text="Optional. Start a job with the same key in another tab to attach to it "
        "instead of starting a second one. Empty: a random key.",
    )
    rerun = forms.BooleanField(
        required=False,
        label="Run again if finished",
        help_text="Without this, a key whose job already finished shows its stored outcome.",
    )

    def clean_key(self) -> str | None:
        key: str = self.cleaned_data["key"]
        if not key:
            return None
        try:
            check_key(key)
        except InvalidKey as exc:
            raise forms.ValidationError(str(exc)) from None
        return key
