"""Checkpoint at the scheduler's signal, then let the job's own handler requeue.

submitit installs a handler for its preemption/time-out signal (``SIGUSR2`` unless ``SUBMITIT_PREEMPT_SIGNAL``
names another) that checkpoints the job's callable, requeues the job and exits. Left alone it runs wherever the
signal lands, mid-step, and the rerun resumes from the last periodic checkpoint. ``PreemptionHook`` replaces that
handler for the duration of ``fit`` with one that only records the request; the training loop finishes the step
in progress, writes a checkpoint at that step boundary and then calls the previous handler (``hand_over``). With
several ranks the request is folded into the per-step all-reduce, so every rank stops at the same step.

Where no handler is installed (outside a submitit job) or ``fit`` does not run in the main thread, the hook does
nothing and the signal keeps its default action.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

from benchmark.errors import ConfigError

log = logging.getLogger(__name__)

SIGNAL_ENV = "SUBMITIT_PREEMPT_SIGNAL"  # submitit reads the same variable (default USR2)


def job_signal(env: dict[str, str] | None = None) -> signal.Signals:
    """The signal submitit's job handler listens to.

    Args:
        env: the environment to read (``os.environ`` when None).

    Returns:
        ``signal.SIG<name>`` for ``SUBMITIT_PREEMPT_SIGNAL=<name>``, ``SIGUSR2`` when unset.
    """
    env = os.environ if env is None else env
    name = env.get(SIGNAL_ENV, "USR2")
    sig = getattr(signal, "SIG" + name, None)
    if not isinstance(sig, signal.Signals):
        raise ConfigError(f"{SIGNAL_ENV}: {name!r} is not a signal name (e.g. USR2)")
    return sig


class PreemptionHook:
    """Defers the job's preemption handler to the next step boundary (a context manager around training).

    Args:
        signum: the signal to watch; None reads ``job_signal()``.

    Attributes:
        installed: True while the hook has replaced a handler.
        requested: set by the signal; cleared by ``hand_over``.
    """

    def __init__(self, signum: int | None = None):
        self.signum = signal.Signals(signum) if signum is not None else job_signal()
        self.previous: Any = None
        self.installed = False
        self.requested = False

    def __enter__(self) -> PreemptionHook:
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set from the main thread
        previous = signal.getsignal(self.signum)
        if not callable(previous):  # SIG_DFL, SIG_IGN or a handler set outside Python: leave the signal alone
            return self
        self.previous = previous
        signal.signal(self.signum, self._record)
        self.installed = True
        return self

    def _record(self, signum: int, frame: FrameType | None) -> None:
        # nothing else here: the handler runs between two bytecodes of the step, possibly inside logging or torch
        self.requested = True

    def hand_over(self) -> None:
        """Clear the request and call the previous handler (submitit's: checkpoint the callable, requeue, exit).

        submitit's handler exits on rank 0 and returns on the other ranks, which then go on until the requeue
        ends the job, as they would without this hook.
        """
        self.requested = False
        if self.previous is not None:
            log.warning("handing %s over to the job's handler", self.signum.name)
            self.previous(int(self.signum), None)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.installed:
            return
        signal.signal(self.signum, self.previous)  # from here on the signal reaches the previous handler directly
        self.installed = False
        if not self.requested:
            return
        if exc_type is None:  # arrived after the last step's check: training is complete and checkpointed
            self.hand_over()
        else:
            log.warning("%s arrived while training failed (%s); the failure is reported", self.signum.name, exc)
