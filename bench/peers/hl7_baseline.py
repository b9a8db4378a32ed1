"""Baseline MLLP receiver built on python-hl7 (``hl7.mllp``): parse, answer AA, store nothing.

python -m bench.peers.hl7_baseline PORT
"""

from __future__ import annotations

import asyncio
import sys

import hl7
from hl7.mllp import start_hl7_server


async def process(reader, writer) -> None:  # type: ignore[no-untyped-def]
    try:
        while not writer.is_closing():
            message = await reader.readmessage()
            writer.writemessage(message.create_ack())
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    async with await start_hl7_server(process, "127.0.0.1", port, encoding="utf-8", limit=1 << 20) as server:
        await server.serve_forever()


if __name__ == "__main__":
    _ = hl7
    asyncio.run(main(int(sys.argv[1])))
