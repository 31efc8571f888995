"""`bclib app`: its one-line errors, and in a real browser the Voila page of notebook 08, offline, with an upload,
a bad file and the threshold."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bclib.run import cli
from bclib.run.commands import app
from test_browser import CHROMEDRIVER, CHROMIUM, EXPOSE_FILE_INPUT, _free_port, _wait_for, start_chromium
from test_predict import save_tiny_model, write_tiny_idc

RUN_ID = "run-app-page"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
WIDGET_MANAGER = "/voila/labextensions/@jupyter-widgets/jupyterlab-manager/"


@pytest.fixture()
def no_voila_start(monkeypatch):
    """Voila counts as installed, and starting it fails the test (every case here stops before)."""
    monkeypatch.setattr(app, "voila_installed", lambda: True)
    monkeypatch.setattr(app, "serve", lambda *args: pytest.fail("Voila was started"))


def _error_of(arguments: list[str], capsys) -> str:
    assert cli.main(["app", "--no-browser", *arguments]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_no_trained_model_says_which_command_trains_one(tmp_path, monkeypatch, capsys, no_voila_start):
    monkeypatch.setenv("BCLIB_REPORTS", str(tmp_path / "reports"))
    assert _error_of([], capsys) == (
        f"error: no trained model (model.keras with model_card.json) found under {tmp_path / 'reports'}: "
        "train one with `make run` (or `bclib run`), or pass --model PATH/model.keras")
    assert "no run 'run-x' under" in _error_of(["--run", "run-x"], capsys)
    assert "does not exist" in _error_of(["--model", str(tmp_path / "missing.keras")], capsys)


def test_busy_port_and_missing_voila_are_one_line_errors(tmp_path, monkeypatch, capsys, no_voila_start):
    model = save_tiny_model(tmp_path / "model")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert _error_of(["--model", str(model), "--port", str(port)], capsys) == (
            f"error: port {port} is in use (is another `bclib app` running?): choose another with --port")
    monkeypatch.setattr(app, "voila_installed", lambda: False)
    assert _error_of(["--model", str(model)], capsys) == f"error: {app.VOILA_HINT}"


def test_options_reach_the_notebook_as_environment_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("BCLIB_APP_MODEL", "/stale/model.keras")  # from an outer shell: never passed on
    args = cli.build_parser().parse_args(["app", "--run", "run-1", "--data", str(tmp_path)])
    environment = app.voila_environment(args, tmp_path / "setup")
    assert environment["BCLIB_APP_RUN_ID"] == "run-1" and environment["BCLIB_APP_DATA_DIR"] == str(tmp_path)
    assert "BCLIB_APP_MODEL" not in environment
    assert environment["JUPYTER_PATH"].split(os.pathsep)[0] == str(tmp_path / "setup")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture()
def app_server(tmp_path):
    """`bclib app --run RUN_ID` on a free port, over a tiny trained model and a tiny IDC tree for its samples."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("chromium/chromedriver not installed (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium")
    pytest.importorskip("voila")
    reports = tmp_path / "reports"
    save_tiny_model(reports / RUN_ID / "02_baseline_cnn")
    data = write_tiny_idc(tmp_path / "data")
    port = _free_port()
    env = dict(os.environ, BCLIB_REPORTS=str(reports), JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter_config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter_runtime"), TF_CPP_MIN_LOG_LEVEL="2")
    log_path = tmp_path / "bclib_app.log"
    log = log_path.open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "bclib", "app", "--run", RUN_ID, "--data", str(data), "--port", str(port),
         "--no-browser"], env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        def listening() -> bool:
            if server.poll() is not None:
                raise RuntimeError(log_path.read_text()[-2000:])
            return _port_open(port)

        try:
            _wait_for(listening, 90, "`bclib app` to listen", reraise=RuntimeError)
        except RuntimeError as error:
            pytest.fail(f"`bclib app` exited early: {error}")
        yield {"url": f"http://127.0.0.1:{port}/", "log": log_path}
    finally:
        server.terminate()  # bclib app stops Voila, which shuts its kernel down
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture()
def offline_browser(tmp_path):
    """Headless Chromium that resolves no host but localhost, and logs every request it makes."""
    driver = start_chromium(tmp_path, "--window-size=1300,1000",
                            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
                            log_requests=True)
    try:
        yield driver
    finally:
        driver.quit()


def _requested_urls(driver) -> list[str]:
    """The URLs of every request and websocket since the last call (Chrome's performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
        elif message["method"] == "Network.webSocketCreated":
            urls.append(message["params"]["url"])
    return urls


def _off_host(urls: list[str]) -> list[str]:
    """The network requests to another machine (data:, blob: and the browser's own chrome:// pages are none)."""
    return [url for url in urls if urlsplit(url).scheme in ("http", "https", "ws", "wss")
            and urlsplit(url).hostname not in LOCAL_HOSTS]


def _result_for(driver, name: str, css: str = ".bclib-result"):
    from selenium.webdriver.common.by import By

    return next((element for element in driver.find_elements(By.CSS_SELECTOR, css) if name in element.text), None)


def _upload(driver, button, path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.execute_script(EXPOSE_FILE_INPUT)
    driver.execute_script("arguments[0].scrollIntoView(); arguments[0].click();", button)
    file_input = driver.find_element(By.ID, "bclib-test-file-input")
    driver.execute_script("arguments[0].value = '';", file_input)  # this file only, not the last one too
    file_input.send_keys(str(path))


def _set_threshold(driver, value: float) -> None:
    """Type ``value`` into the threshold slider's readout, as a user can."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    slider = next(element for element in driver.find_elements(By.CSS_SELECTOR, ".widget-slider")
                  if "Threshold" in element.text)
    readout = slider.find_element(By.CSS_SELECTOR, ".widget-readout")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", readout)
    readout.click()
    readout.send_keys(Keys.CONTROL, "a")
    readout.send_keys(f"{value:.2f}", Keys.ENTER)


def _screenshot(driver, button, path: Path) -> Path:
    """The app (from its disclaimer down) in a PNG at ``path``."""
    driver.execute_script("arguments[0].closest('.widget-vbox').scrollIntoView({block: 'start'});", button)
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 0
    return path


def _decision(driver, name: str) -> str:
    from selenium.webdriver.common.by import By

    result = _result_for(driver, name)
    return result.find_element(By.CSS_SELECTOR, ".bclib-decision").text if result is not None else ""


@pytest.mark.browser
@pytest.mark.slow
def test_app_page_offline_upload_bad_file_and_threshold(app_server, offline_browser, real_idc, tmp_path):
    from selenium.webdriver.common.by import By

    browser = offline_browser
    patch = sorted((real_idc / "IDC_regular_ps50_idx5").glob("*/1/*.png"))[0]
    bad = tmp_path / "not_an_image.png"
    bad.write_text("hello, I am text, not a PNG")

    started = time.monotonic()
    browser.get(app_server["url"])
    try:
        button = _wait_for(lambda: browser.find_element(By.CSS_SELECTOR, ".widget-upload"), 180, "the upload button")
    except AssertionError as error:  # say what the page and the server show instead
        page = browser.find_element(By.TAG_NAME, "body").text[-1500:]
        pytest.fail(f"{error}\npage:\n{page}\nbclib app:\n{app_server['log'].read_text()[-1500:]}")
    page_load = time.monotonic() - started
    assert "import bclib" not in browser.page_source.split("</head>")[-1]  # no code cell on the page
    assert "not for diagnosis" in browser.find_element(By.TAG_NAME, "body").text

    started = time.monotonic()
    _upload(browser, button, patch)
    result = _wait_for(lambda: _result_for(browser, patch.name), 120, "the uploaded patch's result", interval=0.1)
    upload_to_result = time.monotonic() - started
    probabilities = [float(element.get_attribute("data-probability"))
                     for element in result.find_elements(By.CSS_SELECTOR, ".bclib-probability")]
    assert len(probabilities) == 2 and abs(sum(probabilities) - 1.0) < 1e-3
    heatmap = result.find_element(By.CSS_SELECTOR, "img.bclib-heatmap")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth;", heatmap) > 0

    p_idc = float(result.find_element(By.CSS_SELECTOR, '.bclib-probability[data-class="IDC"]')
                  .get_attribute("data-probability"))
    assert 0.02 < p_idc < 0.98, f"P(IDC) = {p_idc:.3f} leaves no threshold on both sides of it"
    below, above = max(0.0, int(p_idc * 100) / 100 - 0.01), min(1.0, int(p_idc * 100) / 100 + 0.02)
    _set_threshold(browser, below)
    assert _wait_for(lambda: f"{below:.2f}" in _decision(browser, patch.name) and "non-IDC" not in
                     _decision(browser, patch.name), 30, f"the decision at threshold {below:.2f} (IDC)")
    _set_threshold(browser, above)
    assert _wait_for(lambda: f"{above:.2f}" in _decision(browser, patch.name) and "non-IDC" in
                     _decision(browser, patch.name), 30, f"the decision at threshold {above:.2f} (non-IDC)")

    screenshot = _screenshot(browser, button, tmp_path / "app_page.png")  # the patch, its Grad-CAM and decision

    _upload(browser, button, bad)
    error = _wait_for(lambda: _result_for(browser, bad.name, ".bclib-error"), 60, "the bad file's message")
    assert "could not be predicted" in error.text
    bad_screenshot = _screenshot(browser, button, tmp_path / "app_page_bad_file.png")

    urls = _requested_urls(browser)
    assert any(WIDGET_MANAGER in url for url in urls), "the widget manager was not loaded from this server"
    assert not _off_host(urls), f"the page asked for something off this machine: {_off_host(urls)}"

    started = time.monotonic()  # a second visit gets the kernel Voila pre-heated meanwhile (or waits for it)
    browser.get(app_server["url"])
    _wait_for(lambda: browser.find_element(By.CSS_SELECTOR, ".widget-upload"), 180, "the upload button, again")
    second_visit = time.monotonic() - started
    assert not _off_host(_requested_urls(browser))
    print(f"\napp page screenshots: {screenshot}, {bad_screenshot}")
    print(f"page load (open -> upload button drawn): first visit {page_load:.1f} s, second visit {second_visit:.1f} s; "
          f"upload -> result with Grad-CAM drawn: {upload_to_result * 1000:.0f} ms "
          f"(P(IDC) {p_idc:.3f}; {len(urls)} requests, none off 127.0.0.1)")
