"""Signals that ask a training run to stop, and the exit statuses that say why it stopped.

SIGTERM and SIGUSR1 (a cluster preempting the job) and SIGINT (Ctrl-C) are caught from the
moment a run starts. Before its training loop begins there is nothing to save, so a request
stops it at once. Inside the loop, a request only sets a flag: the loop writes a checkpoint
at its next read-back and then raises `Preempted`. A second Ctrl-C stops at once, keeping the
last checkpoint (writes are atomic).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable

EXIT_BAD_INPUT = 2
EXIT_PREEMPTED = 75
"""Exit status after SIGTERM/SIGUSR1 (EX_TEMPFAIL): requeue the job and run the same command."""
EXIT_INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT, what shells report)."""
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class Preempted(Exception):
    """A stop signal ended the run: `exit_code` is the process's exit status, `saved` whether a
    checkpoint of the moment was written (False: the previous one, if any, is kept)."""

    def __init__(self, exit_code: int = EXIT_PREEMPTED, saved: bool = True):
        super().__init__(exit_code, saved)
        self.exit_code, self.saved = exit_code, saved
        self.reported = saved  # a saved stop was logged by the trainer; an unsaved one is reported once, where it is caught


def exit_code_of(signum: int | None) -> int:
    """The exit status after a stop asked by `signum`."""
    return EXIT_INTERRUPTED if signum == signal.SIGINT else EXIT_PREEMPTED


def describe(signum: int | None) -> str:
    """'interrupted (Ctrl-C)' or 'preempted (SIGTERM)', for log lines."""
    if signum == signal.SIGINT:
        return "interrupted (Ctrl-C)"
    return f"preempted ({signal.Signals(signum).name})" if signum else "preempted"


class StopRequests:
    """Catches the stop signals while in use (`with StopRequests() as stop:`); see the module's doc.
    `in_loop` is set by the trainer once its loop runs (from then on, requests are deferred)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.in_loop = False
        self._previous: dict[int, object] = {}

    @property
    def raised(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return exit_code_of(self.signum)

    def __enter__(self) -> StopRequests:
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        second_ctrl_c = signum == signal.SIGINT and self.signum == signal.SIGINT
        if self.signum is None or signum == signal.SIGINT:
            self.signum = signum
        if not self.in_loop or second_ctrl_c:
            _quiet_background_threads()
            raise Preempted(self.exit_code, saved=False)

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _quiet_background_threads() -> None:
    """Stopping at once cuts the loader's threads off from its workers; their connection errors
    (reported through `threading.excepthook`, or `sys.excepthook` by multiprocessing's resource
    sharer) would print tracebacks under the one line that says what happened."""
    thread_hook, process_hook = threading.excepthook, sys.excepthook
    quiet = (ConnectionError, EOFError)

    def on_thread(args: threading.ExceptHookArgs) -> None:
        if not issubclass(args.exc_type, quiet):
            thread_hook(args)

    def on_process(kind, value, traceback) -> None:
        if not issubclass(kind, quiet):
            process_hook(kind, value, traceback)

    threading.excepthook, sys.excepthook = on_thread, on_process


def ignore_stop_signals(worker_id: int = 0) -> None:
    """For loader worker processes (a `worker_init_fn`): Ctrl-C in a terminal and `scancel` signal the
    whole process group, and a worker killed by them would fail the main process's next batch with
    "DataLoader worker exited unexpectedly" before it could checkpoint. The main process stops them."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def run_stoppable(command: Callable[[], int]) -> int:
    """Run `command` with the stop signals caught, returning its exit status: a stop signal makes it
    `exit_code_of(signal)`, with one line on stderr unless the trainer reported the stop already."""
    with StopRequests() as stop:
        try:
            return command()
        except Preempted as stopped:
            if not stopped.reported:
                print(
                    f"{describe(stop.signum)}: stopped at once, exit {stopped.exit_code}; files are written atomically, "
                    "so each is whole or absent: run the same command to go on",
                    file=sys.stderr,
                )
            return stopped.exit_code
