"""Driving the ASGI gateways in tests: requests sent at once through httpx's ASGI
transport, with the gateways' database work on the test's own thread (inside its
transaction)."""

import asyncio

import httpx
from asgiref.sync import async_to_sync, sync_to_async
from django.core import signals
from django.db import close_old_connections


async def in_test_thread(fn, *args, **kwargs):
    return await sync_to_async(fn, thread_sensitive=True)(*args, **kwargs)


def send_all(app, requests: list[tuple[str, str, dict | bytes, dict]]) -> list[httpx.Response]:
    """Send (method, path, body, headers) requests at once; a dict body goes as JSON."""

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            async def one(method, path, body, headers):
                content = body if isinstance(body, bytes) else httpx.Request("POST", "/", json=body).content
                return await client.request(method, path, content=content,
                                            headers={"Content-Type": "application/json", **headers})
            return await asyncio.gather(*(one(*request) for request in requests))

    # Requests that fall through to Django end with request_finished, which would close the
    # test's connection (and its transaction) under it; Django's own test client disconnects
    # it the same way.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        return async_to_sync(go)()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)
