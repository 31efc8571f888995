"""A run's data with no IDC found: BreastMNIST from a local HTTP server, or the synthetic demo with the reason."""
from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path

import pytest

from bclib.data import download as dl
from bclib.data import synthetic
from bclib.data.datasets import scan
from bclib.run import runner
from test_breastmnist import write_npz
from test_download import _closed_port, _Server, _use_files


@pytest.fixture()
def server():
    instance = _Server()
    yield instance
    instance.close()


@pytest.fixture()
def project(tmp_path, monkeypatch) -> Path:
    """An empty project (no IDC, no BreastMNIST), online unless a test says otherwise, and a tiny demo."""
    root = tmp_path / "project"
    (root / "data").mkdir(parents=True)
    monkeypatch.setenv("BCLIB_ROOT", str(root))
    monkeypatch.setenv("BCLIB_CACHE", str(tmp_path / "cache"))
    for name in ("BCLIB_DATA", "BCLIB_DATA_IDC", "BCLIB_DATA_BREASTMNIST", dl.OFFLINE_ENVIRONMENT):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(synthetic, "DEMO_OPTIONS", {"n_patients": 2, "patches_per_patient": 4, "seed": 0})
    return root


def _serve_breastmnist(server: _Server, monkeypatch, tmp_path: Path, md5: str | None = None) -> bytes:
    body = write_npz(tmp_path / "served" / "breastmnist.npz").read_bytes()
    server.files["/breastmnist.npz"] = body
    _use_files(monkeypatch, "breastmnist", dl.RemoteFile(server.url("/breastmnist.npz?download=1"), "breastmnist.npz",
                                                          md5=md5 or hashlib.md5(body).hexdigest()))
    return body


def _choose(**options) -> tuple[runner.DataChoice, list[str]]:
    logged: list[str] = []
    choice = runner.choose_data("idc", None, "quick", log=logged.append, progress=False, **options)
    return choice, logged


def test_online_breastmnist_is_fetched_checked_and_chosen(project, server, monkeypatch, tmp_path):
    body = _serve_breastmnist(server, monkeypatch, tmp_path)

    choice, logged = _choose()

    destination = project / "data" / "breastmnist"
    assert (choice.dataset, choice.location, choice.synthetic) == ("breastmnist", destination, False)
    assert (destination / "breastmnist.npz").read_bytes() == body
    assert dl.read_marker(destination)["complete"] is True
    assert len(scan("breastmnist", choice.location)) == 13
    text = "\n".join(logged)
    assert "`bclib data download idc`" in text and "1.6 GB" in text  # the one command that fetches IDC
    source = dl.SOURCES["breastmnist"]
    assert source.title in text and source.licence in text and str(destination) in text and "MD5" in text
    assert "BreastMNIST downloaded" in choice.note

    requests = len(server.requests)
    again, logged = _choose()  # the next run finds it: no request
    assert again.location == destination and again.dataset == "breastmnist"
    assert len(server.requests) == requests
    assert any("uses BreastMNIST at" in line for line in logged)


def test_server_down_falls_back_to_the_demo_with_the_reason(project, monkeypatch):
    url = f"http://127.0.0.1:{_closed_port()}/breastmnist.npz"
    _use_files(monkeypatch, "breastmnist", dl.RemoteFile(url, "breastmnist.npz", md5="0" * 32))

    started = time.perf_counter()
    choice, logged = _choose()

    assert time.perf_counter() - started < 10  # the demo of two patients included
    assert (choice.dataset, choice.synthetic) == ("idc", True)
    assert choice.location == synthetic.ensure_demo_dataset()
    reasons = [line for line in logged if line.startswith("synthetic demo instead of BreastMNIST: ")]
    assert len(reasons) == 1 and "cannot reach 127.0.0.1" in reasons[0] and "\n" not in reasons[0]
    assert not (project / "data" / "breastmnist").exists()


def test_bad_checksum_falls_back_to_the_demo_and_removes_the_file(project, server, monkeypatch, tmp_path):
    _serve_breastmnist(server, monkeypatch, tmp_path, md5="0" * 32)

    choice, logged = _choose()

    assert choice.synthetic and choice.dataset == "idc"
    reason = next(line for line in logged if line.startswith("synthetic demo instead of BreastMNIST: "))
    assert "MD5" in reason and "deleted" in reason and "\n" not in reason
    assert len(server.requests) == 1
    leftovers = [path for path in (project / "data").rglob("*") if path.suffix in (".npz", ".part")]
    assert leftovers == [] and not (project / "data" / "breastmnist").exists()


@pytest.mark.parametrize("how", ["environment", "argument"])
def test_offline_touches_no_network(project, server, monkeypatch, tmp_path, how):
    _serve_breastmnist(server, monkeypatch, tmp_path)
    if how == "environment":
        monkeypatch.setenv(dl.OFFLINE_ENVIRONMENT, "1")

    choice, logged = _choose(**({"offline": True} if how == "argument" else {}))

    assert choice.synthetic and server.requests == []
    assert f"synthetic demo instead of BreastMNIST: offline (--offline or {dl.OFFLINE_ENVIRONMENT}=1)" in logged


def test_an_existing_breastmnist_copy_is_used_offline(project, monkeypatch):
    monkeypatch.setenv(dl.OFFLINE_ENVIRONMENT, "1")
    copy = write_npz(project / "data" / "breastmnist" / "breastmnist.npz").parent

    choice, _ = _choose()

    assert (choice.dataset, choice.location, choice.synthetic) == ("breastmnist", copy, False)


def test_idc_found_explicit_data_smoke_and_other_datasets_are_not_replaced(project, server, monkeypatch, tmp_path):
    _serve_breastmnist(server, monkeypatch, tmp_path)
    assert runner.choose_data("idc", None, "smoke", log=lambda _: None).synthetic  # smoke: always the demo
    idc = project / "data" / "idc"
    idc.mkdir()
    assert runner.choose_data("idc", None, "quick", log=lambda _: None) == runner.DataChoice("idc", idc, False)
    assert runner.choose_data("idc", idc, "full", log=lambda _: None).location == idc
    with pytest.raises(ValueError, match="breakhis"):
        runner.choose_data("breakhis", None, "quick", log=lambda _: None)
    assert server.requests == []


@pytest.mark.parametrize(("value", "offline"), [("1", True), ("yes", True), ("TRUE", True), ("0", False),
                                                ("", False), ("no", False), (None, False)])
def test_offline_requested(monkeypatch, value, offline):
    if value is None:
        monkeypatch.delenv(dl.OFFLINE_ENVIRONMENT, raising=False)
    else:
        monkeypatch.setenv(dl.OFFLINE_ENVIRONMENT, value)
    assert dl.offline_requested() is offline


def test_probe_answers_within_its_timeout(server, monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert dl.unreachable_reason(server.url("/anything")) is None
    assert "cannot reach 127.0.0.1" in dl.unreachable_reason(f"http://127.0.0.1:{_closed_port()}/x")

    def stalled(*args, **kwargs):
        time.sleep(3)
        raise OSError("too late")

    monkeypatch.setattr(socket, "create_connection", stalled)
    started = time.perf_counter()
    reason = dl.unreachable_reason("https://zenodo.org/x", timeout=0.2)
    assert time.perf_counter() - started < 1.5
    assert reason == "no answer from zenodo.org:443 within 0.2 s"
