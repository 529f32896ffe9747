"""`medtune dashboard results/<name>` (or `results/`, an index of its sweeps) and `medtune report
results/<name>`.

One page shows a sweep as a whole: the trials table (status, ASHA rung, hyperparameters,
best and last metric, node), learning curves with ASHA's rungs, parallel coordinates,
Optuna's importance, the best trial with its test metrics and sample answers, confirmation
runs and errored trials. The dashboard serves it on 127.0.0.1 and the page redraws itself
when the results folder changes; the report writes the same page as one self-contained HTML
file (no script or style from the network, a CSP that forbids fetching anything) plus the
charts as PNG files.

Every string from data, models or errors goes through Jinja2's autoescaping; charts are
matplotlib SVG, whose text is XML-escaped.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

from jinja2 import Environment, PackageLoader, select_autoescape
from rich.console import Console

from tune.charts import CHARTS, importance, to_png, to_svg
from tune.errors import USER_ERRORS, UserError
from tune.sweep_list import find_sweeps, sweep_rows
from tune.sweep_state import SweepState, age, read_sweep, state_version

__all__ = ["LOOPBACK", "render_index", "render_page", "serve_dashboard", "write_report"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")
POLL_MS = 2000
INDEX_REFRESH_S = 10  # the index of sweeps reloads itself; each sweep's page polls

_env = Environment(
    loader=PackageLoader("tune", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=False,
)


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if value != value:
        return "NaN"
    return f"{value:.3e}" if value and (abs(value) < 1e-2 or abs(value) >= 1e5) else f"{value:.4f}"


_env.globals["fmt"] = _fmt


def render_page(
    state: SweepState,
    *,
    live: bool,
    nonce: str,
    fragment: bool = False,
    charts=None,
    index: bool = False,
) -> str:
    """The page (or, with `fragment`, only what the live page swaps in on refresh); `index`:
    it is served under an index of sweeps, and links back to it."""
    scores = importance(state)
    context = {
        "s": state,
        "live": live,
        "index": index,
        "nonce": nonce,
        "version": state.updated,
        "poll_ms": POLL_MS,
        "age": age(state.updated),
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "params": list(state.space) or sorted({k for t in state.trials for k in t.params}),
        "charts": charts if charts is not None else draw_charts(state),
        "importance": scores,
        "importance_trials": sum(
            t.status in ("completed", "stopped") and bool(t.history) for t in state.trials
        ),
    }
    name = "sweep_content.html.j2" if fragment else "sweep.html.j2"
    return _env.get_template(name).render(context)


def write_report(folder: Path, out: Path | None, console: Console) -> list[Path]:
    """Write the static report and its PNG charts; return the paths written.

    Each file is written to a temporary name and renamed, so an interrupted report never
    leaves a half-written file where an earlier one was.
    """
    state = read_sweep(folder)
    out = (out or Path(state.folder) / "report.html").resolve()
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder; give a file name, e.g. {out / 'report.html'}")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: folder {out.parent} does not exist; create it first")
    written = []
    html = render_page(state, live=False, nonce=secrets.token_urlsafe(16))
    written.append(_atomic_write(out, html.encode()))
    for name, draw in CHARTS.items():
        png = out.with_name(f"{out.stem}-{name}.png")
        with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".png", delete=False) as tmp:
            to_png(draw(state), Path(tmp.name))
        written.append(_replace(tmp.name, png))
    for path in written:
        console.print(f"wrote {path}", markup=False)
    return written


def serve_dashboard(
    folder: Path, host: str, port: int, console: Console, shown: str | None = None
) -> None:
    """Serve the dashboard until interrupted (Ctrl-C): of one sweep, or, given a folder of
    sweeps (results/), an index of them with each sweep's page under sweep/<name>/. `shown`:
    what the index calls the folder (the URI a copy follows), if not its path."""
    folder = folder.resolve()
    several = not (folder / "medtune.yaml").is_file() and folder.is_dir() and find_sweeps(folder)
    if not several:
        read_sweep(folder)  # a wrong folder fails here, with one line, before binding a port
    if host not in LOOPBACK:
        console.print(
            f"[bold red]WARNING[/]: the dashboard on {host} is open to anyone who can reach "
            "this machine: it has no authentication. Put it behind an SSH tunnel or an "
            "authenticating proxy (see docs/security.md).",
            soft_wrap=True,
        )
    server = ThreadingHTTPServer((host, port), _handler(folder, bool(several), shown))
    url = f"http://{host}:{server.server_address[1]}/"
    what = f"the sweeps in {folder}" if several else str(folder)
    console.print(f"medtune dashboard for {what}: {url}  (Ctrl-C stops it)", markup=False)
    try:
        server.serve_forever(poll_interval=0.25)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def draw_charts(state: SweepState) -> dict[str, str]:
    """{chart name: inline SVG} for every chart of the page."""
    return {name: to_svg(draw(state)) for name, draw in CHARTS.items()}


class _Pages:
    """The rendered page for the folder's current version: charts are drawn once per change."""

    def __init__(self, folder: Path):
        self.folder, self.lock = folder, threading.Lock()
        self.version, self.state, self.charts = None, None, None

    def current(self) -> tuple[SweepState, dict]:
        with self.lock:
            version = state_version(self.folder)
            if version != self.version or self.state is None:
                state = read_sweep(self.folder)
                self.charts = draw_charts(state)
                self.state, self.version = state, version
            return self.state, self.charts


