"""Settings of the traced gearworker processes of tests/tracing/test_processes.py.

The test suite's settings, with tracing on and OpenTelemetry's SDK set up as a project
would (docs/tracing.rst): a batch span processor that writes the spans to the file
``GEARATTACH_TEST_SPANS`` names, and the Django and database instrumentations.
"""

import os

from opentelemetry import trace
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES, GEARATTACH
from tests.tracing.exporting import FileExporter

GEARATTACH = {**GEARATTACH, "TRACING": True}

_provider = TracerProvider(resource=Resource.create({"service.name": "gearworker"}))
# A long delay: only the flushes at the end of a process or a stopped job export them.
_exporter = FileExporter(os.environ["GEARATTACH_TEST_SPANS"])
_provider.add_span_processor(BatchSpanProcessor(_exporter, schedule_delay_millis=60_000))
trace.set_tracer_provider(_provider)
DjangoInstrumentor().instrument()
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor

    SQLite3Instrumentor().instrument()
else:
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    PsycopgInstrumentor().instrument()
