"""The package's import graph: no cycles between modules, and submitting or attaching
never imports the worker loop (a web process has no use for it)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import django_gearattach

PACKAGE = Path(django_gearattach.__file__).parent
NAME = "django_gearattach"


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = [NAME, *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _top_level(tree: ast.Module) -> list[ast.stmt]:
    """Statements run on import: module level, inside ``if``/``try`` but not under
    ``if TYPE_CHECKING:``."""
    statements: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            statements.extend(node.orelse)
        elif isinstance(node, ast.If | ast.Try):
            statements.extend(n for n in ast.walk(node) if isinstance(n, ast.stmt))
        else:
            statements.append(node)
    return statements


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports when it is imported."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        targets: set[str] = set()
        for node in _top_level(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                name = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    full = f"{name}.{alias.name}"
                    targets.add(full if full in known else name)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[module] = {t for t in targets if t in known and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycles() -> None:
    graph = import_graph()
    assert len(graph) > 30  # the walk found the package
    assert cycles(graph) == []


def test_only_the_worker_side_imports_the_worker_layer() -> None:
    """The core, the web layer and the integrations import ``worker/`` only inside a
    function (immediate mode), never when they are imported."""
    graph = import_graph()
    worker_side = tuple(
        f"django_gearattach.{name}" for name in ("worker", "management", "bench", "testing")
    )

    def reaches(module: str) -> set[str]:
        seen: set[str] = set()
        todo = [module]
        while todo:
            for target in graph[todo.pop()] - seen:
                seen.add(target)
                todo.append(target)
        return seen

    offenders = {
        module: sorted(t for t in reaches(module) if t.startswith("django_gearattach.worker."))
        for module in graph
        if not module.startswith(worker_side)
    }
    assert {module: found for module, found in offenders.items() if found} == {}


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


SUBMITTER = """
import sys
import django
from django.conf import settings

settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django_gearattach"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
)
django.setup()
from django_gearattach import aattach, asubmit, attach, submit  # noqa: F401
print(" ".join(sorted(m for m in sys.modules if m.startswith("django_gearattach"))))
"""


def test_submitting_and_attaching_do_not_import_the_worker() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", SUBMITTER], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "django_gearattach.submission" in loaded
    assert "django_gearattach.attachment" in loaded
    assert "django_gearattach.worker.loop" not in loaded
    assert "django_gearattach.worker.immediate" not in loaded
    assert "django_gearattach.worker.supervisor" not in loaded


DOCUMENTED = [
    ("django_gearattach.decorators", ["offload", "OffloadMixin"]),
    ("django_gearattach.tokens", ["token_for", "check_token", "TokenRefused"]),
    ("django_gearattach.tasks_backend", ["GearmanBackend", "result_from_record"]),
    ("django_gearattach.testing", ["Gearmand", "free_port", "wait_for_workers"]),
    ("django_gearattach.testworker", ["main"]),
    ("django_gearattach.pytest_plugin", ["gearattach_gearmand", "gearattach_worker"]),
    ("django_gearattach.routing", ["websocket_urlpatterns"]),
    ("django_gearattach.celery", ["Celery", "shared_task"]),
]


@pytest.mark.parametrize(("module", "names"), DOCUMENTED)
def test_documented_import_paths_keep_working(module: str, names: list[str]) -> None:
    imported = importlib.import_module(module)
    assert [name for name in names if not hasattr(imported, name)] == []
