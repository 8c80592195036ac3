"""`python -m vgg`: stop signals are caught before the heavy imports (torch), so that a job
preempted in its first seconds still exits 75 (requeue) rather than 143."""

import sys

from vgg.runtime.stop_signals import run_stoppable


def _main() -> int:
    from vgg.cli import main  # after run_stoppable has installed the stop handlers: the CLI imports torch

    return main()


sys.exit(run_stoppable(_main))
