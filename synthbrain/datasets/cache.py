"""A bounded in-memory cache of chunks, least recently used evicted, with the next chunk made in a
background thread while the current one is consumed.

:class:`ChunkCache` knows chunks only by number; what a chunk is and how it is made is the
``load(chunk)`` function each call is given (a :class:`~synthbrain.datasets.synthetic.SyntheticBrainDataset`
passes its own). Its runtime state (cached chunks, the prefetch thread and its lock) is not pickled and
does not survive fork: a copy in a DataLoader worker starts empty, with a thread of its own.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

_RUNTIME = ("chunks", "pending", "executor", "_lock", "_pid")


class ChunkCache:
    """At most ``capacity`` chunks of ``0..num_chunks-1`` in memory, counting the one being prefetched.

    ``get(chunk, load)`` returns the cached chunk, or ``load(chunk)`` (or the prefetch thread's
    result for it) and keeps it, evicting least recently used chunks beyond ``capacity``. With
    ``prefetch`` and room for two chunks (``capacity >= 2``), asking for chunk c starts making chunk
    c + 1 in one background thread; a prefetch left pending by a jump in the access order is
    cancelled when it has not started. ``capacity=0`` keeps nothing (each ``get`` loads).
    """

    def __init__(self, capacity: int, num_chunks: int, prefetch: bool = True):
        self.capacity, self.num_chunks, self.prefetch = int(capacity), int(num_chunks), bool(prefetch)
        self._reset()

    def _reset(self) -> None:
        self.chunks: OrderedDict[int, Any] = OrderedDict()
        self.pending: dict[int, Future] = {}
        self.executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in _RUNTIME}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    def close(self) -> None:
        """Wait for a chunk being prefetched and stop the prefetch thread; the cached chunks are kept
        and a later ``get`` starts another thread."""
        with self._lock:
            executor, self.executor = self.executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def _evict(self) -> None:
        """Drop least recently used chunks until the cached ones and the one being prefetched fit
        ``capacity``; the chunk just used is the most recent, and is kept."""
        while len(self.chunks) > 1 and len(self.chunks) + len(self.pending) > self.capacity:
            self.chunks.popitem(last=False)

    def get(self, chunk: int, load: Callable[[int], Any]) -> Any:
        if self._pid != os.getpid():  # a forked DataLoader worker: the parent's lock and prefetch thread are not ours
            self._reset()
        with self._lock:
            if chunk in self.chunks:
                self.chunks.move_to_end(chunk)
                return self.chunks[chunk]
            future = self.pending.pop(chunk, None)
        data = future.result() if future is not None else load(chunk)
        with self._lock:
            if self.capacity:
                self.chunks[chunk] = data
                self.chunks.move_to_end(chunk)
                self._evict()
            following = chunk + 1
            # Prefetching needs room for the chunk in use and the one being made (capacity >= 2).
            if self.prefetch and self.capacity >= 2 and following < self.num_chunks and following not in self.chunks:
                for stale in [c for c in self.pending if c != following]:  # left by a jump in the access order
                    if self.pending[stale].cancel():
                        del self.pending[stale]
                if not self.pending:  # at most one chunk in the making
                    if self.executor is None:
                        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="synthbrain-prefetch")
                    self.pending[following] = self.executor.submit(load, following)
                    self._evict()
        return data
