"""The raw gearmand floor: a minimal pipelining client and raw workers on our codec.

No Django, no database: this is the ceiling any Python stack on gearmand can approach.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import time

from ..gearman.protocol import Command, PacketParser, encode


def raw_worker(port: int, function: str) -> None:
    """Answer every job with WORK_COMPLETE as fast as the protocol allows."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    parser = PacketParser()
    sock.sendall(encode(Command.CAN_DO, function) + encode(Command.GRAB_JOB_UNIQ))
    while True:
        data = sock.recv(65536)
        if not data:
            return
        parser.feed(data)
        out = bytearray()
        for packet in parser.packets():
            if packet.command is Command.JOB_ASSIGN_UNIQ:
                out += encode(Command.WORK_COMPLETE, packet.args[0], b"null")
                out += encode(Command.GRAB_JOB_UNIQ)
            elif packet.command is Command.NO_JOB:
                out += encode(Command.PRE_SLEEP)
            elif packet.command is Command.NOOP:
                out += encode(Command.GRAB_JOB_UNIQ)
        if out:
            sock.sendall(out)


async def _floor_client(port: int, function: str, jobs: int, window: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    parser = PacketParser()
    sent = done = 0
    prefix = os.urandom(6).hex()
    started = time.perf_counter()

    def submit(count: int) -> None:
        nonlocal sent
        batch = bytearray()
        for _ in range(count):
            batch += encode(Command.SUBMIT_JOB, function, f"{prefix}-{sent}", b"")
            sent += 1
        writer.write(bytes(batch))

    submit(min(window, jobs))
    while done < jobs:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("gearmand closed the floor client's connection")
        parser.feed(data)
        finished = sum(1 for p in parser.packets() if p.command is Command.WORK_COMPLETE)
        done += finished
        if finished and sent < jobs:
            submit(min(finished, jobs - sent))
    elapsed = time.perf_counter() - started
    writer.close()
    return jobs / elapsed


def measure_floor(port: int, jobs: int, window: int, workers: int = 2) -> float:
    """Jobs/second through gearmand with ``workers`` raw worker processes."""
    function = "gearattach.bench.floor"
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=raw_worker, args=(port, function), daemon=True) for _ in range(workers)
    ]
    for proc in procs:
        proc.start()
    try:
        time.sleep(0.3)
        asyncio.run(_floor_client(port, function, min(jobs, 500), window))  # warm-up
        return asyncio.run(_floor_client(port, function, jobs, window))
    finally:
        for proc in procs:
            proc.terminate()
            proc.join(5)
