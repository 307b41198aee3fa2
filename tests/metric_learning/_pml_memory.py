"""pytorch-metric-learning's side of the CrossBatchMemory parity tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def pml_memory_step(
    memory: Any, emb: np.ndarray, labels: np.ndarray, mask: np.ndarray | None
) -> tuple[float, np.ndarray]:
    """One call of PML's ``CrossBatchMemory``: the loss and its gradient w.r.t. the batch (zeros
    when the loss does not depend on it)."""
    e = torch.tensor(emb, requires_grad=True)
    value = memory(
        e, torch.tensor(labels), enqueue_mask=None if mask is None else torch.tensor(mask)
    )
    grad = np.zeros_like(emb)
    if value.requires_grad:
        value.backward()
        if e.grad is not None:
            grad = e.grad.numpy()
    return float(value.detach()), grad
