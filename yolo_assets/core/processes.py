"""Processes on this machine, and whether a server answers (no Dagster)."""

import os
import signal
import socket
import threading


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a child of this process that exited stays a zombie until it is reaped
        finished, _ = os.waitpid(pid, os.WNOHANG)
        return finished == 0
    except ChildProcessError:
        return True


def restore_interrupts() -> None:
    """Give SIGINT its default handler again where the process was started with it ignored (a shell
    ignores SIGINT in the commands it starts with `&`). Dagster's in-process execution copies SIGINT's
    handler to SIGTERM, so an ignored SIGINT would make SIGTERM ignored too, and every process started
    afterwards (servers, `tail` for compute logs) would ignore SIGTERM: stopping it would hang."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def tcp_answers(host: str, port: int, timeout: float) -> bool:
    """A TCP connection to host:port opens (a server listens there, whatever it says)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
