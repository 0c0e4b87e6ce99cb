"""SIGINT and SIGTERM during training: finish the current update, checkpoint, and stop as `interrupted`.

A batch scheduler's SIGTERM (or Ctrl-C) would otherwise kill the process mid-update and lose everything since
the last periodic checkpoint. The handler only records the signal; the training loop reads it between updates,
where the state is consistent. A second signal stops at once.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator, Optional

_received: list[int] = []


def requested() -> Optional[int]:
    """The number of the stop signal received since training began, if any."""
    return _received[0] if _received else None


def _record(signum: int, frame) -> None:
    if _received:
        raise KeyboardInterrupt
    _received.append(signum)


@contextmanager
def stop_between_updates() -> Iterator[None]:
    """While training: SIGINT / SIGTERM are recorded for the loop instead of killing the process (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous = {s: signal.signal(s, _record) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _received.clear()


def name(signum: int) -> str:
    return signal.Signals(signum).name
