"""The dataset downloader against a local HTTP server on 127.0.0.1 (no internet needed)."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.machinery
import io
import json
import os
import socket
import sys
import tarfile
import threading
import types
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bclib.data import download as dl
from bclib.data.datasets import DatasetError, scan

PATIENTS = ("8863", "9036")


# ----------------------------------------------------------------------------- fixtures


def _png_bytes(seed: int, size: int = 8) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _idc_members(prefix: str = "") -> dict[str, bytes]:
    """A tiny IDC tree: two patients, both classes, three patches each."""
    members = {}
    for p_index, patient in enumerate(PATIENTS):
        for label in (0, 1):
            for k in range(3):
                name = f"{patient}_idx5_x{50 * k}_y{100 * label}_class{label}.png"
                members[f"{prefix}{patient}/{label}/{name}"] = _png_bytes(100 * p_index + 10 * label + k)
    return members


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


class _Server:
    """Files served from memory; Range honoured or ignored; optional truncated first response."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.honour_range = True
        self.truncate_next_at: int | None = None
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                range_header = self.headers.get("Range")
                server.requests.append({"path": path, "range": range_header})
                if path not in server.files:
                    self.send_error(404)
                    return
                body = server.files[path]
                start = 0
                if range_header and server.honour_range:
                    start = int(range_header.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                payload = body[start:]
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if server.truncate_next_at is not None:
                    cut, server.truncate_next_at = server.truncate_next_at, None
                    self.wfile.write(payload[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    instance = _Server()
    yield instance
    instance.close()


@pytest.fixture(autouse=True)
def _no_kaggle_credentials(tmp_path, monkeypatch):
    """Tests never see the developer's own Kaggle credentials or project data folder."""
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no_kaggle"))
    monkeypatch.setenv("BCLIB_ROOT", str(tmp_path / "project"))


def _complete(destination: Path) -> bool:
    return (dl.read_marker(destination) or {}).get("complete") is True


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _use_files(monkeypatch, dataset: str, *files: dl.RemoteFile) -> None:
    monkeypatch.setitem(dl.SOURCES, dataset, dataclasses.replace(dl.SOURCES[dataset], files=files))


def _idc_remote(server: _Server, body: bytes) -> dl.RemoteFile:
    server.files["/IDC_regular_ps50_idx5.zip"] = body
    return dl.RemoteFile(server.url("/IDC_regular_ps50_idx5.zip"), "IDC_regular_ps50_idx5.zip",
                         target="IDC_regular_ps50_idx5")


# ----------------------------------------------------------------------------- full downloads


def test_idc_archive_download_gives_a_scannable_folder(server, monkeypatch, tmp_path):
    _use_files(monkeypatch, "idc", _idc_remote(server, _zip_bytes(_idc_members())))
    destination = tmp_path / "idc"

    result = dl.download("idc", destination, progress=False)

    assert result == destination
    index = scan("idc", result)
    assert len(index.frame) == 12
    assert sorted(index.frame["patient_id"].unique()) == sorted(PATIENTS)
    assert set(index.frame["label"]) == {0, 1}
    assert _complete(destination)
    assert dl.read_marker(destination)["method"] == "archive"
    assert not (destination / dl.WORK_DIR_NAME).exists()  # no archive or .part left behind
    # A second call finds the marker and makes no request.
    count = len(server.requests)
    assert dl.download("idc", destination, progress=False) == destination
    assert len(server.requests) == count


def test_default_destination_is_the_project_data_folder(server, monkeypatch, tmp_path, capsys):
    body = b"npz-bytes" * 1000
    server.files["/breastmnist.npz"] = body
    _use_files(monkeypatch, "breastmnist", dl.RemoteFile(server.url("/breastmnist.npz"), "breastmnist.npz",
                                                          md5=hashlib.md5(body).hexdigest()))
    result = dl.download("breastmnist", progress=True)

    assert result == tmp_path / "project" / "data" / "breastmnist"
    assert (result / "breastmnist.npz").read_bytes() == body
    assert "ready" in capsys.readouterr().out


def test_gzip_files_are_decompressed_and_every_file_installed(server, monkeypatch, tmp_path):
    contents = {"a_x.h5": b"first" * 200, "a_y.h5": b"second" * 100}
    remotes = []
    for name, data in contents.items():
        server.files[f"/{name}.gz"] = gzip.compress(data)
        remotes.append(dl.RemoteFile(server.url(f"/{name}.gz?download=1"), f"{name}.gz"))
    _use_files(monkeypatch, "pcam", *remotes)

    destination = dl.download("pcam", tmp_path / "pcam", progress=False)

    for name, data in contents.items():
        assert (destination / name).read_bytes() == data
    assert sorted(dl.read_marker(destination)["installed"]) == sorted(contents)


def test_pcam_h5_gz_files_become_a_scannable_folder(server, monkeypatch, tmp_path):
    import h5py

    remotes = []
    for array, data in (("x", np.zeros((4, 96, 96, 3), np.uint8)), ("y", np.array([0, 1, 0, 1]).reshape(4, 1, 1, 1))):
        name = f"camelyonpatch_level_2_split_valid_{array}.h5"
        with h5py.File(tmp_path / name, "w") as handle:
            handle.create_dataset(array, data=data, compression="gzip")
        server.files[f"/{name}.gz"] = gzip.compress((tmp_path / name).read_bytes())
        remotes.append(dl.RemoteFile(server.url(f"/{name}.gz?download=1"), f"{name}.gz"))
    _use_files(monkeypatch, "pcam", *remotes)

    index = scan("pcam", dl.download("pcam", tmp_path / "pcam", progress=False))

    assert len(index.frame) == 4 and set(index.frame["split"]) == {"val"}


def test_files_fetched_one_url_at_a_time_accumulate(server, tmp_path):
    names = ("camelyonpatch_level_2_split_valid_x.h5", "camelyonpatch_level_2_split_valid_y.h5")
    for name in names:
        server.files[f"/{name}.gz"] = gzip.compress(name.encode())
    destination = tmp_path / "pcam"

    for name in names:
        dl.download("pcam", destination, url=server.url(f"/{name}.gz"), progress=False)
    dl.download("pcam", destination, url=server.url(f"/{names[0]}.gz"), progress=False)  # already there

    assert [(destination / name).read_bytes() for name in names] == [name.encode() for name in names]
    assert sorted(dl.read_marker(destination)["installed"]) == sorted(names)
    assert len(server.requests) == 2


def test_interrupted_multi_file_download_keeps_what_is_installed(server, monkeypatch, tmp_path):
    remotes = [dl.RemoteFile(server.url(f"/{name}.gz"), f"{name}.gz") for name in ("a_x.h5", "a_y.h5")]
    server.files["/a_x.h5.gz"] = gzip.compress(b"first")  # a_y.h5.gz missing: HTTP 404
    _use_files(monkeypatch, "pcam", *remotes)
    destination = tmp_path / "pcam"

    with pytest.raises(dl.DownloadError, match="HTTP 404"):
        dl.download("pcam", destination, progress=False)
    assert (destination / "a_x.h5").read_bytes() == b"first" and not _complete(destination)

    server.files["/a_y.h5.gz"] = gzip.compress(b"second")
    dl.download("pcam", destination, progress=False)

    assert [request["path"] for request in server.requests] == ["/a_x.h5.gz", "/a_y.h5.gz", "/a_y.h5.gz"]
    assert (destination / "a_y.h5").read_bytes() == b"second" and _complete(destination)


def test_url_override_of_a_known_file_keeps_its_checksum(server, monkeypatch, tmp_path):
    server.files["/mirror/breastmnist.npz"] = b"not the published file"
    with pytest.raises(dl.DownloadError, match="MD5"):
        dl.download("breastmnist", tmp_path / "bm", url=server.url("/mirror/breastmnist.npz"), progress=False)
    assert not (tmp_path / "bm" / "breastmnist.npz").exists()


# ----------------------------------------------------------------------------- resume


def test_fetch_resumes_a_partial_file_with_a_range_request(server, tmp_path):
    body = bytes(range(256)) * 400
    server.files["/file.bin"] = body
    part = tmp_path / "file.bin.part"
    part.write_bytes(body[:12345])

    dl.fetch(server.url("/file.bin"), part, progress=False)

    assert part.read_bytes() == body
    assert server.requests[-1]["range"] == "bytes=12345-"


def test_fetch_restarts_when_the_server_ignores_range(server, tmp_path):
    body = bytes(range(256)) * 400
    server.files["/file.bin"] = body
    server.honour_range = False
    part = tmp_path / "file.bin.part"
    part.write_bytes(b"stale bytes from another version")

    dl.fetch(server.url("/file.bin"), part, progress=False)

    assert part.read_bytes() == body
    assert server.requests[-1]["range"] is not None  # it asked, the server answered 200


def test_fetch_accepts_a_partial_file_that_is_already_complete(server, tmp_path):
    body = b"x" * 5000
    server.files["/file.bin"] = body
    part = tmp_path / "file.bin.part"
    part.write_bytes(body)

    dl.fetch(server.url("/file.bin"), part, progress=False)

    assert part.read_bytes() == body
    assert len(server.requests) == 1  # the 416 answer showed the file whole: no second transfer


def test_interrupted_download_keeps_the_part_file_and_resumes(server, monkeypatch, tmp_path):
    archive = _zip_bytes(_idc_members())
    _use_files(monkeypatch, "idc", _idc_remote(server, archive))
    destination = tmp_path / "idc"
    server.truncate_next_at = len(archive) // 3
    monkeypatch.setattr(dl, "CHUNK_SIZE", 256)  # small reads, so bytes before the cut reach the disk

    with pytest.raises(dl.DownloadError, match="resume"):
        dl.download("idc", destination, progress=False)
    part = destination / dl.WORK_DIR_NAME / "IDC_regular_ps50_idx5.zip.part"
    assert 0 < part.stat().st_size < len(archive)
    assert not _complete(destination)
    assert not (destination / "IDC_regular_ps50_idx5").exists()

    dl.download("idc", destination, progress=False)

    resumed_from = int(server.requests[-1]["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_from <= len(archive) // 3
    assert len(scan("idc", destination).frame) == 12


def test_interrupted_extraction_is_not_a_dataset_and_reuses_the_archive(server, monkeypatch, tmp_path):
    _use_files(monkeypatch, "idc", _idc_remote(server, _zip_bytes(_idc_members())))
    destination = tmp_path / "idc"
    real_extract = dl.extract_archive

    def extract_then_crash(archive, into):
        real_extract(archive, into)
        raise KeyboardInterrupt  # e.g. Ctrl-C after part of the files were written

    monkeypatch.setattr(dl, "extract_archive", extract_then_crash)
    with pytest.raises(KeyboardInterrupt):
        dl.download("idc", destination, progress=False)
    assert not _complete(destination)
    assert not (destination / "IDC_regular_ps50_idx5").exists()
    with pytest.raises(DatasetError):
        scan("idc", destination)

    monkeypatch.setattr(dl, "extract_archive", real_extract)
    requests_before = len(server.requests)
    dl.download("idc", destination, progress=False)
    assert len(server.requests) == requests_before  # the verified archive was kept and reused
    assert len(scan("idc", destination).frame) == 12


def test_resume_through_download_gives_identical_bytes(server, monkeypatch, tmp_path):
    body = np.random.default_rng(1).bytes(50_000)
    server.files["/breastmnist.npz"] = body
    _use_files(monkeypatch, "breastmnist", dl.RemoteFile(server.url("/breastmnist.npz"), "breastmnist.npz",
                                                          md5=hashlib.md5(body).hexdigest()))
    work = tmp_path / "bm" / dl.WORK_DIR_NAME
    work.mkdir(parents=True)
    (work / "breastmnist.npz.part").write_bytes(body[:20_000])

    dl.download("breastmnist", tmp_path / "bm", progress=False)

    assert (tmp_path / "bm" / "breastmnist.npz").read_bytes() == body
    assert server.requests[-1]["range"] == "bytes=20000-"


# ----------------------------------------------------------------------------- failures


def test_checksum_mismatch_is_clear_and_leaves_no_completed_file(server, monkeypatch, tmp_path):
    server.files["/breastmnist.npz"] = b"corrupted" * 100
    _use_files(monkeypatch, "breastmnist", dl.RemoteFile(server.url("/breastmnist.npz"), "breastmnist.npz",
                                                          md5=dl.BREASTMNIST_MD5))
    destination = tmp_path / "bm"

    with pytest.raises(dl.DownloadError) as caught:
        dl.download("breastmnist", destination, progress=False)

    message = str(caught.value)
    assert dl.BREASTMNIST_MD5 in message and "MD5" in message
    assert not (destination / "breastmnist.npz").exists()
    assert not _complete(destination)
    leftovers = [p for p in destination.rglob("*") if p.is_file()] if destination.exists() else []
    assert leftovers == []


@pytest.mark.parametrize("bad_name", ["../escaped.txt", "/tmp/bclib_absolute_escape.txt", "a/../../escaped.txt"])
def test_zip_member_outside_the_destination_is_refused(server, monkeypatch, tmp_path, bad_name):
    members = _idc_members()
    members[bad_name] = b"evil"
    _use_files(monkeypatch, "idc", _idc_remote(server, _zip_bytes(members)))
    destination = tmp_path / "nested" / "idc"

    with pytest.raises(dl.UnsafeArchiveError, match="refusing"):
        dl.download("idc", destination, progress=False)

    assert not (tmp_path / "nested" / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()
    assert not Path("/tmp/bclib_absolute_escape.txt").exists()
    assert not _complete(destination)
    assert not (destination / "IDC_regular_ps50_idx5").exists()


def _tar_gz_bytes(*members: tarfile.TarInfo) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        for member in members:
            bundle.addfile(member, io.BytesIO(b"evil"[: member.size]))
    return buffer.getvalue()


def _tar_member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, linkname
    member.size = 4 if kind == tarfile.REGTYPE else 0
    return member


@pytest.mark.parametrize("member", [
    _tar_member("all-mias/../../escaped.txt"),
    _tar_member("all-mias/link", tarfile.SYMTYPE, "../../escaped.txt"),
    _tar_member("all-mias/link", tarfile.SYMTYPE, "/etc/passwd"),
    _tar_member("all-mias/hard", tarfile.LNKTYPE, "../escaped.txt"),
    _tar_member("all-mias/device", tarfile.CHRTYPE),
], ids=["dotdot", "symlink-out", "symlink-absolute", "hardlink-out", "device"])
def test_unsafe_tar_member_is_refused(server, tmp_path, member):
    server.files["/all-mias.tar.gz"] = _tar_gz_bytes(_tar_member("all-mias/mdb001.pgm"), member)
    destination = tmp_path / "nested" / "mias"

    with pytest.raises(dl.UnsafeArchiveError, match="refusing"):
        dl.download("mias", destination, url=server.url("/all-mias.tar.gz"), progress=False)

    assert not os.path.lexists(tmp_path / "nested" / "escaped.txt")
    assert not os.path.lexists(destination / "all-mias")
    assert not _complete(destination)


def test_tar_archive_is_extracted(tmp_path):
    archive = tmp_path / "ok.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        data = b"hello"
        info = tarfile.TarInfo("all-mias/mdb001.pgm")
        info.size = len(data)
        bundle.addfile(info, io.BytesIO(data))
    dl.extract_archive(archive, tmp_path / "into")
    assert (tmp_path / "into" / "all-mias" / "mdb001.pgm").read_bytes() == b"hello"


def test_unreachable_host_fails_fast_with_manual_instructions(monkeypatch, tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/IDC_regular_ps50_idx5.zip"
    _use_files(monkeypatch, "idc", dl.RemoteFile(url, "IDC_regular_ps50_idx5.zip", target="IDC_regular_ps50_idx5"))
    destination = tmp_path / "idc"

    with pytest.raises(dl.DownloadError) as caught:
        dl.download("idc", destination, progress=False, timeout=3.0)

    message = str(caught.value)
    assert "could not connect" in message
    assert url in message and str(destination) in message
    assert "--data PATH" in message and "BCLIB_DATA" in message
    assert not destination.exists()  # nothing that would look like a (broken) dataset


def test_http_error_status_is_reported(server, monkeypatch, tmp_path):
    _use_files(monkeypatch, "breastmnist", dl.RemoteFile(server.url("/missing.npz"), "breastmnist.npz"))
    with pytest.raises(dl.DownloadError, match="HTTP 404"):
        dl.download("breastmnist", tmp_path / "bm", progress=False)


def test_registration_datasets_explain_where_to_get_them(tmp_path):
    destination = tmp_path / "breakhis"
    with pytest.raises(dl.ManualDownloadRequired) as caught:
        dl.download("breakhis", destination, progress=False)
    message = str(caught.value)
    assert "ufpr.br" in message and str(destination) in message and "--data PATH" in message
    assert not destination.exists()
    for name in ("mias", "folder", "cbis-ddsm"):
        with pytest.raises(dl.ManualDownloadRequired):
            dl.download(name, tmp_path / name, progress=False)


def test_registration_dataset_with_a_given_url_is_fetched_and_unpacked(server, tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        info = tarfile.TarInfo("mdb001.pgm")
        info.size = 3
        bundle.addfile(info, io.BytesIO(b"P5\n"))
    server.files["/all-mias.tar.gz"] = buffer.getvalue()

    destination = dl.download("mias", tmp_path / "mias", url=server.url("/all-mias.tar.gz"), progress=False)

    assert (destination / "all-mias" / "mdb001.pgm").read_bytes() == b"P5\n"


def test_existing_unrecorded_data_is_never_overwritten_without_force(server, monkeypatch, tmp_path):
    _use_files(monkeypatch, "idc", _idc_remote(server, _zip_bytes(_idc_members())))
    destination = tmp_path / "idc"
    (destination / "IDC_regular_ps50_idx5").mkdir(parents=True)
    keep = destination / "IDC_regular_ps50_idx5" / "mine.txt"
    keep.write_text("hand-made copy")

    with pytest.raises(dl.DownloadError, match="already exists"):
        dl.download("idc", destination, progress=False)
    assert keep.read_text() == "hand-made copy"
    assert server.requests == []  # refused before any transfer

    dl.download("idc", destination, progress=False, force=True)
    assert not keep.exists()
    assert len(scan("idc", destination).frame) == 12


def test_cli_refuses_to_overwrite_and_replaces_with_force(server, monkeypatch, tmp_path, capsys):
    from bclib.run.cli import main

    _use_files(monkeypatch, "idc", _idc_remote(server, _zip_bytes(_idc_members())))
    destination = tmp_path / "idc"
    (destination / "IDC_regular_ps50_idx5").mkdir(parents=True)
    keep = destination / "IDC_regular_ps50_idx5" / "mine.txt"
    keep.write_text("hand-made copy")

    assert main(["data", "download", "idc", "--dest", str(destination)]) == 2
    assert "--force" in capsys.readouterr().err
    assert keep.exists() and server.requests == []

    assert main(["data", "download", "idc", "--dest", str(destination), "--force"]) == 0
    assert f"idc is in {destination}" in capsys.readouterr().out
    assert not keep.exists()
    assert len(scan("idc", destination).frame) == 12


def test_unknown_dataset_is_a_value_error():
    with pytest.raises(ValueError, match="unknown dataset"):
        dl.download("imagenet", progress=False)


def test_archive_and_file_names():
    assert dl.archive_suffix("IDC_regular_ps50_idx5.zip") == ("zip", ".zip")
    assert dl.archive_suffix("BreaKHis_v1.tar.gz") == ("tar", ".tar.gz")
    assert dl.archive_suffix("x.h5.gz") == ("gzip", ".gz")
    assert dl.archive_suffix("breastmnist.npz") == ("file", "")
    assert dl.RemoteFile("u", "BreaKHis_v1.tar.gz").target_name == "BreaKHis_v1"
    assert dl.RemoteFile("u", "split_test_x.h5.gz").target_name == "split_test_x.h5"
    assert dl.filename_from_url("https://zenodo.org/records/1/files/breastmnist.npz?download=1") == "breastmnist.npz"
    assert dl.filename_from_url("http://host/..%2F..%2Fescape.zip") == "escape.zip"
    assert dl.filename_from_url("http://host/a/..") == "download"


# ----------------------------------------------------------------------------- Kaggle


def _fake_kaggle(calls: list) -> types.ModuleType:
    """A stand-in for the kaggle package: writes a zip in the Kaggle layout (nested twice + top level)."""
    members = {**_idc_members("IDC_regular_ps50_idx5/IDC_regular_ps50_idx5/"), **_idc_members()}

    class Api:
        def authenticate(self) -> None:
            calls.append("authenticate")

        def dataset_download_files(self, dataset, path=None, unzip=False, quiet=True, **kwargs):
            calls.append((dataset, unzip))
            Path(path, "breast-histopathology-images.zip").write_bytes(_zip_bytes(members))

    module = types.ModuleType("kaggle")
    module.__spec__ = importlib.machinery.ModuleSpec("kaggle", None)  # as an installed package has
    module.api = Api()
    return module


def test_kaggle_api_is_used_when_credentials_exist(monkeypatch, tmp_path):
    calls: list = []
    monkeypatch.setitem(sys.modules, "kaggle", _fake_kaggle(calls))
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "not-a-real-key")
    unreachable = f"http://127.0.0.1:{_closed_port()}/IDC_regular_ps50_idx5.zip"
    _use_files(monkeypatch, "idc", dl.RemoteFile(unreachable, "IDC_regular_ps50_idx5.zip", target="IDC_regular_ps50_idx5"))

    destination = dl.download("idc", tmp_path / "idc", progress=False)

    assert calls == ["authenticate", (dl.IDC_KAGGLE_DATASET, False)]
    assert dl.read_marker(destination)["method"] == "kaggle"
    index = scan("idc", destination)
    assert len(index.frame) == 12  # the nested copy is read once


def test_kaggle_json_file_counts_as_credentials(monkeypatch, tmp_path):
    assert not dl.kaggle_credentials_present()
    config = tmp_path / "kaggle_config"
    config.mkdir()
    (config / "kaggle.json").write_text(json.dumps({"username": "u", "key": "k"}))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config))
    assert dl.kaggle_credentials_present()


def test_without_the_kaggle_package_the_archive_is_used(server, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "kaggle", None)  # import kaggle -> ImportError
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "not-a-real-key")
    _use_files(monkeypatch, "idc", _idc_remote(server, _zip_bytes(_idc_members())))

    destination = dl.download("idc", tmp_path / "idc", progress=True)

    assert "kaggle" in capsys.readouterr().out.lower()
    assert dl.read_marker(destination)["method"] == "archive"
    assert len(server.requests) == 1
