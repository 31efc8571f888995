"""Download the public datasets: ``bclib data download idc|breastmnist|pcam``.

Files stream into ``<destination>/.bclib-download/<name>.part`` (a rerun resumes with HTTP Range), are
checked against their published checksum and unpacked into a staging folder renamed into place in one
step. The marker ``.bclib-download.json`` lists what is installed; ``"complete": true`` marks a finished one.
Before fetching on its own, ``bclib run`` asks :func:`offline_requested` and :func:`unreachable_reason`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import importlib.util
import json
import os
import shutil
import socket
import tarfile
import tempfile
import threading
import time
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from bclib import paths

IDC_ARCHIVE_URL = "http://andrewjanowczyk.com/wp-static/IDC_regular_ps50_idx5.zip"
IDC_KAGGLE_DATASET = "paultimothymooney/breast-histopathology-images"
BREASTMNIST_URL = "https://zenodo.org/records/10519652/files/breastmnist.npz?download=1"
BREASTMNIST_MD5 = "750601b1f35ba3300ea97c75c52ff8f6"  # as published in medmnist's INFO
PCAM_RECORD_URL = "https://zenodo.org/records/2546921/files/"
PCAM_FILES = tuple(f"camelyonpatch_level_2_split_{split}_{array}.h5.gz"
                   for split in ("train", "valid", "test") for array in ("x", "y"))

MARKER_NAME = ".bclib-download.json"
#: Set to 1 (or true/yes) and nothing is fetched on the way: ``bclib run`` keeps to the data at hand.
OFFLINE_ENVIRONMENT = "BCLIB_OFFLINE"
#: Seconds :func:`unreachable_reason` waits for the name lookup and the connection together.
PROBE_TIMEOUT = 3.0
WORK_DIR_NAME = ".bclib-download"
CHUNK_SIZE = 1 << 16
ARCHIVE_SUFFIXES = {".tar.gz": "tar", ".tar.bz2": "tar", ".tar.xz": "tar", ".tgz": "tar", ".tbz2": "tar",
                    ".txz": "tar", ".tar": "tar", ".zip": "zip", ".gz": "gzip"}  # ".tar.gz" before ".gz"


class DownloadError(RuntimeError):
    """A download, checksum or extraction failed; the message says how to get the data by hand."""


class ManualDownloadRequired(DownloadError):
    """The dataset has no public direct link (registration, licence form): get it by hand."""


class UnsafeArchiveError(DownloadError):
    """An archive member would be written outside the destination."""


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """One file to fetch, its published checksum, and the name it gets in the destination."""

    url: str
    filename: str
    md5: str | None = None  # as published (Zenodo and MedMNIST publish MD5)
    target: str | None = None  # default: the file name without its archive suffix

    @property
    def target_name(self) -> str:
        return self.target or self.filename[: len(self.filename) - len(archive_suffix(self.filename)[1])]


@dataclasses.dataclass(frozen=True)
class DatasetSource:
    """Where a dataset comes from, and what to tell a user who must fetch it by hand."""

    name: str
    title: str
    manual_steps: str
    licence: str
    citation: str
    files: tuple[RemoteFile, ...] = ()
    kaggle_dataset: str | None = None  # the same archive as ``files[0]``, on Kaggle


SOURCES: dict[str, DatasetSource] = {
    "idc": DatasetSource(
        "idc", "IDC breast histopathology patches (IDC_regular_ps50_idx5, 277,524 50x50 PNGs, ~1.6 GB)",
        f"download {IDC_ARCHIVE_URL} (or https://www.kaggle.com/datasets/{IDC_KAGGLE_DATASET}) and unzip it "
        "so that <patient>/<0|1>/*.png folders lie under the destination", "CC0 1.0 (Kaggle listing)",
        "Janowczyk & Madabhushi, J Pathol Inform 7:29 (2016); Cruz-Roa et al., SPIE Medical Imaging 2014",
        (RemoteFile(IDC_ARCHIVE_URL, "IDC_regular_ps50_idx5.zip"),), IDC_KAGGLE_DATASET),
    "breastmnist": DatasetSource(
        "breastmnist", "BreastMNIST (MedMNIST, 780 28x28 breast ultrasound images, 0.6 MB)",
        f"download {BREASTMNIST_URL} and save it as breastmnist.npz in the destination (https://medmnist.com)",
        "CC BY 4.0",
        "Yang et al., MedMNIST v2, Scientific Data 10:41 (2023); Al-Dhabyani et al., Data in Brief 28 (2020)",
        (RemoteFile(BREASTMNIST_URL, "breastmnist.npz", md5=BREASTMNIST_MD5),)),
    "pcam": DatasetSource(
        "pcam", "PatchCamelyon (327,680 96x96 lymph-node patches as HDF5, ~7 GB compressed)",
        f"download the six camelyonpatch_level_2_split_*.h5.gz files from {PCAM_RECORD_URL} and gunzip them into "
        "the destination (https://github.com/basveeling/pcam)", "CC0 1.0",
        "Veeling et al., MICCAI 2018; Bejnordi et al., JAMA 318(22) 2017 (CAMELYON16)",
        tuple(RemoteFile(f"{PCAM_RECORD_URL}{name}?download=1", name) for name in PCAM_FILES)),
    "breakhis": DatasetSource(
        "breakhis", "BreakHis (7,909 700x460 histopathology images, 82 patients, ~4 GB)",
        "fill in the request form on https://web.inf.ufpr.br/vri/databases/breast-cancer-histopathological-database-"
        "breakhis/, then `bclib data download breakhis --url LINK`, or unpack BreaKHis_v1.tar.gz so that "
        "BreaKHis_v1/histology_slides/breast/<benign|malignant>/SOB/... lies in the destination",
        "research use (see the homepage)", "Spanhol et al., IEEE Trans Biomed Eng 63(7) 2016"),
    "mias": DatasetSource(
        "mias", "mini-MIAS (322 1024x1024 PGM mammograms and Info.txt)",
        "get all-mias.tar.gz from http://peipa.essex.ac.uk/info/mias.html (http://peipa.essex.ac.uk/pix/mias/"
        "all-mias.tar.gz at the time of writing) with `bclib data download mias --url LINK`, or unpack it so that "
        "mdbNNN.pgm files and Info.txt lie in the destination", "free for scientific research",
        "Suckling et al., The Mammographic Image Analysis Society digital mammogram database, 1994"),
    "folder": DatasetSource(
        "folder", "any <class>/<image> folder tree, e.g. CBIS-DDSM or Mini-DDSM ROI crops",
        "CBIS-DDSM comes from TCIA (https://www.cancerimagingarchive.net/collection/cbis-ddsm/) with its NBIA Data "
        "Retriever (DICOM, ~160 GB); Mini-DDSM is on Kaggle. Crop or export the images into <destination>/<class "
        "name>/<image files> and scan it as the `folder` dataset", "CC BY 3.0 (CBIS-DDSM, TCIA data usage policy)",
        "Lee et al., Scientific Data 4:170177 (2017)"),
}
SOURCES["cbis-ddsm"] = SOURCES["folder"]


def archive_suffix(filename: str) -> tuple[str, str]:
    """``(kind, suffix)``: kind is ``zip``, ``tar``, ``gzip`` (one compressed file) or ``file``."""
    lower = filename.lower()
    return next(((kind, suffix) for suffix, kind in ARCHIVE_SUFFIXES.items() if lower.endswith(suffix)), ("file", ""))


def filename_from_url(url: str) -> str:
    """The last path component of ``url`` (query and folders dropped), or ``download``."""
    name = PurePosixPath(unquote(urlparse(url).path).replace("\\", "/")).name
    return name if name not in ("", ".", "..") else "download"


def kaggle_credentials_present() -> bool:
    """True when the Kaggle API could authenticate: environment variables or a ``kaggle.json``."""
    if (os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY")) or os.environ.get("KAGGLE_API_TOKEN"):
        return True
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle")).expanduser()
    return (config_dir / "kaggle.json").is_file() or (config_dir / "access_token").is_file()


def instructions(source: DatasetSource, destination: Path) -> str:
    """How to get ``source`` by hand, where to unpack it, and how to use a copy elsewhere."""
    return (f"{source.title}:\n  get it by hand: {source.manual_steps}\n"
            f"  put it in (unpacked): {destination}\n  an existing copy elsewhere works too: pass --data PATH "
            f"(notebooks: data_dir=PATH), or set BCLIB_DATA (a folder holding {source.name}/) or "
            f"BCLIB_DATA_{source.name.upper()}\n  licence: {source.licence}; cite: {source.citation}")


def read_marker(destination: Path) -> dict | None:
    """The download record in ``destination`` (complete or not), or ``None``."""
    try:
        return json.loads((Path(destination) / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def offline_requested() -> bool:
    """True when ``$BCLIB_OFFLINE`` is set to anything but empty, ``0``, ``false`` or ``no``."""
    return os.environ.get(OFFLINE_ENVIRONMENT, "").strip().lower() not in ("", "0", "false", "no")


def unreachable_reason(url: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """``None`` when the host of ``url`` (or its proxy) accepts a TCP connection within ``timeout`` seconds,
    else why not, in one line. The lookup runs in a thread, so a stalled name server cannot hold it longer."""
    target = urlparse(url)
    proxy = urllib.request.getproxies().get(target.scheme)
    if proxy and not urllib.request.proxy_bypass(target.hostname or ""):
        target = urlparse(proxy if "://" in proxy else f"http://{proxy}")
    host, port = target.hostname, target.port or (443 if target.scheme == "https" else 80)
    if not host:
        return f"no host name in {url!r}"
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as error:
            outcome.append(f"cannot reach {host}:{port} ({error.strerror or error})")

    worker = threading.Thread(target=connect, name="bclib-network-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    return outcome[0] if outcome else f"no answer from {host}:{port} within {timeout:g} s"


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, flush=True)


def fetch(url: str, part_path: Path, progress: bool = True, timeout: float = 15.0) -> Path:
    """Stream ``url`` into ``part_path``, resuming a partial file with an HTTP Range request (a server
    that ignores Range restarts it). Failures raise :class:`DownloadError` and keep the partial file."""
    import requests
    from tqdm.auto import tqdm

    part_path = Path(part_path)
    part_path.parent.mkdir(parents=True, exist_ok=True)
    offset = part_path.stat().st_size if part_path.exists() else 0
    headers = {"User-Agent": "bclib-downloader", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = requests.get(url, stream=True, headers=headers, timeout=(min(timeout, 5.0), timeout))
    except requests.RequestException as error:
        raise DownloadError(f"could not connect to {url} (is this machine offline or behind a proxy?): "
                            f"{str(error)[:300]}") from error
    with response:
        content_range = response.headers.get("Content-Range", "")
        if response.status_code == 416 and offset:
            if content_range == f"bytes */{offset}":
                return part_path  # the partial file is already whole
            part_path.unlink()
            return fetch(url, part_path, progress, timeout)
        if response.status_code == 200 and offset:
            _say(progress, f"the server does not resume downloads; restarting {part_path.name}")
            offset = 0
        elif response.status_code not in (200, 206):
            raise DownloadError(f"{url} answered HTTP {response.status_code} {response.reason or ''}".rstrip())
        length = response.headers.get("Content-Length", "")
        total = offset + int(length) if length.isdigit() else None
        if length.isdigit() and (free := shutil.disk_usage(part_path.parent).free) < int(length):
            raise DownloadError(f"not enough disk space in {part_path.parent}: {length} bytes needed, {free:,} free")
        try:
            with open(part_path, "ab" if offset else "wb") as handle, tqdm.wrapattr(
                    handle, "write", total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=part_path.stem, disable=not progress, leave=False) as writer:
                for chunk in response.iter_content(chunk_size=CHUNK_SIZE):
                    writer.write(chunk)
        except OSError as error:  # requests' errors are OSErrors too
            raise DownloadError(f"the download of {url} stopped ({str(error)[:300]}); run it again to resume "
                                f"from {part_path}") from error
    if total is not None and (received := part_path.stat().st_size) != total:
        raise DownloadError(f"the download of {url} ended after {received:,} of {total:,} bytes; run it again "
                            "to resume")
    return part_path


def extract_archive(archive: Path, into: Path) -> None:
    """Unpack a zip or tar archive into ``into``; :class:`UnsafeArchiveError` for a member that would land
    outside (zip: every name checked before writing; tar: tarfile's ``data`` filter, which also refuses
    links out and device files)."""
    archive, into = Path(archive), Path(into)
    kind = archive_suffix(archive.name)[0]
    into.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as bundle:
                for name in bundle.namelist():
                    if not (into / name).resolve().is_relative_to(into.resolve()):
                        raise UnsafeArchiveError(f"refusing to unpack archive member {name!r}: "
                                                 f"it would be written outside {into}")
                bundle.extractall(into)
        elif kind == "tar":
            with tarfile.open(archive) as bundle:
                bundle.extractall(into, filter="data")
        else:
            raise DownloadError(f"{archive.name} is not a zip or tar archive")
    except tarfile.FilterError as error:
        raise UnsafeArchiveError(f"refusing to unpack {archive.name}: {error}") from error
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as error:
        raise DownloadError(f"{archive} is not a valid {kind} archive ({error}); delete it and retry") from error


def _install(downloaded: Path, target: Path, work: Path) -> None:
    """Unpack, gunzip or move a verified download to ``target``, which appears whole or not at all."""
    kind = archive_suffix(downloaded.name)[0]
    staging = Path(tempfile.mkdtemp(prefix="install-", dir=work))
    try:
        if kind in ("zip", "tar"):
            extract_archive(downloaded, staging)
            children = [child for child in staging.iterdir() if child.name != "__MACOSX"]
            wrapped = len(children) == 1 and children[0].is_dir() and children[0].name == target.name
            ready = children[0] if wrapped else staging
        elif kind == "gzip":
            ready = staging / target.name
            with gzip.open(downloaded, "rb") as reader, open(ready, "wb") as writer:
                shutil.copyfileobj(reader, writer, CHUNK_SIZE)
        else:
            ready = downloaded
        if target.is_dir() and not target.is_symlink():  # only with force: the old copy goes last
            shutil.rmtree(target)
        elif os.path.lexists(target):
            target.unlink()
        os.replace(ready, target)
    except (OSError, EOFError) as error:
        raise DownloadError(f"could not install {downloaded} as {target} ({error}); free space or delete "
                            "that file, then run the download again") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    downloaded.unlink(missing_ok=True)


def _fetch_verified(remote: RemoteFile, work: Path, progress: bool, timeout: float) -> Path:
    """``work/<filename>`` once downloaded and checked; a bad checksum deletes the file."""
    downloaded = work / remote.filename
    if downloaded.is_file():
        return downloaded
    part = work / (remote.filename + ".part")
    _say(progress, f"downloading {remote.url}")
    fetch(remote.url, part, progress, timeout)
    if remote.md5:
        with open(part, "rb") as handle:
            digest = hashlib.file_digest(handle, "md5").hexdigest()
        if digest != remote.md5.lower():
            part.unlink()
            raise DownloadError(f"MD5 of the downloaded {remote.filename} is {digest}, expected "
                                f"{remote.md5}: the file is corrupt or the server changed it; it was deleted, "
                                "run the download again")
    os.replace(part, downloaded)
    return downloaded


def _fetch_from_kaggle(dataset: str, folder: Path, progress: bool) -> Path:
    """The dataset's zip, downloaded with the Kaggle API into ``folder``."""
    folder.mkdir(exist_ok=True)
    _say(progress, f"downloading {dataset} with the Kaggle API")
    try:
        import kaggle  # optional extra

        kaggle.api.authenticate()
        kaggle.api.dataset_download_files(dataset, path=str(folder), unzip=False, quiet=not progress)
    except Exception as error:  # the Kaggle client raises many unrelated types
        raise DownloadError(f"the Kaggle download of {dataset} failed: {str(error)[:300]}") from error
    archives = sorted(folder.glob("*.zip"))
    if len(archives) != 1:
        raise DownloadError(f"expected one zip from the Kaggle API in {folder}, found {[a.name for a in archives]}")
    return archives[0]


