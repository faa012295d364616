"""A step's memory limit, read where the kernel enforces it, and what fits in it.

The retry policy (see ``pipelines/training.py``): KFP v2's ``set_retry`` re-runs a
failed task with the same pod spec (no condition on the exit reason, no larger
memory on a retry), so a step killed for memory would be killed again. Instead a
step that holds rows in memory reads its cgroup limit when it starts, sizes its
sample to it, and fails at once, naming the limit and the config key to raise,
when even the smallest useful input cannot fit. Retries are left for what they
can cure: an evicted pod, a lost node, a storage hiccup.

cgroup v2 exposes the limit as ``memory.max`` ("max" when unlimited); v1 as
``memory/memory.limit_in_bytes`` (a page-rounded 2**63 when unlimited), in the
process's cgroup (``/proc/self/cgroup``) and its ancestors. A ``ulimit -v`` counts
too. Without any (a laptop, the local runner outside a container) there is no
limit to size to, and the sample is ``train.max_rows``.
"""

from __future__ import annotations

import os

from kubeloop.errors import UserError

CGROUP_ROOT = "/sys/fs/cgroup"
# v1 reports "unlimited" as the largest page-aligned signed 64-bit value; anything
# at or above 2**60 bytes (an exbibyte) is no limit on any real machine.
_UNLIMITED = 2**60
_MIB = 2**20


class MemoryLimitError(UserError, MemoryError):
    """The input cannot fit in the step's memory limit; the message says what to raise."""


def parse_limit(text: str) -> int | None:
    """Bytes from a cgroup limit file's content; None for no limit or no number."""
    value = text.strip()
    if not value or value == "max":
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    return None if number <= 0 or number >= _UNLIMITED else number


def limit_files(proc_cgroup: str, root: str = CGROUP_ROOT) -> list[str]:
    """The limit files that bind this process, from ``/proc/self/cgroup``'s text:
    its own cgroup's and every ancestor's (a parent's limit binds its children),
    v2 (``0::/path``) and v1 (``N:memory:/path``). Inside a container the path is
    ``/`` and the files sit at the root."""
    files = []
    for line in proc_cgroup.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            base, name = root, "memory.max"
        elif "memory" in controllers.split(","):
            base, name = os.path.join(root, "memory"), "memory.limit_in_bytes"
        else:
            continue
        here = path.strip("/")
        while True:
            files.append(os.path.join(base, here, name) if here else os.path.join(base, name))
            if not here:
                break
            here = os.path.dirname(here)
    return files


def cgroup_memory_limit(root: str = CGROUP_ROOT, proc_cgroup: str | None = None) -> int | None:
    """This process's memory limit in bytes: the smallest of its cgroups' limits (v2
    and v1) and of ``RLIMIT_AS`` (``ulimit -v``), or None when nothing limits it."""
    import resource

    if proc_cgroup is None:
        try:
            with open("/proc/self/cgroup") as f:
                proc_cgroup = f.read()
        except OSError:
            proc_cgroup = "0::/\n1:memory:/"
    limits = []
    for name in limit_files(proc_cgroup, root):
        try:
            with open(name) as f:
                limit = parse_limit(f.read())
        except OSError:
            continue
        if limit is not None:
            limits.append(limit)
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY and 0 < soft < _UNLIMITED:
        limits.append(soft)
    return min(limits) if limits else None


def rows_within(limit: int | None, *, bytes_per_row: float, reserved: int) -> int | None:
    """How many rows of ``bytes_per_row`` fit in ``limit`` after ``reserved`` bytes
    (imports, other inputs); None when there is no limit."""
    if limit is None:
        return None
    return max(0, int((limit - reserved) // max(bytes_per_row, 1.0)))


def mib(n_bytes: float) -> str:
    return f"{n_bytes / _MIB:,.0f} MiB"


def size_to_limit(
    wanted: int, limit: int | None, *, bytes_per_row: float, reserved: int, minimum: int,
    what: str, limit_key: str, rows_key: str,
) -> int:
    """``wanted`` rows, or fewer when the limit holds fewer; ``MemoryLimitError`` (before
    any work) when fewer than ``minimum`` fit."""
    fits = rows_within(limit, bytes_per_row=bytes_per_row, reserved=reserved)
    if fits is None or fits >= wanted:
        return wanted
    if fits < minimum:
        raise MemoryLimitError(
            f"{what} cannot fit in this step's memory limit of {mib(limit or 0)}: about "
            f"{mib(reserved)} is needed before any training row and {bytes_per_row:,.0f} bytes "
            f"per row, leaving room for {fits:,} rows (at least {minimum:,} are needed); raise "
            f"{limit_key} (or lower {rows_key})"
        )
    return fits
