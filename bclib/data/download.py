"""Download the public datasets: ``bclib data download idc``.

IDC comes from the Kaggle API when Kaggle credentials exist, otherwise from the original
archive; BreastMNIST and PCam from their Zenodo records. Downloads stream into a ``.part`` file
inside the destination (an HTTP Range request resumes it), are checked against a published
checksum when one is known, and archives are unpacked into a hidden temporary folder that is
renamed into place only when complete; a marker file (``.bclib-download.json``) is written last,
so an interrupted run is never mistaken for a complete dataset. Nothing outside the destination
folder is written. Datasets that need a registration (BreakHis, CBIS-DDSM) or have no stable
direct link raise :class:`ManualDownloadRequired`, whose message says where to get them.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tarfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator
from urllib.parse import unquote, urlparse

from bclib import paths

#: The original archive of Janowczyk & Madabhushi (2016), use case 6 (IDC segmentation).
IDC_ARCHIVE_URL = "http://andrewjanowczyk.com/wp-static/IDC_regular_ps50_idx5.zip"
#: The same data on Kaggle (``kaggle datasets download -d ...``); needs Kaggle credentials.
IDC_KAGGLE_DATASET = "paultimothymooney/breast-histopathology-images"
#: BreastMNIST (MedMNIST v2/v3, 28x28) on Zenodo, and the MD5 published in medmnist's INFO.
BREASTMNIST_URL = "https://zenodo.org/records/10519652/files/breastmnist.npz?download=1"
BREASTMNIST_MD5 = "750601b1f35ba3300ea97c75c52ff8f6"
#: PatchCamelyon (Veeling et al. 2018) on Zenodo: one gzip-compressed HDF5 file per split and array.
PCAM_RECORD_URL = "https://zenodo.org/records/2546921/files/"
PCAM_FILES = tuple(
    f"camelyonpatch_level_2_split_{split}_{array}.h5.gz"
    for split in ("train", "valid", "test")
    for array in ("x", "y")
)

#: Written into the destination after everything else succeeded.
MARKER_NAME = ".bclib-download.json"
#: Hidden working folder inside the destination: ``.part`` files and temporary extractions.
WORK_DIR_NAME = ".bclib-download"
CHUNK_SIZE = 1 << 16
#: The connection itself must be quick; a long timeout only applies to reading.
MAX_CONNECT_TIMEOUT = 5.0


class DownloadError(RuntimeError):
    """A download, checksum or extraction failed; the message says how to get the data by hand."""


class ManualDownloadRequired(DownloadError):
    """The dataset has no public direct link (registration, licence form): get it by hand."""


class UnsafeArchiveError(DownloadError):
    """An archive member would be written outside the destination (absolute path, ``..``, link)."""


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: where from, its checksum if published, and how to unpack it."""

    url: str
    filename: str
    md5: str | None = None
    sha256: str | None = None
    #: Name of the folder (archives) or file (gzip) it becomes inside the destination.
    target: str | None = None

    @property
    def kind(self) -> str:
        """``zip``, ``tar``, ``gzip`` (one compressed file) or ``file`` (kept as downloaded)."""
        return archive_kind(self.filename)

    @property
    def target_name(self) -> str:
        if self.target:
            return self.target
        return strip_archive_suffix(self.filename)


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset comes from, and what to tell a user who must fetch it by hand."""

    name: str
    title: str
    files: tuple[RemoteFile, ...] = ()
    kaggle_dataset: str | None = None
    homepage: str = ""
    manual_steps: str = ""
    licence: str = ""
    citation: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def direct(self) -> bool:
        return bool(self.files)


SOURCES: dict[str, DatasetSource] = {
    "idc": DatasetSource(
        name="idc",
        title="IDC breast histopathology patches (IDC_regular_ps50_idx5, 277,524 50x50 PNGs, ~1.6 GB)",
        files=(RemoteFile(IDC_ARCHIVE_URL, "IDC_regular_ps50_idx5.zip", target="IDC_regular_ps50_idx5"),),
        kaggle_dataset=IDC_KAGGLE_DATASET,
        homepage="https://www.kaggle.com/datasets/paultimothymooney/breast-histopathology-images",
        manual_steps=(
            f"download {IDC_ARCHIVE_URL} (or the Kaggle dataset {IDC_KAGGLE_DATASET}) and unzip it "
            "so that <patient>/<0|1>/*.png folders lie under the destination"
        ),
        licence="CC0 1.0 (Kaggle listing)",
        citation="Janowczyk & Madabhushi, J Pathol Inform 7:29 (2016); Cruz-Roa et al., SPIE Medical Imaging 2014",
    ),
    "breastmnist": DatasetSource(
        name="breastmnist",
        title="BreastMNIST (MedMNIST, 780 28x28 breast ultrasound images, 0.6 MB)",
        files=(RemoteFile(BREASTMNIST_URL, "breastmnist.npz", md5=BREASTMNIST_MD5),),
        homepage="https://medmnist.com",
        manual_steps=f"download {BREASTMNIST_URL} and save it as breastmnist.npz in the destination",
        licence="CC BY 4.0",
        citation="Yang et al., MedMNIST v2, Scientific Data 10:41 (2023); Al-Dhabyani et al., Data in Brief 28 (2020)",
    ),
    "pcam": DatasetSource(
        name="pcam",
        title="PatchCamelyon (327,680 96x96 lymph-node patches as HDF5, ~7 GB compressed)",
        files=tuple(RemoteFile(PCAM_RECORD_URL + name + "?download=1", name) for name in PCAM_FILES),
        homepage="https://github.com/basveeling/pcam",
        manual_steps=(
            f"download the six camelyonpatch_level_2_split_*.h5.gz files from {PCAM_RECORD_URL} "
            "and gunzip them into the destination"
        ),
        licence="CC0 1.0",
        citation="Veeling et al., MICCAI 2018; Bejnordi et al., JAMA 318(22) 2017 (CAMELYON16)",
    ),
    "breakhis": DatasetSource(
        name="breakhis",
        title="BreakHis (7,909 700x460 histopathology images, 82 patients, ~4 GB)",
        homepage="https://web.inf.ufpr.br/vri/databases/breast-cancer-histopathological-database-breakhis/",
        manual_steps=(
            "fill in the request form on the homepage, download BreaKHis_v1.tar.gz and unpack it so that "
            "BreaKHis_v1/histology_slides/breast/<benign|malignant>/SOB/... lies in the destination "
            "(or pass the link you receive: `bclib data download breakhis --url URL`)"
        ),
        licence="research use (see the homepage)",
        citation="Spanhol et al., IEEE Trans Biomed Eng 63(7) 2016",
    ),
    "mias": DatasetSource(
        name="mias",
        title="mini-MIAS (322 1024x1024 PGM mammograms and Info.txt)",
        homepage="http://peipa.essex.ac.uk/info/mias.html",
        manual_steps=(
            "get all-mias.tar.gz from the MIAS page (http://peipa.essex.ac.uk/pix/mias/all-mias.tar.gz at the "
            "time of writing) and unpack it so that mdbNNN.pgm files and Info.txt lie in the destination "
            "(`bclib data download mias --url URL` fetches and unpacks a link you have)"
        ),
        licence="free for scientific research",
        citation="Suckling et al., The Mammographic Image Analysis Society digital mammogram database, 1994",
    ),
    "folder": DatasetSource(
        name="folder",
        title="any <class>/<image> folder tree, e.g. CBIS-DDSM or Mini-DDSM ROI crops",
        homepage="https://www.cancerimagingarchive.net/collection/cbis-ddsm/",
        manual_steps=(
            "CBIS-DDSM is distributed by TCIA with its NBIA Data Retriever (DICOM, ~160 GB); Mini-DDSM is on "
            "Kaggle. Crop or export the images into <destination>/<class name>/<image files> "
            "and scan it as the `folder` dataset"
        ),
        licence="CC BY 3.0 (CBIS-DDSM, TCIA data usage policy)",
        citation="Lee et al., Scientific Data 4:170177 (2017)",
    ),
}
SOURCES["cbis-ddsm"] = SOURCES["folder"]


# ----------------------------------------------------------------------------- helpers


def archive_kind(filename: str) -> str:
    """Classify a file name: ``zip``, ``tar`` (.tar, .tar.gz, .tgz, ...), ``gzip`` or ``file``."""
    lower = filename.lower()
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")):
        return "tar"
    if lower.endswith(".gz"):
        return "gzip"
    return "file"


def strip_archive_suffix(filename: str) -> str:
    """``IDC.zip`` -> ``IDC``, ``a.tar.gz`` -> ``a``, ``x.h5.gz`` -> ``x.h5``; other names unchanged."""
    lower = filename.lower()
    for suffix in (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tbz2", ".txz", ".tar", ".zip", ".gz"):
        if lower.endswith(suffix):
            return filename[: -len(suffix)]
    return filename


def filename_from_url(url: str) -> str:
    """The last path component of ``url`` (query removed), or ``download`` when there is none."""
    name = unquote(PurePosixPath(urlparse(url).path).name)
    return name or "download"


def kaggle_credentials_present() -> bool:
    """True when the Kaggle API could authenticate: env variables or a ``kaggle.json`` file."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return True
    if os.environ.get("KAGGLE_API_TOKEN"):
        return True
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle")).expanduser()
    return (config_dir / "kaggle.json").is_file() or (config_dir / "access_token").is_file()


