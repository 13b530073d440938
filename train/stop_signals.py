"""SIGTERM and SIGINT during training: the loop finishes its step, checkpoints and exits
(train/engine.py reads `received`); DataLoader workers leave the decision to it."""
from __future__ import annotations

import signal
import sys
import threading


class StopSignals:
    """While fit() runs: SIGTERM and SIGINT only set `received` (the loop then checkpoints and
    stops); a second one stops at once. Installed only in the main thread (Python allows signal
    handlers nowhere else); the previous handlers come back on exit."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, install: bool, verbose: bool = False):
        self.install = install and threading.current_thread() is threading.main_thread()
        self.verbose, self.received, self.previous = verbose, 0, {}

    def __enter__(self) -> "StopSignals":
        if self.install:
            for sig in self.SIGNALS:
                self.previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        for sig, handler in self.previous.items():
            if handler is not None:  # None: set outside Python, cannot be put back
                signal.signal(sig, handler)
        self.previous = {}
        return False

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.received:  # the second one: stop now, without a checkpoint
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        self.received = signum
        if self.verbose:
            sys.stderr.write(f"\n{name}: finishing this step and writing a checkpoint "
                             f"(send {name} again to stop at once)\n")
            sys.stderr.flush()


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers ignore SIGTERM/SIGINT (sent to the whole process group by Ctrl-C or a
    scheduler): the training process decides when to stop, and shuts its workers down itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
