"""A request to stop training early and keep its progress: the signal a cluster sends before it preempts or ends a
job (slurm's ``--signal=USR1@<seconds>``, ``scancel``'s or ``kill``'s SIGTERM).

``gsr train`` (also run as ``basicsr train``) and ``gsr repro`` install the handlers (``stop_on_signals``); the
model saves the training state of the last step and ends the run (``GsrModel.stop_if_requested``), so
``--auto_resume`` continues from that step instead of the last ``save_checkpoint_freq`` multiple. Where nothing
installed them (a script calling BasicSR's ``train_pipeline`` itself, a model built in a test) nothing changes."""
import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Tuple

STOP_SIGNALS: Tuple[int, ...] = (signal.SIGTERM, signal.SIGUSR1)
STOPPED_EXIT_CODE = 3  # ``gsr train``'s exit status for "stopped on request, state saved": neither 0 nor an error (2)

_requested: Optional[int] = None


class TrainingStopped(Exception):
    """Training ended on a stop request; the message says what was saved and how to continue."""


def stop_requested() -> Optional[int]:
    """The signal that asked training to stop, or None."""
    return _requested


@contextmanager
def stop_on_signals(signals: Tuple[int, ...] = STOP_SIGNALS,
                    forward: Optional[Callable[[int], None]] = None) -> Iterator[None]:
    """Record ``signals`` as stop requests while the block runs (and pass each to ``forward``, e.g. to the
    processes a study started); the previous handlers and no request after it. Outside the main thread (where
    Python allows no handler) the block runs without."""
    global _requested

    def handler(signum: int, frame) -> None:  # only records the request: the model acts between two steps
        global _requested
        _requested = signum
        if forward is not None:
            forward(signum)

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        signals = ()
    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        _requested = None