def _remote_for_url(source: DatasetSource, url: str) -> RemoteFile:
    """A user-given link; a mirror of a known file keeps its checksum and target name."""
    name = filename_from_url(url)
    for known in source.files:
        if known.filename == name:
            return dataclasses.replace(known, url=url)
    single_archive = len(source.files) == 1 and archive_suffix(name)[0] in ("zip", "tar")
    return RemoteFile(url, name, target=source.files[0].target_name if single_archive else None)


def _write_marker(destination: Path, record: dict) -> None:
    temporary = destination / (MARKER_NAME + ".tmp")
    temporary.write_text(json.dumps(record, indent=2), encoding="utf-8")
    os.replace(temporary, destination / MARKER_NAME)


def download(dataset: str, destination: Path | str | None = None, url: str | None = None, progress: bool = True,
             timeout: float = 15.0, force: bool = False) -> Path:
    """Download ``dataset`` into ``destination`` (default ``data/<dataset>``) and return that folder.

    ``url``: fetch that link instead (a mirror, or a link received after registering); files fetched
    one ``url`` at a time add up. A complete download is returned at once unless ``force``.
    """
    source = SOURCES.get(dataset.strip().lower())
    if source is None:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(SOURCES)}")
    if destination is None:
        destination = paths.data_dir() / paths.DATASET_FOLDERS.get(source.name, (source.name,))[0]
    destination = Path(destination).expanduser()
    with _one_process_at_a_time(destination.parent / f".{destination.name}.lock"):  # a second one waits, then reuses
        return _download_into(source, destination, url, progress, timeout, force)