def default_destination(dataset: str) -> Path:
    """``data/<folder>`` using the first folder name the path resolver knows for ``dataset``."""
    folder = paths.DATASET_FOLDERS.get(dataset, (dataset,))[0]
    return paths.data_dir() / folder


def instructions(dataset: str, destination: Path | None = None, url: str | None = None) -> str:
    """How to get ``dataset`` by hand, where to unpack it, and how to point the project at it."""
    source = get_source(dataset)
    destination = Path(destination) if destination is not None else default_destination(source.name)
    lines = [f"{source.title}:"]
    if url:
        lines.append(f"  URL: {url}")
    lines.append(f"  get it by hand: {source.manual_steps}")
    if source.homepage:
        lines.append(f"  homepage: {source.homepage}")
    lines.append(f"  put it in (unpacked): {destination}")
    lines.append(
        "  an existing copy elsewhere works too: pass --data PATH (notebooks: data_dir=PATH), "
        f"or set BCLIB_DATA (a folder holding {source.name}/) or BCLIB_DATA_{source.name.upper()}"
    )
    if source.licence:
        lines.append(f"  licence: {source.licence}; cite: {source.citation}")
    return "\n".join(lines)


def get_source(dataset: str) -> DatasetSource:
    key = dataset.strip().lower()
    if key not in SOURCES:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(SOURCES)}")
    return SOURCES[key]


