"""Writing files whole or not at all: the one recipe every writer of the engine and the plugin uses.

A file is written under a hidden temporary name beside its target, which names the writing
process (``temporary_path``), flushed to disk, and renamed onto the target: a reader sees the old
file or the whole new one, never a part, and a failure leaves the target untouched and no
temporary behind. Temporaries left by a killed process are swept by the next writer of the same
target (``sweep_stale_temporaries``). ``atomic_folder`` does the same for a folder of files.
"""
from __future__ import annotations

import contextlib
import glob
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Iterator

_STALE_AGE = 24 * 3600  # s: a temporary file this old is left over even if its writer's id is reused


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary name beside ``path`` to write to (by any means: ``open``, ``savefig``, a library's
    ``save_file``); when the block ends without an exception the file is flushed to disk and renamed
    onto ``path``, otherwise it is removed and the exception goes on. The caller's errors are its
    own: an ``OSError`` (disk full, permissions) is not translated here."""
    path = Path(path)
    temporary = temporary_path(path)
    try:
        yield temporary
        _flush_to_disk(temporary)  # so that the rename never exposes an empty file after a crash
        os.replace(temporary, path)
    except BaseException:
        remove_quietly(temporary)
        raise


def write_atomic(path: str | os.PathLike, content: bytes | str) -> Path:
    """Write ``content`` (text as UTF-8) to ``path`` through ``atomic_path``; returns the path."""
    path = Path(path)
    payload = content.encode("utf-8") if isinstance(content, str) else content
    with atomic_path(path) as temporary, open(temporary, "xb") as handle:
        handle.write(payload)
    return path


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """A new hidden folder beside ``folder`` to fill; when the block ends without an exception it
    replaces ``folder`` (an existing one is moved aside first and removed after), otherwise it is
    removed. ``folder`` must not be '.' (resolve it first)."""
    folder = Path(folder)
    work = folder.with_name(f".{folder.name}.{secrets.token_hex(4)}.part")
    work.mkdir()
    try:
        yield work
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        if not folder.exists():
            os.replace(work, folder)
            return
        old = folder.with_name(f".{folder.name}.{secrets.token_hex(4)}.old")
        os.replace(folder, old)
        os.replace(work, folder)
        shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def temporary_path(path: str | os.PathLike) -> Path:
    """A hidden name beside ``path`` for writing it, ending like it (so it is a map name too) and
    naming this process, so that a leftover is recognised."""
    path = Path(path)
    return path.with_name(f".{os.getpid()}-{secrets.token_hex(4)}.{path.name}")


def sweep_stale_temporaries(path: str | os.PathLike) -> None:
    """Delete temporary files for ``path`` (``temporary_path``'s naming, nested too) left by a
    process that has ended (killed, or a machine that stopped) or older than a day."""
    path = Path(path)
    pattern = re.compile(r"\.(\d+)-[0-9a-f]{8}\.(?:\.\d+-[0-9a-f]{8}\.)*" + re.escape(path.name))
    for candidate in path.parent.glob(f".*{glob.escape(path.name)}"):
        match = pattern.fullmatch(candidate.name)
        if match and (not _process_alive(int(match.group(1))) or _age(candidate) > _STALE_AGE):
            remove_quietly(candidate)


def remove_quietly(path: Path) -> None:
    """Best-effort cleanup: a read-only or vanished folder must not hide the error being reported."""
    with contextlib.suppress(OSError):
        Path(path).unlink()


def _flush_to_disk(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists but belongs to someone else
    return True


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0
