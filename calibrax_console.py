"""The ``calibrax`` console script: Ctrl-C handling first, then the package.

Importing :mod:`calibrax` (jax, XLA, flax) takes seconds, and any module inside the package
imports the whole package first. A Ctrl-C in those seconds would otherwise end in a
``KeyboardInterrupt`` traceback from deep inside some import, or in a crash of the interpreter's
teardown while XLA's threads still run. This module lives outside the package, so importing it
imports nothing heavy: :func:`main` installs the interrupt handling, then imports
:mod:`calibrax.cli.main` and runs it. From then on a Ctrl-C at any point ends the process with one
line, ``calibrax: interrupted``, and exit code 130.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

__all__ = ["EXIT_INTERRUPTED", "install_interrupt_handling", "leave_interrupted", "main"]

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C

_LEAVING = threading.Lock()
_INSTALLED = threading.Event()


def leave_interrupted() -> None:
    """Say "interrupted" once and end the process with exit code 130, skipping teardown."""
    _LEAVING.acquire()  # a second caller waits here until the process is gone
    try:
        sys.stdout.flush()
    except (OSError, ValueError):  # a broken or closed stdout must not stop the exit
        pass
    os.write(2, b"calibrax: interrupted\n")
    os._exit(EXIT_INTERRUPTED)


def install_interrupt_handling() -> None:
    """Make Ctrl-C end the process at once: "calibrax: interrupted", exit code 130.

    Two paths, whichever comes first (the lock in :func:`leave_interrupted` lets one speak):
    the Python-level SIGINT handler, which runs between bytecodes of the main thread, and a
    watcher thread reading the signal's wake-up byte, for when the main thread sits for minutes
    in C code (an XLA compilation, a large import). Neither raises ``KeyboardInterrupt``, so no
    traceback and no interpreter teardown (which can crash while XLA's threads still run).
    Installing twice is a no-op.
    """
    if _INSTALLED.is_set():
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.signal(signal.SIGINT, lambda signum, frame: leave_interrupted())
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)

    def watch() -> None:
        while True:
            data = os.read(read_fd, 64)
            if data and signal.SIGINT in data:
                leave_interrupted()

    threading.Thread(target=watch, name="calibrax-interrupt", daemon=True).start()
    _INSTALLED.set()


def main() -> int:
    """Entry point of the ``calibrax`` console script (``[project.scripts]``)."""
    install_interrupt_handling()
    from calibrax.cli.main import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
