"""A study served over real HTTP for the tests: waitress in a thread (or in a forked process), and
a small cookie-keeping JSON client."""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator


@contextlib.contextmanager
def live_server(app, threads: int = 4) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 at a free port in a daemon thread; yields the base URL."""
    from waitress import wasyncore
    from waitress.server import create_server

    server = create_server(app, host="127.0.0.1", port=0, threads=threads, ident="test", asyncore_loop_timeout=0.2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:  # closed from inside the server's own loop (closing its sockets from here races with its select)
        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        thread.join(5)
        server.task_dispatcher.shutdown()


def serve_in_child(folder, connection) -> None:
    """Target of a forked process: serve a study and send the port through ``connection``."""
    from waitress.server import create_server

    from synthbrain.reader_study.server import LOCAL_HOSTS, create_app

    server = create_server(create_app(folder, trusted_hosts=LOCAL_HOSTS), host="127.0.0.1", port=0, threads=4, ident="test")
    connection.send(server.effective_port)
    server.run()


class Client:
    """JSON over HTTP with a cookie jar, like one browser."""

    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def request(self, method: str, path: str, body=None, timeout: float = 10.0) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with self.opener.open(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    def answer_next(self, label: str = "real", confidence: int | None = 3) -> tuple[int, dict, str | None]:
        status, progress = self.request("GET", "/api/progress")
        if status != 200 or progress["done"]:
            return status, progress, None
        case_id = progress["case"]["id"]
        status, body = self.request("POST", "/api/answer", {"case_id": case_id, "label": label, "confidence": confidence, "seconds": 1.5})
        return status, body, case_id
