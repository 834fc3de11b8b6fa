"""Download the official weights from Zenodo (resumable), unpack them safely and import them.

The zip is unpacked where the original program keeps its models, so both programs share them.
"""
from __future__ import annotations

import http.client
import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from ..errors import ModelError, ResourceError
from .registry import OFFICIAL_NAMES, SUBFOLDER, official_hd5_files, import_models, original_models_dir

log = logging.getLogger("deepemhancer")

ZENODO_URL = "https://zenodo.org/records/7432763/files/deepEMhancerModels_tf2.zip?download=1"
ZIP_NAME = "deepEMhancerModels_tf2.zip"
# sha256 of the official files, by file name, each recorded with its source. The Zenodo record
# publishes md5 sums only and no sha256 of these files could be found in a public source, so none
# is pinned yet: until one is, a file is checked by its size, its zip CRCs and a full read of every
# .hd5. Add an entry as "name": "sha256 hex" with a comment naming where it was read.
OFFICIAL_SHA256: dict[str, str] = {}
MANUAL = "run the command again to resume, or download the file by hand and use `deepemhancer models import`"
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")


def download_url() -> str:
    """The official zip's address; $DEEPEMHANCER_DOWNLOAD_URL overrides it (mirrors, tests)."""
    return os.environ.get("DEEPEMHANCER_DOWNLOAD_URL") or ZENODO_URL


def check_url(url: str) -> None:
    """ModelError unless ``url`` is an http(s) address with a host."""
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ModelError(f"download address {url!r} is not an http:// or https:// URL; give the full address "
                         f"of {ZIP_NAME}", setting="url")


def _open(url: str, offset: int, timeout: float):
    """Open the URL, asking for the bytes from ``offset`` on when a partial file exists."""
    headers = {"User-Agent": "deepemhancer"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _start_and_total(response, offset: int) -> tuple[int, int | None]:
    """Where the body starts in the file and the file's full size (None when not told)."""
    if response.status == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if match and int(match.group(1)) == offset:
            return offset, None if match.group(2) == "*" else int(match.group(2))
        raise ModelError(f"the server of {response.url} answered the resume request with the wrong "
                         f"byte range; delete the .part file and run the command again")
    length = response.headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else None  # a 200 sends the whole file


def _copy_body(response, part: Path, start: int, total: int | None, chunk: int, progress: bool) -> None:
    from tqdm import tqdm

    # A 200 answer restarts the file; a 206 appends to what is there.
    with open(part, "ab" if start else "wb") as handle, \
            tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                 desc=part.stem, disable=None if progress else True) as bar:
        for block in iter(lambda: response.read(chunk), b""):
            handle.write(block)
            bar.update(len(block))


