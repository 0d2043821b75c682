"""Sweep dirs in cloud storage (``storage.path = s3://bucket/sweeps``).

Ray writes the trials' results and checkpoints to the bucket itself, from whichever node runs
them. The driver's own files (``sweep.yaml``, ``status.json``, ``optuna.journal``, TensorBoard's
baseline run, ``leaderboard.csv``, ``best.json``, reports, the promoted bundle) are written to
a local copy of the sweep dir, the *mirror*, and uploaded from it: while trials run (at most
``mirror_callback.PUSH_PERIOD_S`` apart), and when the sweep ends or is interrupted. The commands that read a
sweep (``status``, ``report``, ``promote``, ``resume``, ``tensorboard``) first download it into
the mirror, leaving the checkpoints out (one is fetched when it is needed).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shutil
from pathlib import Path

from trainables.storage import resolve
from trainables.tiny_llama import cache_root

from .names import TOKENIZED

_NEVER_PUSHED = (".lock",)  # Optuna's journal lock, held only while it writes
_CHUNK = 8 << 20  # bytes per read and write when copying
_ALWAYS_FETCH = 1 << 20  # files smaller than this are downloaded again on every pull


def mirror_dir(uri: str) -> Path:
    """The local copy of the sweep dir at ``uri``: under the cache, named after the URI."""
    base = uri.partition("?")[0]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", base.split("://", 1)[-1]).strip("_")[-80:]
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    return cache_root() / "sweeps" / f"{readable}-{digest}"


def _is_checkpoint(relative: str) -> bool:
    return any(part.startswith("checkpoint_") for part in relative.split("/")[:-1])


def _only_on_request(relative: str) -> bool:
    """Left out of a pull of the whole sweep dir: checkpoints, and the tokenized data (large,
    and only ``resume`` reads it, asking for that folder)."""
    return _is_checkpoint(relative) or relative.startswith(f"{TOKENIZED}/")


class Mirror:
    """A sweep dir at a cloud ``uri`` and its local copy ``local``."""

    def __init__(self, uri: str, local: Path | None = None):
        self.uri = uri.rstrip("/")
        self.fs, self.root = resolve(self.uri)
        self.local = local or mirror_dir(self.uri)
        # What the two sides agree on: relative path -> (size, mtime_ns) of the local file, and
        # of the stored one when it was last downloaded.
        self._synced: dict[str, tuple[int, int]] = {}
        self._pulled: dict[str, tuple[int, int | None]] = {}

    def exists(self) -> bool:
        from pyarrow.fs import FileType

        return self.fs.get_file_info(self.root).type != FileType.NotFound

    def folders(self) -> set[str]:
        """The names of the folders directly in the sweep dir in storage."""
        from pyarrow.fs import FileSelector, FileType

        return {i.base_name for i in self.fs.get_file_info(FileSelector(self.root))
                if i.type == FileType.Directory}

    def _local_files(self):
        for folder, _, files in os.walk(self.local):
            for name in files:
                path = Path(folder, name)
                rel = path.relative_to(self.local).as_posix()
                if not name.endswith(_NEVER_PUSHED) and not _is_checkpoint(rel):
                    yield rel, path

    def push(self) -> int:
        """Upload the local files that changed since they were last pushed or pulled; returns
        how many. Ray's own files are never in the mirror unless pulled, so never pushed back."""
        count = 0
        for rel, path in self._local_files():
            try:
                st = path.stat()
            except FileNotFoundError:  # replaced while walking (status.json is written atomically)
                continue
            stamp = (st.st_size, st.st_mtime_ns)
            if self._synced.get(rel) == stamp:
                continue
            remote = posixpath.join(self.root, rel)
            self.fs.create_dir(posixpath.dirname(remote), recursive=True)
            with open(path, "rb") as src, self.fs.open_output_stream(remote) as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
            self._synced[rel] = stamp
            count += 1
        return count

    def pull(self, *, top_only: bool = False, under: str | None = None) -> int:
        """Download the sweep dir's files (all but checkpoints and ``tokenized/``;
        ``top_only``: the files directly in it; ``under``: one folder of it, a checkpoint
        included), skipping large ones unchanged since this mirror last downloaded them;
        returns how many."""
        from pyarrow.fs import FileSelector, FileType

        base = posixpath.join(self.root, under) if under else self.root
        infos = self.fs.get_file_info(FileSelector(base, recursive=not top_only,
                                                   allow_not_found=True))
        count = 0
        for info in infos:
            if info.type != FileType.File:
                continue
            rel = posixpath.relpath(info.path, self.root)
            if under is None and _only_on_request(rel):
                continue
            dest = self.local / rel
            stored = (info.size, info.mtime_ns)
            # Object stores date files to the second: a small file (status.json) can change
            # with the same size and date, so small files are always fetched again.
            if dest.is_file() and info.size >= _ALWAYS_FETCH and self._pulled.get(rel) == stored:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.part")
            with self.fs.open_input_stream(info.path) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)  # an adapter can be gigabytes
            tmp.replace(dest)
            st = dest.stat()
            self._synced[rel], self._pulled[rel] = (st.st_size, st.st_mtime_ns), stored
            count += 1
        return count
