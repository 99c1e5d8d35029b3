"""Server addresses and rendezvous hashing of (function, key) onto servers.

Every process that routes a key with the same server list gets the same order,
so a job and all its attachers meet on one gearmand. Removing a server only moves
the keys that lived on it; adding one moves about 1/n of the keys.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

DEFAULT_PORT = 4730


@dataclass(frozen=True, slots=True, order=True)
class Address:
    host: str
    port: int = DEFAULT_PORT

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse ``host``, ``host:port`` or ``[v6]:port``; raise ValueError when malformed."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"a gearmand address must be a 'host:port' string, got {text!r}")
        text = text.strip()
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise ValueError(f"malformed IPv6 gearmand address {text!r}")
            port_text = rest[1:] if rest else str(DEFAULT_PORT)
        elif text.count(":") == 1:
            host, port_text = text.split(":")
        elif ":" in text:
            raise ValueError(f"write IPv6 gearmand addresses as [host]:port, got {text!r}")
        else:
            host, port_text = text, str(DEFAULT_PORT)
        if not host:
            raise ValueError(f"gearmand address {text!r} has no host")
        try:
            port = int(port_text)
        except ValueError:
            raise ValueError(f"gearmand address {text!r} has a non-numeric port") from None
        if not 0 < port < 65536:
            raise ValueError(f"gearmand address {text!r} has a port out of range")
        return cls(host, port)


@functools.lru_cache(maxsize=256)
def parse_cached(text: str) -> Address:
    """:meth:`Address.parse`, remembered (records name their server as text)."""
    return Address.parse(text)


def parse_addresses(items: Iterable[str]) -> list[Address]:
    addresses = [Address.parse(item) for item in items]
    if not addresses:
        raise ValueError("at least one gearmand address is needed")
    return addresses


def _score(address: Address, function: str, key: bytes) -> int:
    digest = hashlib.blake2b(
        str(address).encode() + b"\0" + function.encode() + b"\0" + key, digest_size=8
    ).digest()
    return int.from_bytes(digest, "big")


def route(servers: Sequence[Address], function: str, key: bytes | str) -> list[Address]:
    """Servers in the order a (function, key) should try them: the first is its home."""
    raw = key.encode() if isinstance(key, str) else key
    if len(servers) == 1:
        return list(servers)
    return sorted(servers, key=lambda a: (_score(a, function, raw), a), reverse=True)
