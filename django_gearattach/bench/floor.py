"""The raw gearmand floors: minimal clients and raw workers on our codec.

No Django, no database: the ceiling any Python stack on gearmand can approach, for
many jobs in flight (:func:`measure_floor`) and for one job at a time
(:func:`measure_round_trip`, row (f)).
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


def _round_trips(port: int, function: str, jobs: int) -> list[float]:
    """Seconds from SUBMIT_JOB to WORK_COMPLETE, one foreground job at a time."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    parser = PacketParser()
    prefix = os.urandom(6).hex()
    latencies = []
    try:
        for number in range(jobs):
            started = time.perf_counter()
            sock.sendall(encode(Command.SUBMIT_JOB, function, f"{prefix}-{number}", b"{}"))
            done = False
            while not done:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("gearmand closed the round-trip client's connection")
                parser.feed(data)
                done = any(p.command is Command.WORK_COMPLETE for p in parser.packets())
            latencies.append(time.perf_counter() - started)
    finally:
        sock.close()
    return latencies


class _RawWorkers:
    def __init__(self, port: int, function: str, workers: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.procs = [
            ctx.Process(target=raw_worker, args=(port, function), daemon=True)
            for _ in range(workers)
        ]

    def __enter__(self) -> _RawWorkers:
        for proc in self.procs:
            proc.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.terminate()
            proc.join(5)


def measure_floor(port: int, jobs: int, window: int, workers: int = 2) -> float:
    """Jobs/second through gearmand with ``workers`` raw worker processes."""
    function = "gearattach.bench.floor"
    with _RawWorkers(port, function, workers):
        asyncio.run(_floor_client(port, function, min(jobs, 500), window))  # warm-up
        return asyncio.run(_floor_client(port, function, jobs, window))


def measure_round_trip(port: int, jobs: int, workers: int = 2) -> list[float]:
    """Row (f): submit-to-complete seconds of ``jobs`` raw jobs, one at a time."""
    function = "gearattach.bench.roundtrip"
    with _RawWorkers(port, function, workers):
        _round_trips(port, function, min(jobs, 50))  # warm-up
        return _round_trips(port, function, jobs)
