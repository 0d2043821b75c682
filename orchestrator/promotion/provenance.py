"""Where a promoted adapter came from: base model, data, libraries and this project's commit."""

from __future__ import annotations

import hashlib
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = ("qlora-sweep", "torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate",
             "datasets", "ray", "optuna", "huggingface_hub")


def library_versions() -> dict[str, str | None]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def project_commit() -> dict[str, Any]:
    """The git commit of this project's checkout (and whether it had local changes), if any."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10,
                               check=True).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": sha, "dirty": dirty}


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_identity(source: dict[str, Any] | None) -> dict[str, Any] | None:
    """A data source as a reader can recognise it: a file's name and content hash, or a Hub
    dataset's id, split and the fingerprint ``datasets`` computes from its content."""
    if source is None:
        return None
    if source.get("identity"):  # recorded when the sweep ran (spec.json): what trials read
        return source["identity"]
    if source.get("local", True):
        path = Path(source["path"])
        rows = sum(1 for line in path.open("rb") if line.strip()) if path.suffix == ".jsonl" else None
        return {"file": path.name, "sha256": file_sha256(path), "rows": rows}
    from trainables.compat.datasets_private import fingerprint
    from trainables.data import load_source

    ds = load_source(source)
    return {"hub_id": source["path"], "subset": source.get("subset"), "split": source["split"],
            "fingerprint": fingerprint(ds), "rows": len(ds)}


def base_model_identity(model: dict[str, Any]) -> dict[str, Any]:
    """What an adapter needs to be loaded again: the base model, its revision, quantization.

    The builtin model's revision is its recipe hash, so two different builds never compare
    equal.
    """
    from trainables import tiny_llama

    revision = model.get("revision")
    if tiny_llama.is_builtin(model["name_or_path"]):
        revision = tiny_llama.recipe_key()
    return {"name_or_path": model["name_or_path"], "revision": revision,
            "quantization": model["quantization"],
            "trust_remote_code": model.get("trust_remote_code", False)}
