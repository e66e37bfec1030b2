"""Ctrl-C during training: the first asks the loop to stop after the step (it saves), a second stops at once."""

from __future__ import annotations

import signal
import threading


class StopFlag:
    """Ctrl-C sets a flag the loop checks between steps; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.set = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