@contextlib.contextmanager
def _one_process_at_a_time(lock_path: Path):
    """Hold an exclusive lock on ``lock_path`` (POSIX ``flock``; no lock elsewhere)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:  # closing the file releases the lock
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _download_into(source: DatasetSource, destination: Path, url: str | None, progress: bool, timeout: float,
                   force: bool) -> Path:
    record = (None if force else read_marker(destination)) or {"dataset": source.name, "files": [], "installed": []}
    if record.get("complete") and (url is None or url in {entry.get("url") for entry in record["files"]}):
        _say(progress, f"{source.name} is already downloaded in {destination}")
        return destination
    if url is None and not source.files:
        raise ManualDownloadRequired(f"{source.name} cannot be downloaded automatically (no public direct link).\n"
                                     + instructions(source, destination))
    use_kaggle = url is None and source.kaggle_dataset is not None and kaggle_credentials_present()
    if use_kaggle and importlib.util.find_spec("kaggle") is None:
        _say(progress, "Kaggle credentials found but the `kaggle` package is missing (pip install 'bclib[kaggle]'); "
                       "using the archive URL instead")
        use_kaggle = False
    remotes = [_remote_for_url(source, url)] if url is not None else source.files
    remotes = [remote for remote in remotes if remote.target_name not in record["installed"]]
    existing = [destination / r.target_name for r in remotes if os.path.lexists(destination / r.target_name)]
    if existing and not force:
        raise DownloadError(f"{existing[0]} already exists but is not recorded as a complete download; remove it "
                            "or download again with force=True (--force); to use a copy you already have, "
                            "pass --data PATH or set BCLIB_DATA instead of downloading")
    created = not destination.exists()
    work = destination / WORK_DIR_NAME
    work.mkdir(parents=True, exist_ok=True)
    try:
        for remote in remotes:
            if use_kaggle:
                downloaded = _fetch_from_kaggle(source.kaggle_dataset, work / "kaggle", progress)
                remote = dataclasses.replace(remote, url=f"kaggle:{source.kaggle_dataset}")
            else:
                downloaded = _fetch_verified(remote, work, progress, timeout)
            _say(progress, f"installing {remote.target_name}")
            _install(downloaded, destination / remote.target_name, work)
            entry = {"url": remote.url, "md5": remote.md5}
            record["files"] = [old for old in record["files"] if old.get("url") != remote.url] + [entry]
            record["installed"] = sorted({*record["installed"], remote.target_name})
            _write_marker(destination, {**record, "complete": False})
    except BaseException as error:
        if not any(path.is_file() and path.stat().st_size for path in work.rglob("*")):
            shutil.rmtree(work, ignore_errors=True)  # keep only resumable bytes
        if created and destination.is_dir() and not any(destination.iterdir()):
            destination.rmdir()  # an empty folder would look like a broken dataset
        if isinstance(error, DownloadError):
            raise type(error)(f"{error}\n{instructions(source, destination)}") from error
        raise
    method = "url" if url is not None else "kaggle" if use_kaggle else "archive"
    _write_marker(destination, {**record, "method": method, "complete": True, "licence": source.licence,
                                "citation": source.citation, "completed": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    shutil.rmtree(work, ignore_errors=True)
    _say(progress, f"{source.name} is ready in {destination} (licence: {source.licence}; cite: {source.citation})")
    return destination
