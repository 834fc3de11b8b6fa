"""Official-weight download against a local HTTP server: resume, size checks, safe unpacking, import."""
from __future__ import annotations

import io
import socket
import zipfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from deepemhancer.errors import ModelError
from deepemhancer.models import download, keras_import, registry
from deepemhancer.models.store import load_network, read_metadata
from local_http import serving_with
from official_hd5 import write_official_hd5

NAMES = ("tightTarget", "wideTarget", "highRes", "masked")


class Served:
    """What the test server sends, and the Range headers it was asked for."""

    def __init__(self, payload: bytes, mode: str = "range"):
        self.payload = payload
        self.mode = mode  # "range", "ignore_range" (always 200) or "truncate" (body cut in half)
        self.ranges: list[str | None] = []


def _handler(served: Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 5  # a stuck client cannot hold a handler thread for long

        def do_GET(self):
            asked = self.headers.get("Range")
            served.ranges.append(asked)
            body, total = served.payload, len(served.payload)
            if asked and served.mode == "range":
                start = int(asked.removeprefix("bytes=").split("-")[0])
                if start >= total:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{total}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = body[start:]
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if served.mode == "truncate" else body)

        def log_message(self, *args):
            pass

    return Handler


def serving(served: Served):
    """A local HTTP server in a thread, shut down when the block ends."""
    return serving_with(_handler(served), "deepEMhancerModels_tf2.zip")


