"""A TCP proxy in its own process that simulates a network outage in front of a server.

The server behind it (a metrics database, say) stays up and keeps what it acknowledged, so a
test measures the client's behaviour, not the server's durability. Commands arrive one per
line on stdin; each is acknowledged on stdout with `ok <mode>` once it is in effect:

- `pass`:   forward both ways (the start state; after `refuse` it listens again on the same port).
- `refuse`: stop listening and reset every open connection: connects are refused.
- `stall`:  accept and hold: bytes in either direction are kept, nothing is forwarded. On
            `pass`, what was held is delivered, requests of clients that gave up included
            (the server then handles a request its client already resent: a legitimate duplicate).

Usage: python -m tests.support.fault_proxy LISTEN_PORT UPSTREAM_PORT   (loopback only; prints `ready`)
"""

from __future__ import annotations

import asyncio
import sys

HOST = "127.0.0.1"
LINGER_S = 2.0  # how long an orphaned upstream connection may answer before it is closed


class Pipe:
    """One client connection and its upstream connection, with what a stall holds back."""

    def __init__(self, proxy: FaultProxy, client: asyncio.Transport) -> None:
        self.proxy = proxy
        self.client: asyncio.Transport | None = client
        self.upstream: asyncio.Transport | None = None
        self.to_upstream: list[bytes] = []
        self.to_client: list[bytes] = []

    def from_client(self, data: bytes) -> None:
        self.to_upstream.append(data)
        self.deliver()

    def from_upstream(self, data: bytes) -> None:
        if self.client is None:  # an orphan's answer: the client gave up long ago
            asyncio.get_running_loop().call_later(LINGER_S, self.close)
            return
        self.to_client.append(data)
        self.deliver()

    def deliver(self) -> None:
        if self.proxy.mode != "pass":
            return
        if self.upstream is not None and self.to_upstream:
            self.upstream.write(b"".join(self.to_upstream))
            self.to_upstream.clear()
        if self.client is not None and self.to_client:
            self.client.write(b"".join(self.to_client))
            self.to_client.clear()

    def client_gone(self) -> None:
        self.client = None
        if not self.to_upstream and self.upstream is not None:
            self.upstream.close()

    def close(self) -> None:
        for transport in (self.client, self.upstream):
            if transport is not None:
                transport.abort()
        self.client = None
        self.proxy.pipes.discard(self)


class ClientSide(asyncio.Protocol):
    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.pipe: Pipe | None = None
        self.connecting: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.pipe = Pipe(self.proxy, transport)
        self.proxy.pipes.add(self.pipe)
        self.connecting = asyncio.ensure_future(self.proxy.connect_upstream(self.pipe))

    def data_received(self, data: bytes) -> None:
        assert self.pipe is not None
        self.pipe.from_client(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pipe is not None:
            self.pipe.client_gone()


class UpstreamSide(asyncio.Protocol):
    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe

    def data_received(self, data: bytes) -> None:
        self.pipe.from_upstream(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pipe.client is not None and self.pipe.proxy.mode == "pass":
            self.pipe.client.close()
        self.pipe.proxy.pipes.discard(self.pipe)


class FaultProxy:
    def __init__(self, listen_port: int, upstream_port: int) -> None:
        self.listen_port = listen_port
        self.upstream_port = upstream_port
        self.mode = "pass"
        self.pipes: set[Pipe] = set()
        self.server: asyncio.Server | None = None

    async def listen(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: ClientSide(self), HOST, self.listen_port, reuse_address=True)

    async def connect_upstream(self, pipe: Pipe) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_connection(lambda: UpstreamSide(pipe), HOST, self.upstream_port)
        except OSError:
            pipe.close()
            return
        pipe.upstream = transport  # type: ignore[assignment]
        pipe.deliver()

    async def set_mode(self, mode: str) -> None:
        if mode == "refuse":
            if self.server is not None:
                self.server.close()
                await self.server.wait_closed()
                self.server = None
            for pipe in list(self.pipes):
                pipe.close()
        elif mode == "pass" and self.server is None:
            await self.listen()
        self.mode = mode
        if mode == "pass":
            for pipe in list(self.pipes):
                pipe.deliver()


async def main(listen_port: int, upstream_port: int) -> None:
    proxy = FaultProxy(listen_port, upstream_port)
    await proxy.listen()
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        if line not in ("pass", "refuse", "stall"):
            print(f"error unknown command {line!r}", flush=True)
            continue
        await proxy.set_mode(line)
        print(f"ok {line}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
