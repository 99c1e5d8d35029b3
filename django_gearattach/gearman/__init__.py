"""A small Gearman protocol layer: sans-IO codec, blocking and asyncio clients, worker.

It has no Django imports and could be published on its own.
"""

from .aio import AsyncClient, AsyncConnection
from .client import Client, ForegroundJob, UniqueStatus, WorkEvent
from .connection import Connection, admin_command
from .errors import ConnectionFailed, GearmanError, NoServerAvailable, ProtocolError, ServerError
from .protocol import MAX_UNIQUE_BYTES, Command, Packet, PacketParser, Priority, encode
from .rendezvous import Address, parse_addresses, route
from .worker import Assignment, WorkerPool

__all__ = [
    "MAX_UNIQUE_BYTES",
    "Address",
    "Assignment",
    "AsyncClient",
    "AsyncConnection",
    "Client",
    "Command",
    "Connection",
    "ConnectionFailed",
    "ForegroundJob",
    "GearmanError",
    "NoServerAvailable",
    "Packet",
    "PacketParser",
    "Priority",
    "ProtocolError",
    "ServerError",
    "UniqueStatus",
    "WorkEvent",
    "WorkerPool",
    "admin_command",
    "encode",
    "parse_addresses",
    "route",
]
