"""``bclib app``: notebook 08 served as a standalone page with Voila on localhost, no code shown.

Voila cannot pass papermill parameters, so the run, model and data chosen here reach notebook 08
through environment variables that its cell after ``parameters`` reads (:data:`CHOICE_VARIABLES`).
The page uses a small Voila template (``lab`` without what it would fetch from the internet), so
everything it loads, the widget manager included, comes from this server. Voila keeps one kernel
pre-heated (the notebook already executed, model loaded and compiled) for the next visit.
"""
from __future__ import annotations

import argparse
import errno
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bclib import DISCLAIMER, paths
from bclib.run.cli import CommandError
from bclib.run.lock import sigterm_as_interrupt

NOTEBOOK_NAME = "08_predict_widget.ipynb"
DEFAULT_PORT = 8866
HOST = "127.0.0.1"
TEMPLATE_NAME = "bclib"
#: Largest websocket message (one upload travels as one message); Tornado's default is 10 MiB.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
#: Option -> the environment variable notebook 08 reads after its parameters cell.
CHOICE_VARIABLES = {"run": "BCLIB_APP_RUN_ID", "model": "BCLIB_APP_MODEL", "data": "BCLIB_APP_DATA_DIR"}
TRAIN_HINT = "train one with `make run` (or `bclib run`), or pass --model PATH/model.keras"
VOILA_HINT = 'Voila is not installed: pip install "voila>=0.5" (it is a dependency of bclib: `make venv` installs it)'

