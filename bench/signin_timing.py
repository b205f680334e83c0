"""Sign-in answers an unknown email and a wrong password in the same time.

Runs the auth service in-process on the embedded MongoDB with production Argon2 costs and
times sign-ins of three kinds, interleaved so that machine noise hits them alike. The
baseline is a successful sign-in (one hash verification); the ratios should be close to 1.

    .venv/bin/python bench/signin_timing.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from ticketing_auth.service import SERVICE
from ticketing_auth.settings import Settings
from ticketing_common.embedded import free_port, start_mongo
from ticketing_testing import TEST_JWT_KEY, serve

KINDS = {
    "right password (baseline)": {"email": "known@bench.dev", "password": "right-password"},
    "wrong password": {"email": "known@bench.dev", "password": "wrong-password"},
    "unknown email": {"email": "nobody@bench.dev", "password": "wrong-password"},
}


async def measure(mongo_url: str, rounds: int) -> dict[str, list[float]]:
    # The lock after 10 failures would turn later tries into fast 429s: raise it for the run.
    settings = Settings(
        mongo_uri=f"{mongo_url}/bench_auth", jwt_key=TEST_JWT_KEY, signin_max_failures=10**6
    )
    timings: dict[str, list[float]] = {kind: [] for kind in KINDS}
    async with serve(SERVICE.build(settings)) as client:
        await client.post("/api/users/signup", json=KINDS["right password (baseline)"])
        for _ in range(rounds):
            for kind, body in KINDS.items():
                started = time.perf_counter()
                response = await client.post("/api/users/signin", json=body)
                timings[kind].append(time.perf_counter() - started)
                assert response.status_code in (200, 400), response.text
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mongo = start_mongo(Path(tmp), free_port())
        try:
            timings = asyncio.run(measure(mongo.url, args.rounds))
        finally:
            mongo.stop()
    baseline = statistics.median(timings["right password (baseline)"])
    print(f"sign-in timing, {args.rounds} rounds, production Argon2 costs")
    print(f"{'kind':<28}{'median ms':>10}{'p90 ms':>9}{'ratio':>8}")
    for kind, values in timings.items():
        median = statistics.median(values)
        p90 = statistics.quantiles(values, n=10)[-1]
        print(f"{kind:<28}{median * 1000:>10.1f}{p90 * 1000:>9.1f}{median / baseline:>8.2f}")


if __name__ == "__main__":
    main()
