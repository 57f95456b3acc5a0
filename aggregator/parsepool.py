"""Ingesting off the event loop, on every core: a pool of worker processes.

A first fetch costs parsing, dedup, tagging and storing, and in a thread all of it holds
the GIL the event loop needs. ``ParsePool`` runs a picklable function (``pipeline.ingest_job``:
parse, identities, hashes, fingerprints, then dedup, tag and save through the worker's own
store connections) in a ``ProcessPoolExecutor`` of ``processes`` workers (default: one
per core but one), started on first use with ``spawn`` (forking a process that runs
threads and an event loop is not safe).

A worker that dies (a crash in a C parser, the kernel's OOM killer) breaks the whole
executor; the poll that was running gets a ``ParseError`` saying so, and the next one
starts a fresh pool. ``processes=0`` runs the function in a thread instead.

A parser outlives nothing: when the process that started it dies, even by SIGKILL, it
notices within a second and exits (``_watch_parent``), so a killed poller leaves no idle
parser processes behind, however often it is killed.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import ParamSpec, TypeVar

from .exceptions import ParseError

log = logging.getLogger("aggregator.parsepool")

P = ParamSpec("P")
T = TypeVar("T")


def default_processes() -> int:
    """One worker per core this process may run on, but the poller's own (at least one).

    The poller process keeps part of a core busy (the network, gzip, 304s), and each
    worker holds about 150 MB (imports, the tagger, its store connections).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


class ParsePool:
    def __init__(self, processes: int | None = None) -> None:
        self.processes = default_processes() if processes is None else processes
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    self.processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker,
                    initargs=(os.getpid(),),
                )
            return self._executor

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self.processes <= 0:
            return await asyncio.to_thread(fn, *args, **kwargs)
        pool = self._pool()
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, _call, fn, args, kwargs)
        except BrokenProcessPool as e:
            self._discard(pool)
            raise ParseError(
                "the ingest process died while parsing or saving this body (crashed or ran out of "
                "memory)"
            ) from e

    def pids(self) -> list[int]:
        """The worker processes' ids (bench/poll.py counts their memory)."""
        executor = self._executor
        procs = getattr(executor, "_processes", None) or {}
        return list(procs)

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is pool:
                self._executor = None
        log.warning("parser pool broken; a new one starts with the next body")
        pool.shutdown(wait=False, cancel_futures=True)

    def shutdown(self) -> None:
        with self._lock:
            pool, self._executor = self._executor, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _call(fn: Callable[..., T], args: tuple[object, ...], kwargs: dict[str, object]) -> T:
    return fn(*args, **kwargs)


def _init_worker(parent: int) -> None:
    _watch_parent(parent)
    _return_large_blocks()


def _return_large_blocks() -> None:
    """Blocks of 128 KB and more come from the OS and go back to it when freed (glibc).

    glibc raises that threshold each time such a block is freed, up to 32 MB, and then
    serves the near-duplicate index's arrays (up to 12 MB a run, remade by each merge)
    from the heap, which keeps their freed space: 200,000 entries' index of 67 MB held
    137 MB, and 81 MB with the threshold fixed (docs/polling.md).
    """
    try:
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def _watch_parent(parent: int) -> None:
    """In each parser: exit once ``parent`` is gone (the executor cannot tell us then)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(0)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


PARENT_CHECK_S = 1.0
