"""Integrations with Django's tasks framework (the Celery-compatible API is
:mod:`django_gearattach.celery`, kept where Celery users import it)."""