def download_file(url: str, dest: Path, expected_size: int | None = None, progress: bool = True,
                  chunk: int = 1 << 20, timeout: float = 60) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a .part left by an earlier run."""
    check_url(url)
    dest = Path(dest)
    part = dest.with_suffix(dest.suffix + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.is_file() else 0
    try:
        try:
            response = _open(url, offset, timeout)
        except urllib.error.HTTPError as exc:
            if exc.code != 416 or not offset:
                raise
            part.unlink()  # the .part is not a prefix the server recognises: start again
            offset = 0
            response = _open(url, 0, timeout)
        with response:
            start, total = _start_and_total(response, offset)
            _check_space(dest.parent, (total or 0) - start)
            _copy_body(response, part, start, total, chunk, progress)
    except urllib.error.HTTPError as exc:
        raise ModelError(f"download of {url} failed (HTTP {exc.code} {exc.reason}); {MANUAL}") from None
    except urllib.error.URLError as exc:
        raise ModelError(f"download of {url} failed ({exc.reason}); {MANUAL}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise ModelError(f"download of {url} failed ({type(exc).__name__}: {exc}); {MANUAL}") from None
    size = part.stat().st_size
    for expected in {total, expected_size} - {None}:
        if size != expected:
            raise ModelError(f"download of {url} stopped at {size} of {expected} bytes; {MANUAL}")
    os.replace(part, dest)
    return dest


def _check_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise ResourceError(f"{folder} has {free / 2**20:.1f} MiB free but the download needs {needed / 2**20:.1f} "
                            "MiB more; free some space or download into another folder")


def verify_pinned(path: Path) -> bool | None:
    """Whether ``path`` has the sha256 pinned for its name; None when none is pinned."""
    from .keras_import import file_sha256

    expected = OFFICIAL_SHA256.get(path.name)
    return None if expected is None else file_sha256(path) == expected


def _intact_hd5(path: Path) -> bool:
    """An official .hd5 is intact when it has its pinned sha256, or (none pinned) reads completely."""
    from .keras_import import read_official_hd5

    pinned = verify_pinned(path)
    if pinned is not None:
        return pinned
    try:
        read_official_hd5(path)
    except ModelError:
        return False
    return True


def _remove_damaged(dest: Path) -> list[Path]:
    """Delete official .hd5 files in ``dest`` that are not intact, so that they are fetched again."""
    damaged = [path for path in official_hd5_files(dest).values() if not _intact_hd5(path)]
    for path in damaged:
        path.unlink()
    return damaged


def _safe_members(archive: zipfile.ZipFile, where: Path) -> list[zipfile.ZipInfo]:
    """The archive's members, refusing any that would land outside the unpack folder."""
    for info in archive.infolist():
        name = info.filename.replace("\\", "/")
        pure = PurePosixPath(name)
        if pure.is_absolute() or ".." in pure.parts or re.match(r"^[A-Za-z]:", name):
            raise ModelError(f"{where} holds an unsafe path {info.filename!r}; refusing to unpack it "
                             f"(it was deleted: download it again or from the official Zenodo record)")
    return archive.infolist()


def unpack_zip(zip_path: Path, dest: Path) -> None:
    """Unpack a zip into dest; a damaged or unsafe zip is deleted so a retry downloads it again."""
    staging = Path(tempfile.mkdtemp(dir=dest, prefix=".unpack-"))
    try:
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(staging, members=_safe_members(archive, zip_path))
        # Move the files into place only once all are whole, so no half-written .hd5 remains.
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            target = dest / path.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        zip_path.unlink(missing_ok=True)
        raise ModelError(f"{zip_path} is not a valid zip ({exc}); it was deleted: run the command again "
                         f"to download it afresh") from None
    except ModelError:
        zip_path.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def download_official_models(dest: Path | None = None, url: str | None = None,
                             progress: bool = True) -> list[Path]:
    """Fetch and unpack the official zip (unless intact .hd5 files are there), then import them.

    Damaged .hd5 files already there are deleted and fetched again; a zip or .hd5 whose sha256
    differs from the pinned one is deleted and refused. Returns the imported model JSONs in models_dir().
    """
    url = url or download_url()
    check_url(url)
    dest = Path(dest).expanduser() if dest is not None else original_models_dir()
    dest.mkdir(parents=True, exist_ok=True)
    for path in _remove_damaged(dest):
        log.warning("%s was damaged; it was deleted and is downloaded again", path)
    if not all(name in official_hd5_files(dest) for name in OFFICIAL_NAMES):
        zip_path = dest / ZIP_NAME
        if not zip_path.is_file():
            download_file(url, zip_path, progress=progress)
        if verify_pinned(zip_path) is False:
            zip_path.unlink()
            raise ModelError(f"the file from {url} is not the official {ZIP_NAME} (its sha256 differs); it was "
                             "deleted: download it from the official Zenodo record 7432763")
        unpack_zip(zip_path, dest)
        zip_path.unlink()  # 700 MiB that the unpacked files make redundant
        if not official_hd5_files(dest):
            raise ModelError(f"the downloaded archive holds no {SUBFOLDER}/deepEMhancer_*.hd5 files; "
                             f"check the download address {url}")
        damaged = _remove_damaged(dest)
        if damaged:
            raise ModelError(f"the archive from {url} holds damaged model files "
                             f"({', '.join(p.name for p in damaged)}); they were "
                             "deleted: run the command again, or download from the official Zenodo record 7432763")
    return import_models(dest)
