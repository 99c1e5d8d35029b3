"""The test process's tracer provider: the SDK with its in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.tracing.exporting import Spans, as_dict

_exporter = InMemorySpanExporter()


@pytest.fixture(scope="session")
def _provider() -> InMemorySpanExporter:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_exporter))
    trace.set_tracer_provider(provider)  # once per process: OpenTelemetry allows no other
    return _exporter


class Recorded:
    """The spans this process ended since the test began."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter

    def spans(self) -> Spans:
        return Spans([as_dict(span) for span in self.exporter.get_finished_spans()])


@pytest.fixture
def recorded(_provider: InMemorySpanExporter, settings) -> Iterator[Recorded]:
    """Tracing on, and this process's spans recorded in memory."""
    settings.GEARATTACH = {**settings.GEARATTACH, "TRACING": True}
    _provider.clear()
    yield Recorded(_provider)
    _provider.clear()


@pytest.fixture
def tracer(_provider: InMemorySpanExporter) -> trace.Tracer:
    return trace.get_tracer("tests")
