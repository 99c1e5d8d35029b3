"""The web layer: ``@offload`` and its processing page, the request stored for the
worker, the hub that shares one attachment per job among browsers, websockets, SSE and
long-polling, and every message a browser receives (:mod:`.messages`)."""
