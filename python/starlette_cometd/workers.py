"""Several server processes on one port: the CLI's ``--workers N`` (with ``--redis``, so that
they share sessions). The supervisor binds the socket, starts each worker with it, passes a
stop on to them, and starts a worker again if one dies, as uvicorn's own supervisor does."""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import signal
import socket
import threading
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType

log = logging.getLogger("uvicorn.error")

Serve = Callable[[argparse.Namespace, list[socket.socket]], None]
# How often the supervisor looks at its workers.
CHECK_EVERY = 0.5


def supervise(args: argparse.Namespace, serve: Serve) -> int:
    listener = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(2048)
    listener.set_inheritable(True)
    spawn = multiprocessing.get_context("spawn")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)

    def start() -> BaseProcess:
        worker = spawn.Process(target=serve, args=(args, [listener]), daemon=False)
        worker.start()
        return worker

    processes = [start() for _ in range(args.workers)]
    log.info("Started %d worker processes", len(processes))
    while not stop.wait(CHECK_EVERY):
        for i, worker in enumerate(processes):
            if not worker.is_alive():
                log.warning("worker %s ended (%s): starting another", worker.pid, worker.exitcode)
                processes[i] = start()
    for worker in processes:
        worker.terminate()
    for worker in processes:
        worker.join()
    listener.close()
    return 0
