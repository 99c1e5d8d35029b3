"""The peer queues of ``python -m django_gearattach.bench --peers``: Dramatiq, Huey and
Celery, run in the same shapes as the app's rows (a) and (b) on a private Redis.

:mod:`.environment` finds (or creates) the interpreter that has them, :mod:`.redisserver`
runs the private Redis, :mod:`.run` drives them beside the app's own rows. :mod:`.driver`
and the ``peer_*`` modules run in the peers' interpreter and import nothing of this package
(it may not be installed there), only the standard library and the peer itself.
"""
