"""Every visible string translatable: the catalogs are complete and compiled, and pages
render in the visitor's language (the widget's states in a real browser:
tests/web/test_i18n_browser.py)."""

from __future__ import annotations

import gettext
import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client
from django.utils import translation

from django_gearattach.models import Job, Status
from django_gearattach.templatetags.gearattach import widget_strings

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "django_gearattach"
LANGUAGES = ("fr", "de", "es")
#: English words of the processing page and the widget that a translated page must not
#: show (whole words, case-insensitive).
ENGLISH = re.compile(
    r"\b(working on it|waiting for the job|step \d+ of|done\.|failed\.|ready|"
    r"that did not work|the job failed|no worker|download|progress)\b",
    re.IGNORECASE,
)


def read_po(path: Path) -> dict[tuple[str, str | None], list[str]]:
    """msgid (and msgid_plural) -> msgstr forms; a tiny reader of makemessages' output."""
    entries: dict[tuple[str, str | None], list[str]] = {}
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        fuzzy = False
        for line in block.splitlines():
            if line.startswith("#,") and "fuzzy" in line:
                fuzzy = True
            if line.startswith("#") or not line.strip():
                continue
            match = re.match(r'(msgid_plural|msgid|msgstr\[\d+\]|msgstr|msgctxt) (".*")$', line)
            if match:
                key = match.group(1)
                fields[key] = json.loads(match.group(2))
            else:
                fields[key] += json.loads(line)
        if fields.get("msgid"):
            assert not fuzzy, f"{path}: fuzzy entry {fields['msgid']!r}"
            forms = [fields[k] for k in sorted(fields) if k.startswith("msgstr")]
            entries[fields["msgid"], fields.get("msgid_plural")] = forms
    return entries


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_message_is_translated_and_compiled(language: str) -> None:
    po = PACKAGE / "locale" / language / "LC_MESSAGES" / "django.po"
    entries = read_po(po)
    assert len(entries) > 150
    untranslated = [msgid for msgid, forms in entries.items() if not all(forms)]
    assert untranslated == []
    with open(po.with_suffix(".mo"), "rb") as mo:
        compiled = gettext.GNUTranslations(mo)
    for (msgid, plural), forms in entries.items():
        if plural is None:
            assert compiled.gettext(msgid) == forms[0], f"{language}: stale .mo for {msgid!r}"
        else:
            assert compiled.ngettext(msgid, plural, 1) == forms[0], f"stale .mo: {msgid!r}"


def test_the_catalogs_hold_every_string_the_code_marks(tmp_path: Path) -> None:
    """makemessages over the package finds nothing the catalogs lack (nor extra ones)."""
    if shutil.which("xgettext") is None:
        pytest.fail("xgettext is missing: apt-get install gettext (make test does)")
    copy = tmp_path / "django_gearattach"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.mo"))
    subprocess.run(
        [sys.executable, "-m", "django", "makemessages", "-l", "fr", "--no-obsolete"],
        cwd=copy,
        env={**os.environ, "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "tests.settings"},
        check=True,
        capture_output=True,
    )
    found = set(read_po(copy / "locale" / "fr" / "LC_MESSAGES" / "django.po"))
    committed = set(read_po(PACKAGE / "locale" / "fr" / "LC_MESSAGES" / "django.po"))
    assert sorted(found - committed, key=str) == [], "run makemessages and translate"
    assert sorted(committed - found, key=str) == [], "run makemessages --no-obsolete"


@pytest.mark.django_db(transaction=True)
def test_the_processing_page_is_in_the_visitors_language(gearmand) -> None:
    client = Client(headers={"accept-language": "fr"})
    page = client.get("/explicit/", {"gate": "/nonexistent"}).content.decode()
    assert '<html lang="fr" dir="ltr">' in page
    assert '<link rel="icon" href="data:,">' in page  # no /favicon.ico request (issue 21)
    assert "Traitement en cours…" in page  # the heading and the title
    assert "En attente du démarrage de la tâche…" in page  # the widget's status line
    assert 'data-complete="Prêt"' in page
    visible = re.sub(r"<[^>]+>|data-strings=\"[^\"]*\"", " ", page)
    assert ENGLISH.findall(visible) == []
    # The widget's script gets its texts from the page, in the same language.
    attribute = re.search(r'data-strings="([^"]*)"', page)
    assert attribute is not None
    strings = json.loads(html.unescape(attribute.group(1)))
    assert strings["step"] == "Étape %(numerator)s sur %(denominator)s (%(percent)s %%)"
    assert strings["errors"]["the job failed"] == "la tâche a échoué"


@pytest.mark.django_db(transaction=True)
def test_a_finished_failure_renders_translated() -> None:
    from django_gearattach.web.processing import processing_response

    job = Job.objects.create(function="tests.fail", key="k", status=Status.FAILED, error="x")
    request = Client(headers={"accept-language": "de"}).get("/").wsgi_request
    with translation.override("de"):
        page = processing_response(request, job).content.decode()
    assert "Das hat nicht geklappt" in page
    assert "der Auftrag ist fehlgeschlagen" in page  # the app's own failure text
    assert "Fehlgeschlagen." in page


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_widgets_strings_exist_in_every_language(language: str) -> None:
    with translation.override("en"):
        english = widget_strings()
    with translation.override(language):
        translated = widget_strings()
    same = [k for k in english if k != "errors" and translated[k] == english[k]]
    assert same == []
    assert all(translated["errors"][k] != k for k in english["errors"])
