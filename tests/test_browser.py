"""A real browser: JupyterLab + headless Chromium run notebook 08 and upload a patch through the app."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from test_predict import save_tiny_model, write_patch, write_tiny_idc

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "08_predict_widget.ipynb"
TOKEN = "bclib-browser-test"
RUN_ID = "run-browser"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(condition, timeout: float, what: str, interval: float = 0.5, reraise: type | tuple = ()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except reraise:
            raise
        except Exception:  # the page or server is not ready yet
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _parameterised_copy(destination: Path, data_dir: Path) -> Path:
    """Notebook 08 with this test's run and data appended to its parameters cell."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += f"\nrun_id = {RUN_ID!r}\ndata_dir = {str(data_dir)!r}\nn_samples = 2\n"
    path = destination / NOTEBOOK.name
    nbformat.write(notebook, path)
    return path


@pytest.fixture()
def lab(tmp_path):
    """A JupyterLab server on a free port over a tmp root holding notebook 08 and a run with a model."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("chromium/chromedriver not installed (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium")
    root = tmp_path / "lab"
    reports = root / "reports"
    save_tiny_model(reports / RUN_ID / "02_baseline_cnn")
    _parameterised_copy(root, write_tiny_idc(tmp_path / "data"))
    port = _free_port()
    env = dict(os.environ, BCLIB_REPORTS=str(reports), JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter_config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter_runtime"), JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "lab_settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab_workspaces"), TF_CPP_MIN_LOG_LEVEL="2")
    log = (tmp_path / "jupyter.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={TOKEN}", "--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={root}",
         "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            if server.poll() is not None:
                raise RuntimeError((tmp_path / "jupyter.log").read_text()[-2000:])
            return urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2).status == 200

        try:
            _wait_for(ready, 60, "the JupyterLab server", reraise=RuntimeError)
        except RuntimeError as error:
            pytest.fail(f"JupyterLab exited early: {error}")
        yield {"base": base, "root": root, "run": reports / RUN_ID, "log": tmp_path / "jupyter.log"}
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def start_chromium(tmp_path: Path, *extra_flags: str, log_requests: bool = False):
    """Headless Chromium with a profile under ``tmp_path``; ``log_requests`` keeps Chrome's performance log."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}", *extra_flags):
        options.add_argument(flag)
    if log_requests:
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(30)
    return driver


@pytest.fixture()
def browser(tmp_path):
    driver = start_chromium(tmp_path, "--window-size=1400,1100")
    try:
        yield driver
    finally:
        driver.quit()


# The FileUpload view never puts its <input type=file> in the page: it calls input.click() to open
# the system dialog. Redirect that click to place the input in the page, so WebDriver can type a path.
EXPOSE_FILE_INPUT = """
const original = HTMLInputElement.prototype.click;
HTMLInputElement.prototype.click = function () {
  if (this.type === 'file') {
    this.id = 'bclib-test-file-input';
    this.style.display = 'block';
    document.body.appendChild(this);
    return;
  }
  return original.call(this);
};
"""

# A headless browser never gives the page focus, so JupyterLab's shell may have no current widget:
# find the notebook among the main area's widgets and activate it (the run-all command needs it current).
KERNEL_IDLE = """
const app = window.jupyterapp;
const widget = app && Array.from(app.shell.widgets('main')).find(w => w.sessionContext);
const kernel = widget && widget.sessionContext.session && widget.sessionContext.session.kernel;
if (kernel && kernel.status === 'idle') { app.shell.activateById(widget.id); return true; }
return false;
"""


def _real_or_synthetic_patch(tmp_path: Path) -> Path:
    from conftest import shared_data_dir

    shared = shared_data_dir()
    if shared is not None:
        for patch in sorted((shared / "idc").glob("IDC_regular_ps50_idx5/*/1/*.png"))[:1]:
            return patch
    return write_patch(tmp_path / "synthetic_upload.png")


def test_upload_in_jupyterlab_shows_probability_and_heatmap(lab, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(f"{lab['base']}/lab/tree/08_predict_widget.ipynb?token={TOKEN}")
    _wait_for(lambda: browser.execute_script(KERNEL_IDLE), 90, "notebook 08 open with an idle kernel")
    browser.execute_script("return window.jupyterapp.commands.execute('notebook:run-all-cells');")
    button = _wait_for(lambda: browser.find_element(By.CSS_SELECTOR, ".widget-upload"), 90, "the upload button")
    assert _wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea .bclib-probability"), 30,
                     "the static view's probabilities")
    browser.execute_script(EXPOSE_FILE_INPUT)
    browser.execute_script("arguments[0].scrollIntoView(); arguments[0].click();", button)
    patch = _real_or_synthetic_patch(tmp_path)
    browser.find_element(By.ID, "bclib-test-file-input").send_keys(str(patch))

    uploaded = ".bclib-result"
    result = _wait_for(
        lambda: next((e for e in browser.find_elements(By.CSS_SELECTOR, uploaded) if patch.name in e.text), None),
        60, "the uploaded patch's result",
    )
    probabilities = [float(e.get_attribute("data-probability"))
                     for e in result.find_elements(By.CSS_SELECTOR, ".bclib-probability")]
    assert len(probabilities) == 2 and all(0.0 <= p <= 1.0 for p in probabilities)
    assert abs(sum(probabilities) - 1.0) < 1e-3
    assert "%" in result.text and "Decision" in result.text
    heatmaps = result.find_elements(By.CSS_SELECTOR, "img.bclib-heatmap")
    if heatmaps:  # an overlay with its colour scale, or a note that no region raised P(IDC)
        assert heatmaps[0].get_attribute("src").startswith("data:image/png;base64,")
        assert browser.execute_script("return arguments[0].naturalWidth;", heatmaps[0]) > 0
        assert result.find_elements(By.CSS_SELECTOR, ".bclib-gradcam-scale") and "Grad-CAM for P(IDC)" in result.text
    else:
        assert "no region of this image raised P(IDC)" in result.text
    assert "not for diagnosis" in browser.find_element(By.CSS_SELECTOR, ".widget-html").text or \
        "not for diagnosis" in browser.page_source
    screenshot = lab["run"] / "08_predict_widget" / "browser_upload.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", button)  # the app: controls and result
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 0
    shutil.copy(screenshot, tmp_path / screenshot.name)  # kept beside the test's tmp folder too
    # the upload widget was emptied in the kernel: its counter reads (0)
    assert _wait_for(lambda: "(0)" in browser.find_element(By.CSS_SELECTOR, ".widget-upload").text, 10,
                     "the upload value to be cleared")
