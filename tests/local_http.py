"""A local HTTP server for download tests: 127.0.0.1 only, in a thread, shut down with its block."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator


@contextmanager
def serving_with(handler: type[BaseHTTPRequestHandler], path: str) -> Iterator[str]:
    """Serve with ``handler`` on a free port of 127.0.0.1; yields the URL of ``path``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{path}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
