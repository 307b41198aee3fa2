"""MPerClassSampler: batches of ``m`` samples per class, as pytorch-metric-learning's.

Pure numpy (no torch, no JAX): an iterable of index batches for a plain training loop, or for
any loader that takes index batches (e.g. a grain ``MapDataset`` indexed by each batch).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["MPerClassSampler"]


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"expected `{name}` to be an integer >= {minimum}, got {value!r}")
    return int(value)


class MPerClassSampler:
    """Index batches holding ``m`` samples of each of ``batch_size // m`` classes.

    As pytorch-metric-learning's ``MPerClassSampler``: an epoch is ``length_before_new_iter``
    indices (rounded down to a multiple of ``batch_size``, or of ``m * number of classes`` when
    ``batch_size`` is None). Each batch draws its classes without replacement (a fresh shuffle of
    the classes per batch) and ``m`` samples from each class: without replacement, or with
    replacement when the class has fewer than ``m`` samples. Every batch therefore holds exactly
    ``batch_size // m`` distinct classes, ``m`` indices each. With ``batch_size=None`` each batch
    is one pass over all classes (``m * number of classes`` indices), as PML's single pass.

    Differences from PML: PML is a torch ``Sampler`` of single indices, drawn from the global
    ``numpy`` random state, for a ``DataLoader`` that cuts them into batches; this yields the
    batches (numpy int64 arrays) itself, from a ``numpy.random.Generator`` seeded by ``seed``
    (each iteration is a new epoch; the same seed gives the same epochs). PML's assertion errors
    are ``ValueError`` here. When one pass is longer than ``length_before_new_iter`` (and
    ``batch_size`` is None), PML writes one whole pass past its own ``len``; here the epoch is
    that one pass and ``len`` says so.

    Args:
        labels: 1-D integer class labels of the dataset (numpy array or sequence).
        m: Samples per class in each batch, >= 1.
        batch_size: Indices per batch, a multiple of ``m``, at most ``m * number of classes``
            and at most ``length_before_new_iter``; None: one pass over all classes per batch.
        length_before_new_iter: Indices per epoch before rounding (default 100000, as PML).
        seed: Seed of the generator.

    Raises:
        ValueError: If ``labels`` is not a non-empty 1-D integer array, ``m`` or ``batch_size`` or
            ``length_before_new_iter`` is not a positive integer, or the PML conditions above do
            not hold.

    Example:
        >>> import numpy as np
        >>> from calibrax.metric_learning import MPerClassSampler
        >>> sampler = MPerClassSampler(np.repeat(np.arange(4), 5), m=2, batch_size=4,
        ...                            length_before_new_iter=8, seed=0)
        >>> [int(np.bincount(np.repeat(np.arange(4), 5)[b], minlength=4).max()) for b in sampler]
        [2, 2]
    """

    def __init__(
        self,
        labels: Any,
        m: int,
        batch_size: int | None = None,
        length_before_new_iter: int = 100000,
        *,
        seed: int = 0,
    ) -> None:
        arr = np.asarray(labels)
        if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iub":
            raise ValueError(
                "expected `labels` to be a non-empty 1-D array of integer labels, got "
                f"shape {arr.shape} and dtype {arr.dtype}"
            )
        self.m_per_class = _check_int(m, "m", 1)
        self.batch_size = None if batch_size is None else _check_int(batch_size, "batch_size", 1)
        length = _check_int(length_before_new_iter, "length_before_new_iter", 1)
        self.seed = _check_int(seed, "seed", 0)
        self.classes, inverse, counts = np.unique(arr, return_inverse=True, return_counts=True)
        order = np.argsort(inverse, kind="stable")
        # (n_classes, max_count) dataset indices of each class, in dataset order, padded.
        self._counts = counts
        self._padded = np.zeros((len(self.classes), max(counts.max(), self.m_per_class)), np.int64)
        rank = np.arange(arr.size) - np.repeat(np.cumsum(counts) - counts, counts)
        self._padded[inverse[order], rank] = order
        self.length_of_single_pass = self.m_per_class * len(self.classes)
        if self.batch_size is None:
            if self.length_of_single_pass < length:
                length -= length % self.length_of_single_pass
            else:
                length = self.length_of_single_pass
            self._batch_len = self.length_of_single_pass
        else:
            if length < self.batch_size:
                raise ValueError(
                    f"expected `length_before_new_iter` ({length}) to be at least `batch_size` "
                    f"({self.batch_size})"
                )
            if self.length_of_single_pass < self.batch_size:
                raise ValueError(
                    f"expected m * (number of classes) ({self.m_per_class} * "
                    f"{len(self.classes)} = {self.length_of_single_pass}) to be at least "
                    f"`batch_size` ({self.batch_size})"
                )
            if self.batch_size % self.m_per_class:
                raise ValueError(
                    f"expected `m` ({self.m_per_class}) to divide `batch_size` "
                    f"({self.batch_size}) without remainder"
                )
            length -= length % self.batch_size
            self._batch_len = self.batch_size
        self.list_size = length
        self._rng = np.random.default_rng(self.seed)

    def __len__(self) -> int:
        """Indices per epoch (PML's ``len``)."""
        return self.list_size

    @property
    def num_batches(self) -> int:
        """Batches per epoch."""
        return self.list_size // self._batch_len

    def epoch(self) -> np.ndarray:
        """The next epoch's indices, (num_batches, batch length) int64 (advances the generator)."""
        rng = self._rng
        classes_per_batch = self._batch_len // self.m_per_class
        n_classes, max_count = self._padded.shape
        m = self.m_per_class
        out = np.empty((self.num_batches, classes_per_batch, m), np.int64)
        # Batches per chunk: keep the (chunk, classes, max_count) random keys within ~4M values.
        chunk = max(1, (1 << 22) // max(1, classes_per_batch * max_count))
        for start in range(0, self.num_batches, chunk):
            stop = min(start + chunk, self.num_batches)
            n = stop - start
            # A fresh shuffle of the classes for each batch (PML's per-batch label shuffle).
            cls = np.argsort(rng.random((n, n_classes)), axis=1)[:, :classes_per_batch]
            counts = self._counts[cls]
            # Without replacement: the m smallest of random keys over the class's samples...
            keys = rng.random((n, classes_per_batch, max_count))
            keys[np.arange(max_count)[None, None, :] >= counts[..., None]] = np.inf
            pos = np.argsort(keys, axis=2)[..., :m]
            # ... with replacement where the class has fewer than m samples.
            small = counts < m
            if np.any(small):
                draws = np.floor(rng.random((n, classes_per_batch, m)) * counts[..., None])
                pos = np.where(small[..., None], draws.astype(np.int64), pos)
            out[start:stop] = self._padded[cls[..., None], pos]
        return out.reshape(self.num_batches, self._batch_len)

    def __iter__(self) -> Iterator[np.ndarray]:
        """One epoch of index batches (each a 1-D int64 array)."""
        yield from self.epoch()
