"""Tests written the way Celery users test their tasks; only the import lines differ.

With Celery, the imports would be ``from celery import states`` and
``from celery.result import AsyncResult``, and ``celery_worker`` would come from
``celery.contrib.pytest``; here they come from django_gearattach.
"""

import time

import pytest

from django_gearattach.celery import AsyncResult, states
from tests.celeryapp.tasks import InventoryError, add, check_stock, divide, mul, process_rows


def test_delay_and_get(celery_worker):
    result = add.delay(4, 4)
    assert result.get(timeout=10) == 8
    assert result.successful()
    assert result.state == states.SUCCESS
    assert result.ready()


def test_apply_async_with_a_task_id(celery_worker):
    result = mul.apply_async((6, 7), task_id="answer-to-everything")
    assert result.id == "answer-to-everything"
    assert result.get(timeout=10) == 42
    assert AsyncResult("answer-to-everything").result == 42


def test_apply_async_with_kwargs_and_priority(celery_worker):
    result = add.apply_async(kwargs={"x": 1, "y": 2}, priority=9)
    assert result.get(timeout=10) == 3


def test_a_failing_task_raises_its_exception(celery_worker):
    result = check_stock.delay("sku-1")
    with pytest.raises(InventoryError, match="sku-1 is out of stock"):
        result.get(timeout=10)
    assert result.failed()
    assert result.state == states.FAILURE
    assert isinstance(result.result, InventoryError)
    assert "InventoryError" in result.traceback


def test_get_without_propagate_returns_the_exception(celery_worker):
    result = divide.delay(1, 0)
    exc = result.get(timeout=10, propagate=False)
    assert isinstance(exc, ZeroDivisionError)
    assert str(exc) == "division by zero"


def test_progress_like_celery_progress(celery_worker):
    result = process_rows.delay(20)
    seen = set()
    deadline = time.monotonic() + 20
    while not result.ready() and time.monotonic() < deadline:
        if result.state == "PROGRESS":
            seen.add(result.info["current"])
            assert result.info["total"] == 20
        time.sleep(0.01)
    assert result.state == states.SUCCESS
    assert result.info["status"] == "done"
    assert result.info["task_id"] == result.id
    assert seen  # at least one PROGRESS state was observed while it ran


def test_calling_a_task_runs_it_inline():
    assert add(2, 3) == 5
    assert process_rows(2)["status"] == "done"
