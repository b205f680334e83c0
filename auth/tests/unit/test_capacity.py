"""Sizing the hash pool from the cgroup memory limit: text of the limit file → concurrent
hashes. No server; the cgroup files are stand-ins in a temporary folder."""

import pytest

from ticketing_auth.capacity import hash_slots, memory_limit_bytes, read_memory_limit
from ticketing_auth.passwords import pool_for
from ticketing_auth.settings import Settings

MIB = 1 << 20
ARGON2 = 64 * MIB  # the default ARGON2_MEMORY_KIB, 65536


@pytest.mark.parametrize(
    ("text", "ceiling", "slots"),
    [
        (None, 2, 2),  # no cgroup limit file: the setting decides
        ("max\n", 2, 2),  # cgroup v2 without a limit
        ("9223372036854771712\n", 2, 2),  # cgroup v1's "unlimited"
        ("not a number\n", 3, 3),  # unreadable: as if unlimited
        ("536870912\n", 8, 4),  # 512 MiB: half is 256 MiB, four 64 MiB hashes
        ("536870912\n", 2, 2),  # room for four, but the setting says two
        ("268435456", 8, 2),  # 256 MiB: two
        ("201326592\n", 8, 1),  # 192 MiB: half is 96 MiB, one hash
        ("67108864\n", 8, 1),  # 64 MiB: not even one fits in half, but sign-in must work
    ],
)
def test_concurrent_hashes_fit_in_half_the_memory_limit(text, ceiling, slots):
    assert hash_slots(text, ARGON2, ceiling) == slots


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("max\n", None),
        (None, None),
        ("", None),
        ("9223372036854771712\n", None),
        (" 1073741824\n", 1 << 30),
    ],
)
def test_the_limit_text_in_bytes(text, limit):
    assert memory_limit_bytes(text) == limit


def test_cgroup_v2_is_read_first_then_v1(tmp_path):
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    assert read_memory_limit((v2, v1)) is None
    v1.write_text("268435456\n")
    assert read_memory_limit((v2, v1)) == "268435456\n"
    v2.write_text("max\n")
    assert read_memory_limit((v2, v1)) == "max\n"


def test_the_pool_is_sized_from_the_settings_and_the_limit():
    settings = Settings(mongo_uri="mongodb://db/auth", jwt_key="k" * 32, hash_concurrency=4)
    pool = pool_for(settings, "268435456\n")
    assert (pool.slots, pool.queue) == (2, 16)
    assert pool_for(settings, None).slots == 4
