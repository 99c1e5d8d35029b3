"""Prometheus metrics (the ``metrics`` extra: ``pip install "django-gearattach[metrics]"``).

Add ``"django_gearattach.metrics"`` to ``INSTALLED_APPS``: its ``ready()`` connects the
receivers of :mod:`~django_gearattach.metrics.receivers` to the app's signals. Each
process counts what happens in it:

``gearattach_jobs_submitted_total{function}``
    jobs handed to gearmand (the submitting process: web, shell, ...);
``gearattach_jobs_started_total{function}``
    tasks a worker started (one per attempt);
``gearattach_jobs_finished_total{function,outcome}``
    outcomes committed: complete, failed, lost, cancelled;
``gearattach_queue_wait_seconds{function}``
    histogram: from the record's creation to the start of the attempt;
``gearattach_run_seconds{function}``
    histogram: from the start to the outcome;
``gearattach_attach_latency_seconds{function}``
    histogram: from an ``attach``/``aattach`` call to its first event.

At scrape time :class:`~django_gearattach.metrics.collectors.GearmandCollector` adds
each configured gearmand's queue (``gearattach_gearmand_up{server}``,
``gearattach_gearmand_jobs_queued{server,function}``, ``..._jobs_running``,
``..._workers``). Workers expose their metrics with ``gearworker --metrics-port``,
web processes with :func:`django_gearattach.metrics.views.metrics`.

The started and finished receivers read the job's record once each (the worker reads
it for a signal only when a receiver is connected): two indexed reads per job.
"""
