"""Auth's memory under a burst of sign-ins, measured on a real process: the bounded hash pool
keeps its peak resident memory within what `hash_concurrency` Argon2 hashes need."""

import asyncio
import subprocess
from pathlib import Path

import httpx

from ticketing_auth.settings import Settings
from ticketing_common.embedded import free_port
from ticketing_testing import spawn_service, until_ready

MIB = 1 << 20
BURST = 20
DEFAULTS = Settings.model_fields
SLOTS = DEFAULTS["hash_concurrency"].default  # 2
ARGON2_BYTES = DEFAULTS["argon2_memory_kib"].default * 1024  # 64 MiB a hash, the production cost
# Besides the hashes: 20 requests in flight, their Mongo round trips, thread stacks touched and
# allocator slack. Measured on 2 cores: peak 204 MiB = 76 at rest + 128 of hashes + ~1; the
# margin leaves room for other machines but not for a third 64 MiB hash.
MARGIN = 48 * MIB


def status_kib(pid: int, field: str) -> int:
    """A memory figure of a process from /proc/<pid>/status (VmRSS now, VmHWM its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def spawn_auth(mongo_uri: str, port: int) -> subprocess.Popen[bytes]:
    """Auth as production runs it: the default Argon2 cost and hash pool, set explicitly so the
    environment cannot change them; a queue long enough that every sign-in is evaluated."""
    env = {name.upper(): str(DEFAULTS[name].default) for name in DEFAULTS if "argon2" in name}
    return spawn_service(
        "ticketing_auth",
        port,
        MONGO_URI=mongo_uri,
        HASH_CONCURRENCY=str(SLOTS),
        HASH_QUEUE=str(BURST),
        **env,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def test_twenty_concurrent_signins_stay_within_the_hash_memory_bound(mongo_uri):
    """The bound: resident memory at rest (after start-up and the sign-ups, one at a time),
    plus one Argon2 cost per hash slot, plus MARGIN. Without the pool's bound every sign-in
    takes a thread of the default executor (6 on 2 cores): with HASH_CONCURRENCY=32 auth went
    from 76 MiB at rest to a 461 MiB peak, far past this bound (76 + 128 + 48 = 252 MiB)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    auth = spawn_auth(mongo_uri, port)
    try:
        await until_ready(url, auth)
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            # One user per sign-in: one email's in-flight attempts count toward its limit.
            users = [{"email": f"u{n}@test.com", "password": "password"} for n in range(BURST)]
            for user in users:
                assert (await http.post("/api/users/signup", json=user)).status_code == 201
            at_rest = status_kib(auth.pid, "VmRSS") * 1024
            signins = [http.post("/api/users/signin", json=user) for user in users]
            statuses = [r.status_code for r in await asyncio.gather(*signins)]
        peak = status_kib(auth.pid, "VmHWM") * 1024
    finally:
        stop(auth)
    assert statuses == [200] * BURST
    bound = at_rest + SLOTS * ARGON2_BYTES + MARGIN
    figures = f"peak {peak // MIB} MiB, at rest {at_rest // MIB} MiB, bound {bound // MIB} MiB"
    assert peak < bound, figures