# Voila's lab page without requests to the internet: no <link> to a CDN in its stylesheet block (Font
# Awesome, which the page's own bundles already carry; offline, a render-blocking stylesheet would stall
# the page), no Mermaid loader (nothing here draws diagrams), and markdown images from the web (the
# Colab and Binder badges) shown as their alt text.
INDEX_TEMPLATE = """{%- extends 'voila/templates/lab/index.html.j2' -%}
{%- block notebook_css -%}
{%- for line in super().splitlines() if not ('<link' in line and '://' in line) %}
{{ line }}
{%- endfor %}
{%- endblock notebook_css -%}
{%- block html_head_js_mermaidjs -%}
{%- endblock html_head_js_mermaidjs -%}
{% block markdowncell scoped %}
{{ super() | replace('<img src="http', '<img data-web-src="http') }}
{% endblock markdowncell %}
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "app",
        help="serve the prediction app (notebook 08) as a standalone page on localhost",
        description=(
            "Serve notebook 08 with Voila at http://127.0.0.1:PORT/: upload a patch or pick a sample, see the "
            "probabilities, the decision at the threshold and the Grad-CAM heatmap; no code is shown. "
            f"Uploads are decoded in memory and never written to disk. Stop with Ctrl-C. {DISCLAIMER}"
        ),
    )
    parser.add_argument("--run", metavar="RUN_ID", default=None,
                        help="offer the models of reports/RUN_ID (default: the most recent run with a model)")
    parser.add_argument("--model", metavar="PATH", default=None,
                        help="offer only this model.keras (its model_card.json beside it)")
    parser.add_argument("--data", metavar="PATH", default=None,
                        help="dataset folder for the sample images (default: the model card's, then $BCLIB_DATA)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default: {DEFAULT_PORT})")
    parser.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    parser.set_defaults(func=run)


def notebook_path() -> Path:
    """Notebook 08 of this checkout."""
    path = paths.project_root() / "notebooks" / NOTEBOOK_NAME
    if not path.is_file():
        raise CommandError(f"{path} not found: `bclib app` serves notebook 08 of a clone of the repository")
    return path


def check_models(run_id: str | None, model_path: str | None) -> str:
    """A one-line description of what the page will offer; :class:`CommandError` when there is no model."""
    from bclib.app.catalog import find_models
    from bclib.evaluation.modelcard import ModelLoadError

    if run_id and model_path:
        raise CommandError("give --run or --model, not both")
    if run_id and not (paths.reports_dir() / run_id).is_dir():
        raise CommandError(f"no run {run_id!r} under {paths.reports_dir()}: {TRAIN_HINT}")
    try:
        models = find_models(run_id=run_id, model_path=model_path)
    except ModelLoadError as error:
        raise CommandError(f"{error}: {TRAIN_HINT}") from None
    if not models:
        where = paths.reports_dir() / run_id if run_id else paths.reports_dir()
        raise CommandError(f"no trained model (model.keras with model_card.json) found under {where}: {TRAIN_HINT}")
    return f"{len(models)} model(s) from {models[0].path.parent.parent}"


def check_port_free(port: int) -> None:
    """:class:`CommandError` when ``port`` cannot be bound on :data:`HOST`."""
    if not 0 < port < 65536:
        raise CommandError(f"--port {port} is not a port number (1-65535)")
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError as error:
            reason = ("is in use (is another `bclib app` running?)" if error.errno == errno.EADDRINUSE
                      else f"cannot be used ({error.strerror})")
            raise CommandError(f"port {port} {reason}: choose another with --port") from None


def write_voila_setup(folder: Path, port: int, open_browser: bool) -> None:
    """``folder/voila.json`` (read from Voila's working directory) and the page template under ``folder/voila``."""
    template = folder / "voila" / "templates" / TEMPLATE_NAME
    template.mkdir(parents=True)
    (template / "conf.json").write_text(json.dumps({"base_template": "lab"}))
    (template / "index.html.j2").write_text(INDEX_TEMPLATE)
    config = {
        "Voila": {"ip": HOST, "port": port, "port_retries": 0, "open_browser": open_browser,
                  "tornado_settings": {"websocket_max_message_size": MAX_MESSAGE_BYTES}},
        "VoilaConfiguration": {"template": TEMPLATE_NAME, "strip_sources": True, "show_tracebacks": True,
                               "preheat_kernel": True, "default_pool_size": 1},
    }
    (folder / "voila.json").write_text(json.dumps(config, indent=1))


def voila_environment(args: argparse.Namespace, setup_folder: Path) -> dict[str, str]:
    """This process's environment, the choices for notebook 08, and the template folder on JUPYTER_PATH."""
    environment = {key: value for key, value in os.environ.items() if key not in CHOICE_VARIABLES.values()}
    for option, variable in CHOICE_VARIABLES.items():
        value = getattr(args, option)
        if value:
            environment[variable] = str(Path(value).expanduser().resolve()) if option != "run" else value
    jupyter_path = [str(setup_folder), *filter(None, os.environ.get("JUPYTER_PATH", "").split(os.pathsep))]
    environment["JUPYTER_PATH"] = os.pathsep.join(jupyter_path)
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return environment


def voila_installed() -> bool:
    return importlib.util.find_spec("voila") is not None


def run(args: argparse.Namespace) -> int:
    """Check Voila, the model and the port, then serve the page until Ctrl-C (Voila's exit code)."""
    if not voila_installed():
        raise CommandError(VOILA_HINT)
    notebook = notebook_path()
    if args.data and not Path(args.data).expanduser().exists():
        raise CommandError(f"--data {args.data!r} does not exist")
    offered = check_models(args.run, args.model)
    check_port_free(args.port)
    with tempfile.TemporaryDirectory(prefix="bclib-app-") as folder:
        setup = Path(folder)
        write_voila_setup(setup, args.port, open_browser=not args.no_browser)
        print(f"bclib app: {offered}, at http://{HOST}:{args.port}/ (Ctrl-C stops it). {DISCLAIMER}", file=sys.stderr,
              flush=True)
        return serve(notebook, setup, voila_environment(args, setup))


def serve(notebook: Path, setup_folder: Path, environment: dict[str, str]) -> int:
    """Voila on ``notebook`` until it exits, Ctrl-C or SIGTERM; its exit code (130 when stopped)."""
    server = subprocess.Popen([sys.executable, "-m", "voila", str(notebook)], cwd=setup_folder, env=environment)
    try:
        with sigterm_as_interrupt():
            return server.wait()
    except KeyboardInterrupt:
        return stop(server)


def stop(server: subprocess.Popen, grace_seconds: float = 10.0) -> int:
    """Stop Voila (SIGTERM: it shuts its kernels down; SIGKILL after ``grace_seconds``); 130, as after Ctrl-C."""
    server.terminate()
    deadline = time.monotonic() + grace_seconds
    while server.poll() is None and time.monotonic() < deadline:
        try:
            server.wait(timeout=0.5)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            continue
    if server.poll() is None:
        server.kill()
    return 130