def read_marker(destination: Path) -> dict | None:
    """The completion record of a finished download in ``destination``, or ``None``."""
    marker = Path(destination) / MARKER_NAME
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_complete(destination: Path) -> bool:
    return read_marker(destination) is not None


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, flush=True)


# ----------------------------------------------------------------------------- checksums


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_SIZE), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checksum(path: Path, md5: str | None = None, sha256: str | None = None) -> None:
    """Raise :class:`DownloadError` when ``path`` does not match a given checksum."""
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if not expected:
            continue
        actual = file_digest(path, algorithm)
        if actual.lower() != expected.lower():
            raise DownloadError(
                f"{algorithm.upper()} of the downloaded {Path(path).name} is {actual}, expected {expected}: "
                "the file is corrupt or the server changed it; it was deleted, run the download again"
            )


# ----------------------------------------------------------------------------- HTTP


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes 100-199/1000`` -> (100, 1000); ``bytes */1000`` -> (None, 1000)."""
    if not value or not value.startswith("bytes "):
        return None, None
    spec, _, total = value[6:].partition("/")
    start = None if spec.strip() == "*" else int(spec.split("-")[0])
    return start, (int(total) if total.strip().isdigit() else None)


def fetch(
    url: str,
    part_path: Path,
    progress: bool = True,
    timeout: float = 15.0,
    session=None,
) -> Path:
    """Stream ``url`` into ``part_path``, continuing an existing partial file with a Range request.

    A server that ignores Range (answers 200) restarts the file from zero. Returns ``part_path``
    once it holds the whole body; connection failures raise :class:`DownloadError` and keep the
    partial file so the next call resumes it.
    """
    import requests
    from tqdm.auto import tqdm

    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    part_path = Path(part_path)
    part_path.parent.mkdir(parents=True, exist_ok=True)
    offset = part_path.stat().st_size if part_path.exists() else 0
    headers = {"User-Agent": "bclib-downloader", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    http = session or requests
    connect_timeout = min(timeout, MAX_CONNECT_TIMEOUT)
    try:
        response = http.get(url, stream=True, timeout=(connect_timeout, timeout), headers=headers, allow_redirects=True)
    except requests.exceptions.RequestException as error:
        raise DownloadError(
            f"could not connect to {url} (is this machine offline or behind a proxy?): {_short(error)}"
        ) from error
    with response:
        if response.status_code == 416 and offset:
            _, total = _parse_content_range(response.headers.get("Content-Range"))
            if total == offset:
                return part_path  # the partial file is already complete
            part_path.unlink()
            return fetch(url, part_path, progress=progress, timeout=timeout, session=session)
        if response.status_code not in (200, 206):
            raise DownloadError(f"{url} answered HTTP {response.status_code} {response.reason or ''}".rstrip())
        mode = "ab"
        if response.status_code == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                raise DownloadError(f"{url} resumed at byte {start} instead of {offset}; delete {part_path} and retry")
        else:
            if offset:
                _say(progress, f"the server does not resume downloads; restarting {part_path.name} from the beginning")
            mode, offset = "wb", 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        _check_free_space(part_path.parent, (total - offset) if total else None)
        received = offset
        bar = tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part_path.name.removesuffix(".part"), disable=not progress, leave=False,
        )
        try:
            with open(part_path, mode) as handle, bar:
                for chunk in response.iter_content(chunk_size=CHUNK_SIZE):
                    if chunk:
                        handle.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
        except requests.exceptions.RequestException as error:
            raise DownloadError(
                f"the download of {url} stopped after {received:,} bytes ({_short(error)}); "
                f"run it again to resume from {part_path}"
            ) from error
    if total is not None and received != total:
        raise DownloadError(
            f"the download of {url} ended after {received:,} of {total:,} bytes; run it again to resume"
        )
    return part_path


def _short(error: BaseException) -> str:
    text = str(error)
    return text if len(text) <= 300 else text[:300] + "..."


def _check_free_space(folder: Path, needed: int | None) -> None:
    if not needed:
        return
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DownloadError(f"not enough disk space in {folder}: {needed:,} bytes needed, {free:,} free")


# ----------------------------------------------------------------------------- archives


def _unsafe_member_reason(name: str) -> str | None:
    """Why an archive member name would escape the extraction folder, or ``None`` if it is safe."""
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":"):
        return "absolute path"
    if ".." in PurePosixPath(normalised).parts:
        return "'..' in the path"
    return None


def _check_inside(root: Path, name: str) -> None:
    reason = _unsafe_member_reason(name)
    if reason is None and not (root / name).resolve().is_relative_to(root.resolve()):
        reason = "resolves outside the destination"
    if reason:
        raise UnsafeArchiveError(f"refusing to unpack archive member {name!r}: {reason}")


def extract_archive(archive: Path, into: Path) -> None:
    """Unpack a zip or tar archive into the folder ``into`` after checking every member name.

    The whole archive is checked before anything is written: a member with an absolute path,
    ``..``, or a link pointing outside raises :class:`UnsafeArchiveError`.
    """
    archive, into = Path(archive), Path(into)
    into.mkdir(parents=True, exist_ok=True)
    kind = archive_kind(archive.name)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as bundle:
                members = bundle.infolist()
                for member in members:
                    _check_inside(into, member.filename)
                for member in members:
                    bundle.extract(member, into)
        elif kind == "tar":
            with tarfile.open(archive) as bundle:
                members = bundle.getmembers()
                for member in members:
                    _check_inside(into, member.name)
                    if member.issym() or member.islnk():
                        link_base = (into / member.name).parent if member.issym() else into
                        _check_inside(link_base, member.linkname)
                    if member.isdev():
                        raise UnsafeArchiveError(f"refusing to unpack device file {member.name!r}")
                if hasattr(tarfile, "data_filter"):
                    bundle.extractall(into, members=members, filter="data")
                else:  # Python without extraction filters: the checks above already ran
                    bundle.extractall(into, members=members)
        else:
            raise DownloadError(f"{archive.name} is not a zip or tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as error:
        raise DownloadError(f"{archive.name} is not a valid {kind} archive ({error}); delete it and retry") from error


def gunzip_file(source: Path, target: Path) -> None:
    """Decompress a single-file gzip ``source`` into ``target`` (written as ``.tmp``, then renamed)."""
    temporary = target.with_name(target.name + ".tmp")
    try:
        with gzip.open(source, "rb") as reader, open(temporary, "wb") as writer:
            shutil.copyfileobj(reader, writer, CHUNK_SIZE)
    except (OSError, EOFError) as error:
        temporary.unlink(missing_ok=True)
        raise DownloadError(f"{source.name} is not a valid gzip file ({error}); delete it and retry") from error
    os.replace(temporary, target)


def _single_child_named(folder: Path, name: str) -> Path | None:
    children = [child for child in folder.iterdir() if child.name != "__MACOSX"]
    if len(children) == 1 and children[0].is_dir() and children[0].name == name:
        return children[0]
    return None


def install_file(downloaded: Path, remote: RemoteFile, destination: Path, work: Path) -> Path:
    """Move a verified download into ``destination``: unpack archives, gunzip, or rename a file.

    Archives are unpacked into a temporary folder under ``work`` and renamed into place in one step,
    so an interrupted extraction never leaves a half-filled dataset folder.
    """
    target = destination / remote.target_name
    if target.exists():
        raise DownloadError(
            f"{target} already exists but the download was not recorded as complete; "
            "remove it (or use force=True / --force) and run the download again"
        )
    kind = archive_kind(downloaded.name)
    if kind in ("zip", "tar"):
        staging = work / f"extract-{remote.target_name}-{os.getpid()}-{time.time_ns()}"
        try:
            extract_archive(downloaded, staging)
            inner = _single_child_named(staging, remote.target_name)
            os.replace(inner if inner is not None else staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    elif kind == "gzip":
        gunzip_file(downloaded, target)
    else:
        os.replace(downloaded, target)
    downloaded.unlink(missing_ok=True)
    return target


# ----------------------------------------------------------------------------- main entry


def download(
    dataset: str,
    destination: Path | None = None,
    url: str | None = None,
    progress: bool = True,
    timeout: float = 15.0,
    force: bool = False,
) -> Path:
    """Download ``dataset`` into ``destination`` (default ``data/<dataset>``) and return that folder.

    ``idc`` uses the Kaggle API when credentials exist (``~/.kaggle/kaggle.json`` or
    ``KAGGLE_USERNAME``/``KAGGLE_KEY``) and the original archive otherwise; ``url`` overrides
    the source (any zip/tar/gzip/file link, also for datasets that need a registration).
    A destination already marked complete is returned at once unless ``force``.
    Raises :class:`DownloadError` (with manual instructions) when anything fails.
    """
    source = get_source(dataset)
    destination = Path(destination).expanduser() if destination is not None else default_destination(source.name)
    previous = read_marker(destination)
    if previous is not None and not force and (url is None or url in _marker_urls(previous)):
        _say(progress, f"{source.name} is already downloaded in {destination}")
        return destination
    use_kaggle = url is None and bool(source.kaggle_dataset) and kaggle_credentials_present()
    if use_kaggle and not _kaggle_module_available():
        _say(progress, "Kaggle credentials found but the `kaggle` package is missing "
                       "(pip install 'bclib[kaggle]'); using the archive URL instead")
        use_kaggle = False
    if not source.direct and url is None and not use_kaggle:
        raise ManualDownloadRequired(
            f"{source.name} cannot be downloaded automatically (no public direct link).\n"
            + instructions(source.name, destination)
        )
    if url is not None:
        remotes: tuple[RemoteFile, ...] = (_remote_for_url(source, url),)
        method = "url"
    else:
        remotes = source.files[:1] if use_kaggle else source.files
        method = "kaggle" if use_kaggle else "archive"
    work = destination / WORK_DIR_NAME
    if not force:  # files installed by an interrupted earlier run (multi-file datasets) are kept
        remotes = tuple(remote for remote in remotes if not _installed_stamp(work, remote).is_file())
    targets = [destination / remote.target_name for remote in remotes]
    existing = [target for target in targets if target.exists() or target.is_symlink()]
    if existing and not force:
        raise DownloadError(
            f"{existing[0]} already exists but is not recorded as a complete download; remove it or "
            "download again with force=True (--force); to use a copy you already have, pass --data PATH "
            "or set BCLIB_DATA instead of downloading"
        )
    created = not destination.exists()
    destination.mkdir(parents=True, exist_ok=True)
    work.mkdir(exist_ok=True)
    if force or url is None:  # a re-download; one more file by ``url`` keeps the earlier record
        (destination / MARKER_NAME).unlink(missing_ok=True)
    try:
        for target in existing:
            _remove_inside(target, destination)
        if use_kaggle:
            installed = [_download_with_kaggle(source, destination, work, progress)]
            remotes = ()
        else:
            installed = [_download_one(remote, destination, work, source, progress, timeout) for remote in remotes]
    except BaseException:
        _discard_if_empty(destination, work, created)
        raise
    installed = sorted({*installed, *_previously_installed(work, destination)})
    return _finish(destination, work, source, method, installed, progress, remotes, previous)


def _marker_urls(marker: dict) -> set[str]:
    return {entry.get("url") for entry in marker.get("files", []) if isinstance(entry, dict)}


def _installed_stamp(work: Path, remote: RemoteFile) -> Path:
    return work / (remote.filename + ".installed")


def _previously_installed(work: Path, destination: Path) -> list[Path]:
    if not work.is_dir():
        return []
    return [destination / stamp.read_text(encoding="utf-8").strip() for stamp in work.glob("*.installed")]


def _remote_for_url(source: DatasetSource, url: str) -> RemoteFile:
    """A user-given link: a mirror of a known file keeps its checksum and target name."""
    name = filename_from_url(url)
    for known in source.files:
        if known.filename == name:
            return RemoteFile(url, name, md5=known.md5, sha256=known.sha256, target=known.target)
    single = source.files[0] if len(source.files) == 1 else None
    target = single.target if single is not None and archive_kind(name) in ("zip", "tar") else None
    return RemoteFile(url, name, target=target)


def _discard_if_empty(destination: Path, work: Path, created: bool) -> None:
    """After a failure keep resumable ``.part`` bytes, but leave no empty folders behind.

    An empty ``data/<dataset>`` would otherwise look like a (broken) copy of the dataset.
    """
    if work.is_dir() and not any(path.is_file() and path.stat().st_size > 0 for path in work.rglob("*")):
        shutil.rmtree(work, ignore_errors=True)
    if created and destination.is_dir() and not any(destination.iterdir()):
        destination.rmdir()


def _download_one(
    remote: RemoteFile, destination: Path, work: Path, source: DatasetSource, progress: bool, timeout: float
) -> Path:
    part = work / (remote.filename + ".part")
    downloaded = work / remote.filename  # present only when complete and verified
    if not downloaded.is_file():
        _say(progress, f"downloading {remote.url}")
        try:
            fetch(remote.url, part, progress=progress, timeout=timeout)
        except DownloadError as error:
            raise DownloadError(f"{error}\n{instructions(source.name, destination, remote.url)}") from error
        try:
            verify_checksum(part, md5=remote.md5, sha256=remote.sha256)
        except DownloadError:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, downloaded)
    if archive_kind(remote.filename) != "file":
        _say(progress, f"unpacking {remote.filename}")
    installed = install_file(downloaded, remote, destination, work)
    _installed_stamp(work, remote).write_text(installed.name, encoding="utf-8")
    return installed


def _finish(
    destination: Path,
    work: Path,
    source: DatasetSource,
    method: str,
    installed: list[Path],
    progress: bool,
    remotes: tuple[RemoteFile, ...] = (),
    previous: dict | None = None,
) -> Path:
    """Write the completion marker last; files fetched one ``url`` at a time accumulate in it."""
    files = [{"url": r.url, "md5": r.md5, "sha256": r.sha256} for r in remotes]
    names = [str(path.relative_to(destination)) for path in installed]
    if previous and method == "url" and previous.get("dataset") == source.name:
        files = [f for f in previous.get("files", []) if f.get("url") not in {r.url for r in remotes}] + files
        names = sorted({*previous.get("installed", []), *names})
    record = {
        "dataset": source.name,
        "method": method,
        "files": files,
        "kaggle_dataset": source.kaggle_dataset if method == "kaggle" else None,
        "installed": names,
        "completed": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "licence": source.licence,
        "citation": source.citation,
    }
    marker = destination / MARKER_NAME
    temporary = marker.with_name(marker.name + ".tmp")
    temporary.write_text(json.dumps(record, indent=2), encoding="utf-8")
    os.replace(temporary, marker)
    shutil.rmtree(work, ignore_errors=True)
    _say(progress, f"{source.name} is ready in {destination} (licence: {source.licence}; cite: {source.citation})")
    return destination


def _remove_inside(target: Path, destination: Path) -> None:
    if not target.parent.resolve().is_relative_to(destination.resolve()):
        raise DownloadError(f"refusing to remove {target}: it is outside {destination}")
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    else:
        target.unlink()


# ----------------------------------------------------------------------------- Kaggle


def _kaggle_module_available() -> bool:
    import importlib.util
    import sys

    if "kaggle" in sys.modules:
        return sys.modules["kaggle"] is not None
    return importlib.util.find_spec("kaggle") is not None


def _download_with_kaggle(source: DatasetSource, destination: Path, work: Path, progress: bool) -> Path:
    """Fetch the dataset zip with the Kaggle API into ``work``, then unpack it like the archive."""
    remote = source.files[0]
    kaggle_work = work / "kaggle"
    kaggle_work.mkdir(parents=True, exist_ok=True)
    _say(progress, f"downloading {source.kaggle_dataset} with the Kaggle API")
    try:
        import kaggle  # optional extra; authenticates on import in most versions

        api = kaggle.api
        api.authenticate()
        api.dataset_download_files(source.kaggle_dataset, path=str(kaggle_work), unzip=False, quiet=not progress)
    except Exception as error:  # the Kaggle client raises many unrelated types
        raise DownloadError(
            f"the Kaggle download of {source.kaggle_dataset} failed: {_short(error)}\n"
            + instructions(source.name, destination)
        ) from error
    archives = sorted(kaggle_work.glob("*.zip"))
    if len(archives) != 1:
        raise DownloadError(
            f"expected one zip from the Kaggle API in {kaggle_work}, found {[a.name for a in archives]}"
        )
    _say(progress, f"unpacking {archives[0].name}")
    installed = install_file(archives[0], RemoteFile(source.kaggle_dataset, archives[0].name, target=remote.target_name), destination, work)
    return installed


def iter_sources() -> Iterator[DatasetSource]:
    """Every dataset this module knows, once each (aliases skipped)."""
    seen: set[int] = set()
    for source in SOURCES.values():
        if id(source) not in seen:
            seen.add(id(source))
            yield source


__all__ = [
    "BREASTMNIST_MD5",
    "BREASTMNIST_URL",
    "DatasetSource",
    "DownloadError",
    "IDC_ARCHIVE_URL",
    "IDC_KAGGLE_DATASET",
    "ManualDownloadRequired",
    "RemoteFile",
    "SOURCES",
    "UnsafeArchiveError",
    "download",
    "extract_archive",
    "fetch",
    "instructions",
    "is_complete",
    "kaggle_credentials_present",
]
