"""Resume positions of a job's stream as browsers write them: ``"R:N"``.

``R`` is the run the chunks belong to and ``N`` the last sequence number the client
holds (see :mod:`django_gearattach.streams`). ``"0:0"``, or no position at all, means
from the start. SSE clients send it as ``Last-Event-ID`` (every chunk event's ``id``)
or ``?after=R:N``; websocket clients as ``?after=R:N`` in the connect URL.
"""

from __future__ import annotations

from django.utils.translation import gettext_noop

from .. import streams

Position = tuple[int, int]

START: Position = (0, 0)
#: What a client that sent a malformed position is told (HTTP 400, websocket close 4400).
BAD_POSITION = gettext_noop(
    'a stream position must be written "R:N" (run and sequence number, e.g. "2:17"; '
    '"0:0" for the start)'
)


def parse_position(text: str | None) -> Position | None:
    """``(run, seq)`` for ``"R:N"``, :data:`START` for none or ``""``; None if malformed
    (:func:`django_gearattach.streams.parse_position` says what is well formed)."""
    if text is None or text == "":
        return START
    try:
        return streams.parse_position(text)
    except ValueError:
        return None
