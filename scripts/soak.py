"""Memory under a steady load: `salesbot serve` taking Shopify connections and a bot process reading the
connections, for --minutes (30); the resident memory of both, sampled, and its growth after warm-up.

    .venv/bin/python scripts/soak.py                 # 30 minutes (docs/performance.md, "Memory over time")
    .venv/bin/python scripts/soak.py --minutes 3     # a quick look

The load is steady, not a stress: --rate connections a second from 4 browsers over --shops store names
(reconnecting the same stores, so the data stays one size), and the bot reading at most --reads a second.
Not a test: the figure goes in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.serve_load import bot_reads, connect_for, rss_mb, running_service, start_bot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long the load runs")
    parser.add_argument("--warm-up", type=float, default=5.0, metavar="MINUTES", help="growth is counted after this")
    parser.add_argument("--every", type=float, default=60.0, metavar="SECONDS", help="how often memory is sampled")
    parser.add_argument("--rate", type=float, default=20.0, help="connections a second")
    parser.add_argument("--reads", type=float, default=2000.0, help="the bot's reads a second, at most")
    parser.add_argument("--shops", type=int, default=200, help="store names the connections cycle over")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    seconds = args.minutes * 60
    with running_service(workers=args.workers) as running:
        bot = start_bot(running, seconds=seconds, rate=args.reads)
        print(
            f"soak: {args.minutes:g} min, {args.rate:g} connections/s over {args.shops} shops, "
            f"bot <= {args.reads:g} reads/s, {args.workers} worker(s)"
        )
        print(f"{'minute':>7} {'serve MB':>9} {'bot MB':>7} {'connections':>12} {'failed':>7}")
        samples: list[tuple[float, float, float]] = []
        made = failed = 0
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            window = min(args.every, seconds - elapsed)
            got, lost = asyncio.run(
                connect_for(running.port, seconds=window, clients=4, shops=args.shops, rate=args.rate)
            )
            made, failed = made + got, failed + lost
            minute = (time.monotonic() - started) / 60
            samples.append((minute, rss_mb(running.service.pid), rss_mb(bot.pid)))
            print(f"{minute:7.1f} {samples[-1][1]:9.1f} {samples[-1][2]:7.1f} {made:12,} {failed:7}", flush=True)
        reads = bot_reads(bot)
    warm = [sample for sample in samples if sample[0] >= args.warm_up] or samples[-1:]
    first, last = warm[0], warm[-1]
    print(f"connections {made:,} ({failed} failed), bot reads {reads:,}")
    print(
        f"after warm-up (minute {first[0]:.1f} to {last[0]:.1f}): serve {first[1]:.1f} -> {last[1]:.1f} MB "
        f"({last[1] - first[1]:+.1f} MB, max {max(s[1] for s in warm):.1f}); "
        f"bot {first[2]:.1f} -> {last[2]:.1f} MB ({last[2] - first[2]:+.1f} MB, max {max(s[2] for s in warm):.1f})"
    )


if __name__ == "__main__":
    main()
