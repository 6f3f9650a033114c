"""``python -m fedcredit_netlab.delay_relay --listen HOST:PORT --upstream HOST:PORT --delay-ms D``

A TCP relay that delivers every chunk it reads ``D`` ms later, in each direction: the
latency half of ``tc netem`` for kernels built without ``sch_netem`` (see
``fedcredit_netlab.namespaces``). It relays bytes, not packets, so TLS passes through
untouched and the client still verifies the upstream's certificate (the certificate
names the host, not the port). A bounded queue per direction keeps TCP's flow control.
Prints ``listening HOST:PORT`` once it accepts connections; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

CHUNK = 65536
QUEUE = 256  # chunks in flight per direction (≤ 16 MiB)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(QUEUE)

    async def read():
        while True:
            data = await reader.read(CHUNK)
            await queue.put((loop.time() + delay, data))
            if not data:
                return

    async def write():
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    await asyncio.gather(read(), write())


async def _serve(listen: tuple[str, int], upstream: tuple[str, int], delay: float) -> None:
    async def handle(c_reader, c_writer):
        try:
            u_reader, u_writer = await asyncio.open_connection(*upstream)
        except OSError:
            c_writer.close()
            return
        try:
            await asyncio.gather(_pipe(c_reader, u_writer, delay), _pipe(u_reader, c_writer, delay))
        except (OSError, asyncio.IncompleteReadError):
            pass  # a reset on one side ends the connection on both
        finally:
            for w in (c_writer, u_writer):
                w.close()

    server = await asyncio.start_server(handle, *listen)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening {host}:{port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True, type=_address)
    p.add_argument("--upstream", required=True, type=_address)
    p.add_argument("--delay-ms", required=True, type=float)
    args = p.parse_args(argv)
    asyncio.run(_serve(args.listen, args.upstream, args.delay_ms / 1000.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
