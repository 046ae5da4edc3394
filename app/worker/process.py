"""A local worker process: the `Worker` loop between two pipes of the local pool.

A thread drains the request pipe into the worker's inbox while the main thread computes, so the
API's writes never wait on a forward pass; EOF on that pipe (the API died) stops the worker.
"""

from __future__ import annotations

import queue
import signal
import threading
from multiprocessing.connection import Connection

from app.worker.loop import Worker, prepare
from app.worker.protocol import Stop, WorkerConfig


def _receive(requests: Connection, inbox: queue.SimpleQueue) -> None:
    while True:
        try:
            message = requests.recv()
        except (EOFError, OSError):
            message = Stop()
        inbox.put(message)
        if isinstance(message, Stop):
            return


def worker_main(config: WorkerConfig, requests: Connection, outbox: Connection) -> None:
    # Ctrl-C or a SIGTERM to the process group is the API's to handle: it stops its workers
    # (a Stop message, then SIGKILL), and EOF on the pipe stops us if the API is gone.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    device = prepare(config, override_threads=False)
    worker = Worker.for_config(outbox, config)
    worker.load(config.specs, device, config.max_running)
    threading.Thread(target=_receive, args=(requests, worker.inbox), daemon=True).start()
    worker.serve()
