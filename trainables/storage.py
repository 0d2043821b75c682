"""The sweep's storage as pyarrow sees it: a local folder or a cloud URI (``s3://``, ``gs://``).

Ray persists results and checkpoints through the same pyarrow filesystems, so whatever Ray can
write to, the few files a trial writes itself (``diverged.txt``) and the disk budget can use
too. Credentials and endpoints come from the usual places (``AWS_*``, ``AWS_ENDPOINT_URL``,
``GOOGLE_APPLICATION_CREDENTIALS``...), never from the config.
"""

from __future__ import annotations

import os
import posixpath


def is_uri(path: str) -> bool:
    """A cloud (or other non-local) URI such as ``s3://bucket/sweeps``."""
    return "://" in str(path) and not str(path).startswith("file://")


def resolve(location: str | os.PathLike):
    """``(filesystem, path)`` for a local path or a URI (the path without its scheme)."""
    from pyarrow import fs

    location = str(location)
    if is_uri(location):
        filesystem, path = fs.FileSystem.from_uri(location)
        return filesystem, path.rstrip("/")
    return fs.LocalFileSystem(), os.path.abspath(os.path.expanduser(location.removeprefix("file://")))


def join(location: str, *parts: str) -> str:
    """``location/part/...`` for a path or a URI (a query string, if any, stays at the end)."""
    base, sep, query = str(location).partition("?")
    joined = posixpath.join(base.rstrip("/"), *parts) if is_uri(base) else os.path.join(base, *parts)
    return joined + sep + query


def tree_bytes(location: str | os.PathLike) -> int:
    """Bytes of the files under ``location`` (0 when it does not exist)."""
    from pyarrow.fs import FileSelector, FileType

    if not is_uri(str(location)):
        return _local_bytes(location)
    filesystem, path = resolve(location)
    try:
        infos = filesystem.get_file_info(FileSelector(path, recursive=True, allow_not_found=True))
    except FileNotFoundError:  # a folder deleted while listed (Ray pruning a checkpoint)
        return 0
    return sum(i.size or 0 for i in infos if i.type == FileType.File)


def _local_bytes(path: str | os.PathLike) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:  # deleted while walking (Ray pruning a checkpoint)
                pass
    return total


def read_file(filesystem, path: str) -> str | None:
    """The text of ``path`` on ``filesystem``, or None when it does not exist."""
    try:
        with filesystem.open_input_stream(path) as f:
            return f.read().decode()
    except FileNotFoundError:
        return None


def write_file(filesystem, path: str, text: str) -> None:
    """Write (or replace) ``path`` whole: object stores cannot append."""
    filesystem.create_dir(posixpath.dirname(path), recursive=True)
    with filesystem.open_output_stream(path) as f:
        f.write(text.encode())


def read_text(location: str) -> str | None:
    """The text of the file at a path or URI, or None when it does not exist."""
    return read_file(*resolve(location))


def write_text(location: str, text: str) -> None:
    """Write (or replace) the file at a path or URI."""
    write_file(*resolve(location), text)
