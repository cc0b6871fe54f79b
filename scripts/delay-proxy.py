#!/usr/bin/env python3
"""TCP relay that adds a fixed one-way delay to the bytes flowing in each direction.

usage: delay-proxy.py --listen HOST:PORT --upstream HOST:PORT [--delay-ms 5]

Used by scripts/bench-pull.sh when the kernel has no `sch_netem` qdisc: the rate limit is
done by `tc ... tbf` on a veth pair, this relay adds the latency. Every chunk read from one
side is written to the other side `--delay-ms` after it arrived (chunks keep their order and
are pipelined, so throughput is not affected), giving each HTTP request/response exchange a
round trip of 2 x delay. TCP's own handshake and ACKs are not delayed, so slow start ramps
faster than on a real 2 x delay link. Python 3 stdlib only.
"""

import argparse
import asyncio
import sys

CHUNK = 64 * 1024
QUEUE = 256  # chunks buffered per direction before reading pauses (backpressure)


async def pump(reader, writer, delay):
    loop = asyncio.get_running_loop()
    q = asyncio.Queue(maxsize=QUEUE)

    async def send():
        try:
            while True:
                due, data = await q.get()
                if data is None:
                    break
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            pass

    task = asyncio.create_task(send())
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            await q.put((loop.time() + delay, data))
    except (ConnectionError, OSError):
        pass
    await q.put((0.0, None))
    await task


async def handle(creader, cwriter, upstream, delay):
    host, port = upstream
    try:
        ureader, uwriter = await asyncio.open_connection(host, port)
    except OSError as e:
        print(f"delay-proxy: upstream {host}:{port}: {e}", file=sys.stderr)
        cwriter.close()
        return
    try:
        await asyncio.gather(pump(creader, uwriter, delay), pump(ureader, cwriter, delay))
    finally:
        for w in (uwriter, cwriter):
            w.close()


def hostport(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True, type=hostport)
    ap.add_argument("--upstream", required=True, type=hostport)
    ap.add_argument("--delay-ms", type=float, default=5.0)
    args = ap.parse_args()
    delay = args.delay_ms / 1000.0
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, args.upstream, delay), args.listen[0], args.listen[1]
    )
    print(f"delay-proxy: {args.listen[0]}:{args.listen[1]} -> "
          f"{args.upstream[0]}:{args.upstream[1]}, {args.delay_ms} ms each way", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
