"""A file response that an ASGI server streams as it streams any other.

Django's ``FileResponse`` iterates its file synchronously. Under ASGI, Django then
warns ("StreamingHttpResponse must consume synchronous iterators...") and reads the
whole file into memory before sending a byte. :class:`FileResponse` reads it chunk
by chunk in a thread instead; under WSGI it is Django's own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async
from django.http import FileResponse as DjangoFileResponse


def _next_chunk(chunks: Iterator[bytes]) -> bytes | None:
    return next(chunks, None)


class FileResponse(DjangoFileResponse):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks: Iterator[bytes] = iter(self.streaming_content)  # type: ignore[arg-type]
        read = sync_to_async(_next_chunk, thread_sensitive=False)
        while (chunk := await read(chunks)) is not None:
            yield chunk
