"""The model's output per task, kept in memory so that a re-score after labels alone runs no model.

A full re-score after ``RESCORE_MIN_NEW_LABELS`` label changes runs the same served model over the
same tasks: only the labeled set, and so the strategy's input, changed. :class:`OutputCache` keeps
each task's :class:`~ml_backend.inference.model.ImagePrediction` (scores and embeddings included)
under what decides it: the model version (its weights' content hash, so a promoted model never
reads another version's outputs), the project, the task id, the task's image URI, ``conf``, the
TTA flag, ``IMGSZ``, and whether scores and class-agnostic NMS were on. Failed tasks are never
kept. The cache is bounded in bytes; the least recently used entries go first.

Example:
    >>> import numpy as np
    >>> from ml_backend.inference.model import ImagePrediction
    >>> cache = OutputCache(max_bytes=10_000)
    >>> cache.put(("v1", 1), ImagePrediction(10, 10, embedding=np.zeros(8, np.float32)))
    >>> cache.get(("v1", 1)).width, cache.get(("v2", 1))
    (10, None)
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np

from ml_backend.inference.model import ImagePrediction

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
_OVERHEAD = 512  # bytes of Python objects around an entry's arrays


def prediction_bytes(pred: ImagePrediction) -> int:
    """About how much memory ``pred`` holds: its arrays plus a fixed overhead."""
    arrays = [getattr(pred, f.name) for f in dataclasses.fields(pred)]
    arrays += list(pred.polygons)
    return _OVERHEAD + sum(a.nbytes for a in arrays if isinstance(a, np.ndarray))


class OutputCache:
    """A thread-safe LRU map from a key to a model output, holding at most ``max_bytes``.

    ``get`` returns a shallow copy, so that setting a field on it leaves the kept entry alone.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[ImagePrediction, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: Hashable) -> ImagePrediction | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return dataclasses.replace(entry[0])

    def put(self, key: Hashable, pred: ImagePrediction) -> None:
        size = prediction_bytes(pred)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size > self.max_bytes:
                return
            self._entries[key] = (pred, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._bytes -= evicted

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


__all__ = ["DEFAULT_MAX_BYTES", "OutputCache", "prediction_bytes"]
