"""The contract of an attached module whose behaviour follows the training iteration."""
import abc


class IterationScheduled(abc.ABC):
    """An attached module that acts differently as training goes on (e.g. switched off from a given iteration): the
    model calls ``set_iteration`` before every training step, so a resumed run continues the same schedule."""

    @abc.abstractmethod
    def set_iteration(self, iteration: int) -> None:
        """The iteration of the step about to run."""
