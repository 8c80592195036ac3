"""Signals that ask a training run to stop, and the exit statuses that say why it stopped.

SIGTERM and SIGUSR1 (a cluster preempting the job) and SIGINT (Ctrl-C) are caught from the
moment `python -m vgg` starts. Before a training loop begins there is nothing to save, so a
request stops the command at once. Inside the loop (and, with several ranks, from the start of
a run, so that no rank leaves a collective call the others are in), a request only sets a flag:
the trainer writes a checkpoint at its next read-back and then raises `Preempted`. A second
Ctrl-C stops at once, keeping the last checkpoint (writes are atomic). A request that arrives
inside an import is sent again until the import has ended: an import may catch what is raised
inside it (numpy's did), which lost the stop or left a module half-imported.

`Preempted` is a BaseException, like KeyboardInterrupt: raised from a handler inside any code,
it must not be taken for that code's own failure by an `except Exception`.
"""

from __future__ import annotations

import ctypes
import os
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


class Preempted(BaseException):
    """A stop signal (`signum`; None: one another rank received) ended the command; `saved`: a
    checkpoint of the moment was written (False: the previous one, if any, is kept)."""

    def __init__(self, signum: int | None = None, saved: bool = True):
        super().__init__(signum, saved)
        self.signum, self.saved = signum, saved
        self.reported = saved  # a saved stop was logged by the trainer; an unsaved one is reported once, where it is caught

    @property
    def exit_code(self) -> int:
        return exit_code_of(self.signum)


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
    The trainer sets `deferred` where a request must wait for its next read-back (in its loop; with
    several ranks, from the start of the run) and `in_loop` once it trains."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.deferred = False
        self.in_loop = False
        self._previous: dict[int, object] = {}
        self._asked_again = False

    @property
    def raised(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return exit_code_of(self.signum)

    def agree(self, stopped: bool, interrupted: bool) -> None:
        """Take on what the ranks together were asked: a stop any received (as a Ctrl-C if any was one)."""
        if interrupted:
            self.signum = signal.SIGINT
        elif stopped and self.signum is None:
            self.signum = signal.SIGTERM

    def __enter__(self) -> StopRequests:
        try:
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        except BaseException:  # a signal caught by the handlers installed so far: undo them all
            self.__exit__()
            raise
        return self

    def _handle(self, signum: int, frame) -> None:
        asked_again, self._asked_again = self._asked_again, False  # the same request, delivered again after an import
        second_ctrl_c = signum == signal.SIGINT and self.signum == signal.SIGINT and not asked_again
        if self.signum is None or signum == signal.SIGINT:
            self.signum = signum
        if not self.deferred or second_ctrl_c:
            if _inside_import(frame):
                # An import may catch what a handler raises from inside it (numpy's did: the stop was lost, or the
                # half-imported module failed later): the signal is sent again until no import is in progress.
                self._asked_again = True
                threading.Timer(RESEND_SECONDS, os.kill, (os.getpid(), signum)).start()
                return
            _quiet_background_threads()
            raise Preempted(self.signum, saved=False)

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


RESEND_SECONDS = 0.02


def _inside_import(frame) -> bool:
    """Whether `frame` runs inside an import statement (below a frame of importlib's bootstrap)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


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
    "DataLoader worker exited unexpectedly" before it could checkpoint. The main process stops them
    (the loader's shutdown), so SIGTERM, which torch's own clean-up of hung workers sends, is ignored
    as well. A worker is killed when its parent ends, even by SIGKILL: torch's own check of its
    parent comes only every 5 s, and a runner's workers hold its lock until they end. Its background
    threads' connection errors are not printed (see `_quiet_background_threads`)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    die_with_parent()
    # When the main process stops at once, the thread that passes this worker's tensors to it (multiprocessing's
    # resource sharer) loses its connection and would print a ConnectionResetError traceback under the stop's line.
    _quiet_background_threads()


_PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGKILL, parent: int | None = None) -> None:
    """In a child process: the kernel sends it `signum` when its parent ends, however it ends (Linux;
    elsewhere nothing is done); if `parent`, the pid the parent had, is already gone, now. Worker
    processes call it at start (data generation, loaders), so that a parent killed with SIGKILL leaves
    none of them behind, holding the runs folder's lock."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum)
    except (OSError, AttributeError):  # not Linux
        return
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signum)


def run_stoppable(command: Callable[[], int]) -> int:
    """Run `command` with the stop signals caught, returning its exit status: a stop signal makes it
    `exit_code_of(signal)`, with one line on stderr unless the trainer reported the stop already."""
    try:  # outside the `with`: a signal may arrive while its handlers are being installed
        with StopRequests():
            return command()
    except Preempted as stopped:
        if not stopped.reported:
            print(
                f"{describe(stopped.signum)}: stopped at once, exit {stopped.exit_code}; files are written atomically, "
                "so each is whole or absent: run the same command to go on",
                file=sys.stderr,
            )
        return stopped.exit_code
