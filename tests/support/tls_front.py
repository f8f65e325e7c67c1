"""A TLS server in its own process: it terminates TLS with a certificate a test's private CA
signed and forwards the bytes to a plain server behind it (the emulator), as a company's
TLS-terminating gateway would.

Usage: python -m tests.support.tls_front LISTEN_PORT UPSTREAM_PORT CERT_CHAIN_PEM KEY_PEM
(loopback only; prints `ready` once it listens).
"""

from __future__ import annotations

import asyncio
import ssl
import sys

HOST = "127.0.0.1"


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def main(listen_port: int, upstream_port: int, chain: str, key: str) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(chain, key)

    async def serve(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(HOST, upstream_port)
        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))

    server = await asyncio.start_server(serve, HOST, listen_port, ssl=context)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]))
