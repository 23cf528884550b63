"""``reader-study serve``: the web page a reader answers on (Flask, served by waitress).

Routes (JSON unless said otherwise; the session is an HttpOnly, SameSite=Strict cookie)::

    GET  /                                   the page (static HTML, script and style of this package)
    GET  /static/<file>                      the page's files (Flask's safe static route)
    GET  /api/study                          title, number of cases, whether it is closed, the session's reader
    GET  /favicon.ico                        204 (no icon)
    POST /api/session   {"name": ...}        start or continue as a reader (sets the cookie)
    POST /api/logout                         stop for now (forgets the cookie's session)
    GET  /api/progress                       the reader's progress and current case (id, slices per view)
    GET  /api/case/<id>/<view>/<index>       one slice as PNG (view: axial, coronal, sagittal)
    POST /api/answer    {"case_id", "label", "confidence", "seconds", "reader"}  ("seconds", "reader" optional)

Nothing from a request becomes a file path: a case id is looked up among the study's cases (a
dict built at start from ``study.json``), the page's files come through Flask's static route
(``safe_join``: no ``..``, no absolute paths), and nothing else is read from disk. The key
(``key/``) is read once at start, if present, only to check that it matches the cases; nothing of it
is kept or sent. Slices are rendered from the case's uint8 volume in RAS orientation,
radiological convention (the patient's right on the left of the screen; sagittal: anterior on the
left), and sent as uncompressed PNG, so every slice of a view has the same size, real or not.

Answers are refused with 400 (malformed), 401 (no session), 403 (study closed, foreign origin),
404 (unknown case), 409 (already answered, not the next case, or ``reader`` is not the session's
reader: another tab logged in someone else), 413 (body over 4 KiB) or 415 (not JSON); the body's
``error`` says why, and the page shows it. The case a progress answer names is marked served
(:meth:`AnswerStore.mark_served`): the server's own time per case runs from there.

A POST must be JSON with no foreign ``Origin``, which, with the SameSite cookie, keeps other
web pages from answering in a reader's name. Bound to localhost, the server also refuses any
``Host`` but ``localhost`` / ``127.0.0.1`` (DNS rebinding).
"""

from __future__ import annotations

import io
import logging
import threading
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from synthbrain.reader_study.store import AnswerRefused, AnswerStore, open_store
from synthbrain.reader_study.study import Study, load_study, read_case

COOKIE = "synthbrain_reader"
VIEWS = ("axial", "coronal", "sagittal")
LOCAL_HOSTS = ("127.0.0.1", "localhost")
log = logging.getLogger("synthbrain")


def orient_slice(volume: np.ndarray, view: str, index: int) -> np.ndarray:
    """Slice ``index`` of a RAS+ (X, Y, Z) volume as a 2D image (rows top to bottom): axial (Y, X)
    anterior up, coronal (Z, X) and sagittal (Z, Y) superior up; the patient's right on the left
    (radiological); sagittal with anterior on the left. ValueError for an unknown view."""
    if view == "axial":
        plane = volume[:, :, index]
    elif view == "coronal":
        plane = volume[:, index, :]
    elif view == "sagittal":
        plane = volume[index, :, :]
    else:
        raise ValueError(f"view={view!r}; allowed: {', '.join(VIEWS)}")
    return np.ascontiguousarray(plane.T[::-1, ::-1])


