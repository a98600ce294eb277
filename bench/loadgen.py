"""A lean closed-loop HTTP/1.1 load generator for loopback benchmarks: N connections, each
sending its next pre-rendered request as soon as the previous response arrives, with
keep-alive. Cheap on the client side, so the CPU goes to the server being measured."""

import asyncio
import time
from collections.abc import Callable


def render_post(path: str, body: bytes, token: str, host: str = "127.0.0.1") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Token {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, close = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            close = True
    body = await reader.readexactly(length) if length else b""
    return status, body, close


async def _client(port: int, next_request: Callable[[], bytes | None], stop_at: float,
                  latencies: list[float], statuses: dict[int, int]) -> None:
    reader = writer = None
    while time.perf_counter() < stop_at:
        request = next_request()
        if request is None:
            break
        if writer is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.perf_counter()
        writer.write(request)
        try:
            status, _, close = await _read_response(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            reader = writer = None
            continue
        latencies.append(time.perf_counter() - started)
        statuses[status] = statuses.get(status, 0) + 1
        if close:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


def run(port: int, next_request: Callable[[], bytes | None], *, clients: int, seconds: float) -> dict:
    """Run `clients` closed-loop connections for `seconds`; returns latencies and statuses."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def main():
        stop_at = time.perf_counter() + seconds
        await asyncio.gather(*(_client(port, next_request, stop_at, latencies, statuses) for _ in range(clients)))

    started = time.perf_counter()
    asyncio.run(main())
    return {"latencies": latencies, "statuses": statuses, "seconds": time.perf_counter() - started}
