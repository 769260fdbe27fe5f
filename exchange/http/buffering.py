"""Holding an answer until it is whole: what the response signature and the idempotency record
both need before the first byte may leave."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from litestar.types import HTTPResponseStartEvent, Message, Send

WholeAnswer = Callable[[HTTPResponseStartEvent, bytes], Awaitable[None]]


def whole_answer(send: Send, finish: WholeAnswer) -> Send:
    """A ``send`` that keeps the start event and the body chunks, and hands the start event and
    the whole body to ``finish`` (which sends them, or something else) with the last chunk.
    Any other message passes straight through."""
    start: HTTPResponseStartEvent | None = None
    chunks: list[bytes] = []

    async def buffered(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
            return
        if message["type"] != "http.response.body" or start is None:
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        await finish(start, b"".join(chunks))

    return buffered
