"""Spans as JSON lines in a file: how the tests read the spans of other processes."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


def as_dict(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
        "kind": span.kind.name,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "events": [event.name for event in span.events],
        "links": [
            {
                "trace_id": f"{link.context.trace_id:032x}",
                "span_id": f"{link.context.span_id:016x}",
                "attributes": dict(link.attributes or {}),
            }
            for link in span.links
        ],
        "scope": span.instrumentation_scope.name if span.instrumentation_scope else "",
        "pid": os.getpid(),
    }


class FileExporter(SpanExporter):
    """Appends one JSON line per span to ``path`` (several processes may share it)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(as_dict(span)) + "\n" for span in spans)
        with open(self.path, "a") as out:
            out.write(lines)  # one write per batch: lines of two processes never mix
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


@dataclass
class Spans:
    """Spans read back as dicts, with lookups by name and id."""

    items: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> Spans:
        if not path.exists():
            return cls()
        return cls([json.loads(line) for line in path.read_text().splitlines() if line])

    def named(self, name: str) -> list[dict[str, Any]]:
        return [s for s in self.items if s["name"] == name]

    def one(self, name: str) -> dict[str, Any]:
        found = self.named(name)
        assert len(found) == 1, f"{len(found)} spans named {name!r}: {self.names()}"
        return found[0]

    def children_of(self, span: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            s
            for s in self.items
            if s["parent_id"] == span["span_id"] and s["trace_id"] == span["trace_id"]
        ]

    def names(self) -> list[str]:
        return sorted(s["name"] for s in self.items)
