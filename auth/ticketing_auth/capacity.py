"""How many Argon2 hashes may run at once: as many as fit in a share of the container's memory
limit (the cgroup's), so a burst of sign-ins cannot push the service past it and get it killed."""

from __future__ import annotations

from pathlib import Path

# cgroup v2's limit, then cgroup v1's: the first that exists is the container's.
CGROUP_MEMORY_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
)
# Hashing may take half the limit; the other half is the interpreter, requests and buffers.
HASH_MEMORY_SHARE = 0.5


def read_memory_limit(files: tuple[Path, ...] = CGROUP_MEMORY_LIMITS) -> str | None:
    """The text of the first cgroup limit file there is, or None outside a limited cgroup."""
    for file in files:
        try:
            return file.read_text()
        except OSError:
            continue
    return None


# cgroup v1 writes "no limit" as the largest page-aligned number (9223372036854771712).
NO_LIMIT_FROM = 1 << 62


def memory_limit_bytes(text: str | None) -> int | None:
    """The limit in bytes; None for no limit (no file, cgroup v2's `max`, v1's huge number, or
    unreadable)."""
    value = (text or "").strip()
    if not value.isdigit() or int(value) >= NO_LIMIT_FROM:
        return None
    return int(value)


def hash_slots(limit_text: str | None, hash_bytes: int, ceiling: int) -> int:
    """Concurrent hashes: floor(share of the limit / one hash's memory), never more than
    `ceiling` (the HASH_CONCURRENCY setting) and at least 1 (sign-in must still work)."""
    limit = memory_limit_bytes(limit_text)
    if limit is None:
        return ceiling
    return max(1, min(ceiling, int(limit * HASH_MEMORY_SHARE) // hash_bytes))