def render_index(root: Path, shown: str | None = None) -> str:
    """The page listing the sweeps in `root` (called `shown` if given), newest first, each
    linking to its own page."""
    return _env.get_template("index.html.j2").render(
        root=shown or str(root), rows=sweep_rows(root), refresh_s=INDEX_REFRESH_S, age=age
    )


def _handler(
    root: Path, several: bool = False, shown: str | None = None
) -> type[BaseHTTPRequestHandler]:
    """Requests for one sweep's page (`several` false: `root` is the sweep), or for the index
    of the sweeps in `root` at / and each sweep's page under /sweep/<name>/."""
    pages: dict[Path, _Pages] = {}

    def sweep_of(path: str) -> tuple[Path | None, str]:
        """The sweep folder a path is for and the rest of the path; None: no such sweep."""
        if not several:
            return root, path
        name, _, rest = path.removeprefix("/sweep/").partition("/")
        # Only the name of a sweep folder directly inside root: never "..", nor a path.
        folders = {folder.name: folder for folder in find_sweeps(root)}
        if unquote(name) not in folders:
            return None, path
        return folders[unquote(name)], "/" + rest

    class Handler(BaseHTTPRequestHandler):
        server_version = "medtune-dashboard"

        def do_GET(self):  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            try:
                if several and path == "/":
                    return self._send(render_index(root, shown), "html")
                if several and not path.startswith("/sweep/"):
                    return self._send("not found", "text", HTTPStatus.NOT_FOUND)
                folder, path = sweep_of(path)
                if folder is None:
                    return self._send("no such sweep", "text", HTTPStatus.NOT_FOUND)
                if several and path == "/" and not self.path.split("?", 1)[0].endswith("/"):
                    return self._redirect(self.path.split("?", 1)[0] + "/")
                if path == "/api/version":
                    return self._send(json.dumps({"version": state_version(folder)}), "json")
                state, charts = pages.setdefault(folder, _Pages(folder)).current()
                if path == "/api/state":
                    return self._send(json.dumps(state.to_json()), "json")
                if path in ("/", "/fragment"):
                    nonce = secrets.token_urlsafe(16)
                    html = render_page(
                        state,
                        live=True,
                        nonce=nonce,
                        fragment=path == "/fragment",
                        charts=charts,
                        index=several,
                    )
                    return self._send(html, "html", nonce=nonce)
            except USER_ERRORS as e:
                # The folder disappeared or became unreadable while being served.
                return self._send(str(e), "text", HTTPStatus.SERVICE_UNAVAILABLE)
            self._send("not found", "text", HTTPStatus.NOT_FOUND)

        def _redirect(self, location: str):
            self.send_response(HTTPStatus.MOVED_PERMANENTLY)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _send(self, body: str, kind: str, status=HTTPStatus.OK, nonce: str | None = None):
            data = body.encode()
            types = {"json": "application/json", "html": "text/html", "text": "text/plain"}
            self.send_response(status)
            self.send_header("Content-Type", f"{types[kind]}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            csp = "default-src 'none'; connect-src 'self'; style-src 'unsafe-inline'; img-src data:"
            if nonce:
                csp += f"; script-src 'nonce-{nonce}'"
            self.send_header("Content-Security-Policy", csp)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
            pass  # the page polls every two seconds; one line each would bury the console

    return Handler


def _atomic_write(path: Path, data: bytes) -> Path:
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        tmp.write(data)
    return _replace(tmp.name, path)


def _replace(tmp: str, path: Path) -> Path:
    # Temporary files are created 0600; a report is for sharing, so use the usual mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
    return path