def view_sizes(shape) -> dict[str, dict[str, int]]:
    """Per view: number of slices, and width and height of a slice in pixels, for an (X, Y, Z) grid."""
    x, y, z = shape
    return {
        "axial": {"slices": z, "width": x, "height": y},
        "coronal": {"slices": y, "width": x, "height": z},
        "sagittal": {"slices": x, "width": y, "height": z},
    }


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 2D image as an uncompressed PNG (its size depends on the image's shape only)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


class _Volumes:
    """The study's cases as uint8 RAS arrays, read on first use and kept (a case is ~0.1-1 MB)."""

    def __init__(self, study: Study):
        self.study, self._cache, self._lock = study, {}, threading.Lock()

    def get(self, case_id: str) -> np.ndarray:
        with self._lock:
            if case_id not in self._cache:
                self._cache[case_id] = read_case(self.study.case_file(case_id))
            return self._cache[case_id]


def create_app(folder: str | Path, *, trusted_hosts: tuple[str, ...] | None = None, store: AnswerStore | None = None) -> Flask:
    """The Flask application of a study folder (validated by
    :func:`~synthbrain.reader_study.study.load_study`, ValueError if incomplete; the answers
    database is created beside it). ``trusted_hosts``: the ``Host`` names accepted (None: any)."""
    study = load_study(folder, key="optional")
    store = store or open_store(study)
    volumes = _Volumes(study)
    shape = tuple(int(s) for s in study.grid["shape"])
    sizes = view_sizes(shape)
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.config.update(MAX_CONTENT_LENGTH=4096, TRUSTED_HOSTS=list(trusted_hosts) if trusted_hosts else None)
    app.json.sort_keys = False
    app.extensions["synthbrain_reader_study"] = {"study": study, "store": store}

    def reader_or_refuse():
        return store.reader_for(request.cookies.get(COOKIE))

    def progress(reader, token: str) -> dict:
        """The reader's state; the case it returns is marked served (the server's time on it starts)."""
        position = reader.next_position
        case = None
        if position is not None:
            case = {"id": reader.case_order[position], "position": position + 1, "views": sizes}
            store.mark_served(token, case["id"])
        return {
            "reader": reader.name,
            "answered": reader.answered,
            "total": len(reader.case_order),
            "done": position is None,
            "closed": store.is_closed(),
            "case": case,
        }

    def json_body() -> dict:
        if not request.is_json:
            raise AnswerRefused("expected a JSON body (Content-Type: application/json)", 415)
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise AnswerRefused("malformed request: expected a JSON object", 400)
        return body

    @app.before_request
    def _guard():
        request.host  # noqa: B018 - validates the Host header against TRUSTED_HOSTS (400 otherwise)
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("Origin")
            if origin and urlsplit(origin).netloc != request.host:
                raise AnswerRefused("requests from another web site are refused", 403)

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        if request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(AnswerRefused)
    def _refused(err: AnswerRefused):
        return jsonify(error=str(err)), err.status

    @app.errorhandler(HTTPException)
    def _http(err: HTTPException):
        return jsonify(error=f"{err.code} {err.name}: {err.description}"), err.code

    @app.get("/")
    def index():
        return app.send_static_file("index.html")

    @app.get("/favicon.ico")
    def favicon():
        return Response(status=204)

    @app.get("/api/study")
    def about():
        try:
            reader = store.reader_for(request.cookies.get(COOKIE)).name
        except AnswerRefused:
            reader = None
        return jsonify(title=study.title, n_cases=len(study.cases), closed=store.is_closed(), views=list(VIEWS), reader=reader)

    @app.post("/api/session")
    def session():
        body = json_body()
        try:
            token, reader = store.start_session(body.get("name"))
        except ValueError as err:
            raise AnswerRefused(str(err), 400) from None
        response = jsonify(progress(reader, token))
        response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
        return response

    @app.post("/api/logout")
    def logout():
        store.end_session(request.cookies.get(COOKIE))
        response = jsonify(ok=True)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict")
        return response

    @app.get("/api/progress")
    def current():
        return jsonify(progress(reader_or_refuse(), request.cookies.get(COOKIE)))

    @app.get("/api/case/<case_id>/<view>/<int:index>")
    def slice_png(case_id: str, view: str, index: int):
        reader_or_refuse()
        if case_id not in study.cases:
            raise AnswerRefused(f"unknown case id {case_id[:40]!r}", 404)
        if view not in VIEWS:
            raise AnswerRefused(f"unknown view {view[:20]!r}; allowed: {', '.join(VIEWS)}", 404)
        if not 0 <= index < sizes[view]["slices"]:
            raise AnswerRefused(f"slice {index} of {view}; allowed: 0-{sizes[view]['slices'] - 1}", 404)
        response = Response(png_bytes(orient_slice(volumes.get(case_id), view, index)), mimetype="image/png")
        response.headers["Cache-Control"] = "private, max-age=3600"
        return response

    @app.post("/api/answer")
    def answer():
        body = json_body()
        unknown = sorted(set(body) - {"case_id", "label", "confidence", "seconds", "reader"})
        if unknown:
            raise AnswerRefused(f"malformed request: unknown field(s) {[str(u)[:20] for u in unknown[:5]]}", 400)
        token = request.cookies.get(COOKIE)
        if "reader" in body:  # the reader the page was showing: another tab may have logged in someone else since
            session_reader = store.reader_for(token).name
            if body["reader"] != session_reader:
                raise AnswerRefused(
                    f"this page is reading as {str(body['reader'])[:64]!r}, but this browser is now logged in as "
                    f"{session_reader!r} (in another tab or window); the answer was not saved",
                    409,
                )
        reader = store.record_answer(token, body.get("case_id"), body.get("label"), body.get("confidence"), body.get("seconds"))
        return jsonify(progress(reader, token)), 201

    return app


def serve(folder: str | Path, *, host: str = "127.0.0.1", port: int = 8765, threads: int = 4) -> None:
    """Serve a study until interrupted (Ctrl-C; waitress with ``threads`` worker threads). Bound to
    localhost unless ``host`` says otherwise; then any Host header is accepted and a warning is
    logged. ValueError for a bad port or thread count or an incomplete study; OSError when the
    port is taken."""
    from waitress.server import create_server

    if not (isinstance(port, int) and 0 <= port <= 65535):
        raise ValueError(f"port={port!r}; allowed: 0-65535 (0: any free port)")
    if not (isinstance(threads, int) and 1 <= threads <= 64):
        raise ValueError(f"threads={threads!r}; allowed: 1-64")
    local = host in LOCAL_HOSTS
    app = create_app(folder, trusted_hosts=LOCAL_HOSTS if local else None)
    if not local:
        log.warning("serving on %s: readers on other machines can reach the study; use only on a trusted network", host)
    server = create_server(app, host=host, port=port, threads=threads, ident="synthbrain", clear_untrusted_proxy_headers=True)
    study = app.extensions["synthbrain_reader_study"]["study"]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"reader study {study.title!r} ({len(study.cases)} cases): open http://{shown}:{server.effective_port}/  (Ctrl-C stops)", flush=True
    )
    try:
        server.run()
    except KeyboardInterrupt:
        print("stopped; every acknowledged answer is saved")
    finally:
        server.close()
