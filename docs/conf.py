"""Sphinx configuration for the django-gearattach documentation."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# autodoc imports the package, so the repository root must be importable and Django
# must be configured (the models module needs the app registry).
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

import django_gearattach  # noqa: E402

project = "django-gearattach"
author = "django-gearattach developers"
copyright = "django-gearattach developers"
release = django_gearattach.__version__
version = ".".join(release.split(".")[:2])

extensions = ["sphinx.ext.autodoc"]

exclude_patterns = ["_build", "bench-results.txt", "recovery-million.txt"]
templates_path: list[str] = []

html_theme = "furo"
html_title = f"django-gearattach {release}"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# Enum and int docstrings inherited by Command/Priority are not ours to show.
autodoc_inherit_docstrings = False
