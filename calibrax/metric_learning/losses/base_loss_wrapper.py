"""BaseLossWrapper: the base of the wrappers that feed another loss (memory, self-supervision)."""

from __future__ import annotations

from typing import Any

from flax import nnx

__all__ = ["BaseLossWrapper"]


class BaseLossWrapper(nnx.Module):
    """Base of :class:`~calibrax.metric_learning.CrossBatchMemory` and
    :class:`~calibrax.metric_learning.SelfSupervisedLoss`, as pytorch-metric-learning's: a
    wrapper accepts only the losses named by :meth:`supported_losses` (pytorch-metric-learning's
    lists, by class name).

    Args:
        loss: The wrapped loss.

    Raises:
        ValueError: ``"<Wrapper> not supported for <Loss>"`` if the loss is not in the list.
    """

    def __init__(self, loss: Any) -> None:
        self.check_loss_support(type(loss).__name__)

    @staticmethod
    def supported_losses() -> tuple[str, ...]:
        """The class names of the losses the wrapper accepts."""
        raise NotImplementedError

    @classmethod
    def check_loss_support(cls, loss_name: str) -> None:
        """Raise ``ValueError`` unless ``loss_name`` is supported."""
        if loss_name not in cls.supported_losses():
            raise ValueError(f"{cls.__name__} not supported for {loss_name}")
