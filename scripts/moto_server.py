#!/usr/bin/env python3
"""Serve moto's AWS mock (DynamoDB JSON protocol at "/") single-threaded on 127.0.0.1.

Usage: moto_server.py [PORT]    (PORT 0 or omitted = let the OS pick a free port)

Why not `moto_server`: moto's own entry point runs werkzeug with threaded=True, and
moto's DynamoDB backend does not serialise conditional updates across threads
(measured: 301 successes for a limit of 300 in 2 of 5 runs). Served one request at a
time, conditional writes are atomic, matching real DynamoDB semantics.

This is exactly what `werkzeug.serving.run_simple(host, port, app, threaded=False,
processes=1)` does without the reloader (make_server + serve_forever); we call
make_server directly so we can report the bound port when PORT is 0 and skip the
startup banner. Single-threaded werkzeug speaks HTTP/1.0 (one request per
connection), so an idle keep-alive client cannot starve others.

Prints exactly one line to stdout once listening: "http://127.0.0.1:<port>".
Request logging is disabled. SIGTERM/SIGINT exit quietly with status 0.
If TOLLGATE_MOTO_WATCH_PID is set, the server also exits within ~1 s after that
process is gone (scripts/with-moto.sh sets it, so even a SIGKILLed wrapper leaves
no orphan server behind).
"""

import logging
import os
import signal
import sys
import threading
import time


def _exit_when_gone(pid: int) -> None:
    while True:
        time.sleep(1)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:
            pass  # exists, owned by someone else



def main(argv: list[str]) -> int:
    if len(argv) > 2 or (len(argv) == 2 and not argv[1].isdigit()):
        print(f"usage: {argv[0]} [PORT]", file=sys.stderr)
        return 2
    port = int(argv[1]) if len(argv) == 2 else 0
    host = "127.0.0.1"

    # moto uses MOTO_PORT to build some URLs (not DynamoDB's); keep it honest if known.
    if port:
        os.environ.setdefault("MOTO_PORT", str(port))

    from werkzeug.serving import make_server

    # moto >= 5.1 layout: moto/moto_server/werkzeug_app.py (moto.server re-exports these).
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )

    class QuietHandler(MotoRequestHandler):
        def log_request(self, *args, **kwargs):  # per-request access log
            pass

        def log_message(self, *args, **kwargs):  # other BaseHTTPRequestHandler noise
            pass

    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    def _stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    watch = os.environ.get("TOLLGATE_MOTO_WATCH_PID", "")
    if watch.isdigit():
        threading.Thread(target=_exit_when_gone, args=(int(watch),), daemon=True).start()

    app = DomainDispatcherApplication(create_backend_app)
    srv = make_server(
        host,
        port,
        app,
        threaded=False,
        processes=1,
        request_handler=QuietHandler,
    )
    os.environ["MOTO_PORT"] = str(srv.port)
    print(f"http://{host}:{srv.port}", flush=True)
    try:
        srv.serve_forever()
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except KeyboardInterrupt:
        sys.exit(0)