def official_zip(tmp_path: Path, names=NAMES) -> bytes:
    """The official archive's layout, with tiny models."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for seed, name in enumerate(names):
            path = tmp_path / f"deepEMhancer_{name}.hd5"
            norm = "inputNormalizationWithMask_2" if name == "masked" else "inputNormalization_3"
            write_official_hd5(path, seed=seed, norm_function=norm)
            archive.write(path, f"production_checkpoints/{path.name}")
    return buffer.getvalue()


def zip_with(member: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("production_checkpoints/readme.txt", "fine")
        archive.writestr(zipfile.ZipInfo(member), "evil")
    return buffer.getvalue()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def test_download_unpack_import_into_the_original_folder(tmp_path, home, monkeypatch):
    served = Served(official_zip(tmp_path))
    with serving(served) as url:
        monkeypatch.setenv("DEEPEMHANCER_DOWNLOAD_URL", url)
        paths = download.download_official_models(progress=False)
        assert len(served.ranges) == 1
        conversions = []
        monkeypatch.setattr(keras_import, "import_hd5", lambda *a, **k: conversions.append(a))
        again = download.download_official_models(progress=False)
        assert len(served.ranges) == 1  # unpacked files present: no second download
        assert conversions == []  # and the same files are already imported
    original = home / ".local" / "share" / "deepEMhancerModels"
    assert sorted(p.name for p in (original / "production_checkpoints").iterdir()) == sorted(
        f"deepEMhancer_{n}.hd5" for n in NAMES)
    assert not (original / download.ZIP_NAME).exists()
    assert sorted(paths) == sorted(again) == sorted(registry.models_dir() / f"{n}.json" for n in NAMES)
    listed = {(i.name, i.origin) for i in registry.list_models()}
    assert {(n, "installed") for n in NAMES} <= listed
    for path in paths:
        network, metadata = load_network(path)
        assert metadata["normalization"] == ("masked" if path.stem == "masked" else "noise")
        assert sum(p.numel() for p in network.parameters()) > 0
    assert registry.resolve_model() == registry.models_dir() / "tightTarget.json"


def test_resume_asks_for_the_rest_and_gives_identical_bytes(tmp_path):
    payload = bytes(range(256)) * 400
    dest = tmp_path / "file.zip"
    (tmp_path / "file.zip.part").write_bytes(payload[: len(payload) // 2])
    served = Served(payload)
    with serving(served) as url:
        assert download.download_file(url, dest, expected_size=len(payload), progress=False, chunk=1000) == dest
    assert served.ranges == [f"bytes={len(payload) // 2}-"]
    assert dest.read_bytes() == payload
    assert not (tmp_path / "file.zip.part").exists()


def test_server_ignoring_range_restarts_the_file(tmp_path):
    payload = b"abcdefgh" * 1000
    dest = tmp_path / "file.zip"
    (tmp_path / "file.zip.part").write_bytes(b"X" * 3000)  # a wrong prefix: must not survive
    served = Served(payload, mode="ignore_range")
    with serving(served) as url:
        download.download_file(url, dest, progress=False)
    assert served.ranges == ["bytes=3000-"]
    assert dest.read_bytes() == payload


def test_part_longer_than_the_file_restarts(tmp_path):
    payload = b"0123456789" * 100
    dest = tmp_path / "file.zip"
    (tmp_path / "file.zip.part").write_bytes(b"Y" * 5000)
    served = Served(payload)
    with serving(served) as url:
        download.download_file(url, dest, progress=False)
    assert served.ranges == ["bytes=5000-", None]
    assert dest.read_bytes() == payload


def test_truncated_body_keeps_the_part_for_a_resume(tmp_path):
    payload = b"z" * 10000
    dest = tmp_path / "file.zip"
    served = Served(payload, mode="truncate")
    with serving(served) as url:
        with pytest.raises(ModelError, match="run the command again to resume") as err:
            download.download_file(url, dest, progress=False)
        assert "\n" not in str(err.value)
        assert not dest.exists()
        assert (tmp_path / "file.zip.part").stat().st_size == 5000
        served.mode = "range"
        download.download_file(url, dest, progress=False)
    assert served.ranges[-1] == "bytes=5000-"
    assert dest.read_bytes() == payload


def test_size_other_than_expected_is_refused(tmp_path):
    dest = tmp_path / "file.zip"
    with serving(Served(b"q" * 100)) as url:
        with pytest.raises(ModelError, match="100 of 101 bytes"):
            download.download_file(url, dest, expected_size=101, progress=False)
    assert not dest.exists()


def test_corrupt_zip_is_deleted_and_a_retry_downloads_again(tmp_path):
    dest = tmp_path / "models"
    served = Served(b"PK\x03\x04 but not really a zip" * 50)
    with serving(served) as url:
        with pytest.raises(ModelError, match="not a valid zip") as err:
            download.download_official_models(dest, url=url, progress=False)
        assert "\n" not in str(err.value)
        assert not (dest / download.ZIP_NAME).exists()
        served.payload = official_zip(tmp_path, names=("tightTarget",))
        paths = download.download_official_models(dest, url=url, progress=False)
    assert len(served.ranges) == 2
    assert paths == [registry.models_dir() / "tightTarget.json"]
    assert read_metadata(paths[0])["normalization"] == "noise"


@pytest.mark.parametrize("member", ["../evil.hd5", "/tmp/evil_absolute.hd5", "a/../../evil.hd5"])
def test_path_traversal_member_is_refused(tmp_path, member):
    dest = tmp_path / "deep" / "models"
    with serving(Served(zip_with(member))) as url:
        with pytest.raises(ModelError, match="unsafe path"):
            download.download_official_models(dest, url=url, progress=False)
    assert not (tmp_path / "deep" / "evil.hd5").exists() and not (tmp_path / "evil.hd5").exists()
    assert not (dest / download.ZIP_NAME).exists()
    assert not (dest / "production_checkpoints").exists()  # nothing of the archive was unpacked


def test_archive_without_models_is_an_error(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("other/readme.txt", "no models here")
    with serving(Served(buffer.getvalue())) as url:
        with pytest.raises(ModelError, match="holds no"):
            download.download_official_models(tmp_path / "models", url=url, progress=False)


def test_unreachable_server_is_a_one_line_error(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/deepEMhancerModels_tf2.zip"
    with pytest.raises(ModelError) as err:
        download.download_file(url, tmp_path / "file.zip", progress=False, timeout=5)
    message = str(err.value)
    assert "\n" not in message
    assert url in message and "deepemhancer models import" in message
    assert not (tmp_path / "file.zip").exists()


def test_http_error_is_a_one_line_error(tmp_path):
    class Missing(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(404)

        def log_message(self, *args):
            pass

    with serving_with(Missing, "gone.zip") as url, pytest.raises(ModelError, match="HTTP 404"):
        download.download_file(url, tmp_path / "gone.zip", progress=False)


def test_default_url_and_override(monkeypatch):
    monkeypatch.delenv("DEEPEMHANCER_DOWNLOAD_URL", raising=False)
    assert download.download_url() == download.ZENODO_URL
    assert "records/7432763" in download.ZENODO_URL and download.ZIP_NAME in download.ZENODO_URL
    monkeypatch.setenv("DEEPEMHANCER_DOWNLOAD_URL", "http://127.0.0.1:9/x.zip")
    assert download.download_url() == "http://127.0.0.1:9/x.zip"
