"""Several local runners on one results store, started and stopped together (``ntkbayes run --workers N``).

The calling process is one runner; :func:`start_workers` starts the other ``N − 1`` as child processes running
the same ``ntkbayes run`` command line with ``--workers 1`` (they share the cells through the store's claims,
:meth:`ntkbayes.harness.store.ResultsStore.try_claim`). The children stay in the caller's process group, so a
Ctrl-C in the terminal (or ``timeout -s INT``, which signals the whole group) reaches all of them;
:func:`stop_workers` additionally forwards an interrupt to any child still running after a grace period, waits
for each, and kills one that outlives a second grace period. An interrupted runner releases its claims and a
runner that was killed leaves claims the next run takes over, so the store stays consistent and the next run
resumes (store.py, "Safety").
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

#: Seconds an interrupted child gets to stop on the signal its process group received before it is sent SIGINT
#: itself, and again before SIGKILL (a cell is not interrupted inside native code, so stopping can take a moment).
GRACE_S = 5.0


def start_workers(argv: Sequence[str], n: int) -> list[subprocess.Popen]:
    """Start ``n`` child processes ``python -m ntkbayes.cli *argv`` in this process group (stdout and stderr are
    this process's)."""
    return [subprocess.Popen([sys.executable, "-m", "ntkbayes.cli", *argv]) for _ in range(n)]


def stop_workers(procs: Sequence[subprocess.Popen], *, interrupted: bool, grace: float = GRACE_S) -> int:
    """Wait for every child and return the worst exit status (0 when all succeeded). When ``interrupted``, a
    child still running after ``grace`` seconds is sent SIGINT, and SIGKILL after another ``grace``."""
    if interrupted:
        for signum in (signal.SIGINT, signal.SIGKILL):
            deadline = time.monotonic() + grace
            for p in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=max(0.0, deadline - time.monotonic()))
            for p in procs:
                if p.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        p.send_signal(signum)
    codes = []
    for p in procs:
        while True:
            try:
                codes.append(p.wait())
                break
            except KeyboardInterrupt:  # a second Ctrl-C while waiting: keep waiting, the children are stopping
                continue
    return next((c if c > 0 else 128 - c for c in codes if c != 0), 0)  # killed by signal N: 128 + N


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM raises KeyboardInterrupt (so ``kill`` stops a runner as cleanly as Ctrl-C)."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
