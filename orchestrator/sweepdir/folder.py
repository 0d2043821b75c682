"""Reading a sweep dir after (or while) it runs: the files of the sweep-dir contract.

Everything that looks at a sweep from outside the driver (``promote``, ``generate``, later
``status`` and ``report``) goes through here, so a sweep dir that was moved or copied to
another machine still works: paths inside it are resolved relative to the dir itself.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from trainables.storage import is_uri

from ..errors import UserError
from .results import best_first
from .names import BASELINE, BEST, LEADERBOARD, PROGRESS, STATUS, SWEEP_YAML

if TYPE_CHECKING:
    from .remote import Mirror


_TEXT_COLUMNS = ("trial_id", "status", "error", "trial_name", "checkpoint_dir_name", "date",
                 "hostname", "node_ip")


def _number(text: str) -> Any:
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text else value


@dataclass
class SweepDir:
    path: Path
    config: dict[str, Any]
    baseline: dict[str, Any] | None = None
    best: dict[str, Any] | None = None
    remote: Mirror | None = None  # a sweep dir in cloud storage; ``path`` is its local copy
    _rows: list[dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.remote.uri.rsplit("/", 1)[-1] if self.remote else self.path.name

    @property
    def where(self) -> str:
        """The sweep dir as users name it: its path, or its URI."""
        return self.remote.uri if self.remote else str(self.path)

    def trial_folders(self) -> set[str]:
        """The ``trial_*`` folders of the sweep dir (in its storage, for a cloud one)."""
        names = self.remote.folders() if self.remote else {p.name for p in self.path.iterdir()}
        return {n for n in names if n.startswith("trial_")}

    def save(self) -> None:
        """Upload what a command wrote to a cloud sweep dir's local copy (nothing when local)."""
        if self.remote:
            self.remote.push()

    @property
    def metric(self) -> str:
        return self.config["search"]["metric"]

    @property
    def mode(self) -> str:
        from ..config.schema import reported_metrics

        scorers = (self.config.get("evaluation") or {}).get("scorers") or []
        return self.config["search"].get("mode") or reported_metrics(scorers).get(self.metric, "min")

    @property
    def share(self) -> bool:
        """Whether the sweep's metric is an accuracy-like share, compared in points."""
        from .results import is_share

        return is_share(self.metric, (self.config.get("evaluation") or {}).get("scorers"))

    @property
    def searched(self) -> list[str]:
        """The searched settings' dotted names (``lora.r``, ``training.learning_rate``...)."""
        status = self.status() or {}
        if status.get("searched"):
            return list(status["searched"])
        if self.best is not None:
            return list(self.best["config"])
        rows = self.leaderboard()
        return [k for k in (rows[0] if rows else {}) if "." in k]

    def status(self) -> dict[str, Any] | None:
        """``status.json``, written by the driver on every trial event (None before trials start)."""
        return _json(self.path / STATUS)

    def leaderboard(self) -> list[dict[str, Any]]:
        """One row per trial, best first: live from ``status.json`` (also while the sweep runs),
        else from ``leaderboard.csv``; [] before any trial has started."""
        if self._rows is None:
            status = self.status()
            if status is not None:
                self._rows = self._status_rows(status)
            elif (self.path / LEADERBOARD).is_file():
                with open(self.path / LEADERBOARD, newline="") as f:
                    self._rows = [{k: v if k in _TEXT_COLUMNS else _number(v)
                                   for k, v in row.items()} for row in csv.DictReader(f)]
            else:
                return []
        return self._rows

    def _status_rows(self, status: dict[str, Any]) -> list[dict[str, Any]]:
        metric = self.metric
        rows = []
        for t in status["trials"]:
            row = {"trial_id": t["trial_id"], "status": t["status"], **t["config"],
                   f"best_{metric}": t["best_value"], "best_step": t["best_step"],
                   "steps_run": t["steps_run"], "rung": t.get("rung"), "error": t["error"],
                   "retries": t.get("retries", 0), "subset_value": t.get("subset_value"),
                   **(t.get("task") or {})}
            rows.append(row)
        # Equal values rank by trial id, as on the live line and in the leaderboard; trials
        # without a value yet by what they are doing.
        order = {"running": 0, "paused": 1, "pending": 2}
        rows.sort(key=lambda r: (*best_first(r, metric=metric, mode=self.mode),
                                 0 if r[f"best_{metric}"] is not None
                                 else order.get(r["status"], 3), r["trial_id"]))
        return rows

    def history(self, trial_id: str) -> list[dict[str, Any]]:
        """A trial's reports (``progress.csv``), one dict per evaluation, in step order."""
        path = self.path / f"trial_{trial_id}" / PROGRESS
        if not path.is_file():
            return []
        with open(path, newline="") as f:
            rows = [{k: v if k in _TEXT_COLUMNS else _number(v) for k, v in row.items()}
                    for row in csv.DictReader(f)]
        return sorted((r for r in rows if isinstance(r.get("step"), int)), key=lambda r: r["step"])

    def best_checkpoint(self) -> Path:
        """The best trial's best checkpoint, found inside this sweep dir.

        Raises:
            UserError: no trial finished with a usable checkpoint.
        """
        best = self.require_best()
        recorded = Path(best["checkpoint_path"].split("://", 1)[-1])
        here = self.path / recorded.parent.name / recorded.name
        if self.remote and not (here / "adapter_config.json").is_file():
            self.remote.pull(under=f"{recorded.parent.name}/{recorded.name}")
        for candidate in (here, recorded):
            if (candidate / "adapter_config.json").is_file():
                return candidate
        raise UserError(f"the best checkpoint of {self.path} is missing: looked for "
                        f"{here}/adapter_config.json. Fix: copy the whole sweep dir, including "
                        f"its trial_* folders.")

    def require_best(self) -> dict[str, Any]:
        if self.best is None:
            raise UserError(f"{self.path} has no completed trial with a usable "
                            f"{self.metric} (no best.json). Fix: let the sweep finish, or look "
                            f"at leaderboard.csv and the trial errors to see why none succeeded.")
        return self.best


def _json(path: Path) -> dict | None:
    """A JSON file of the sweep dir, None when absent.

    Raises:
        UserError: it is there but not JSON (cut short by a full disk or a copy).
    """
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({getattr(err, 'msg', err)}); the file was cut "
                        f"short or changed by hand. Fix: restore it from a copy of the sweep "
                        f"dir.") from None


def _sweep_config(path: Path) -> dict:
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(f"{path}: not valid YAML ({first}); the sweep's resolved config was cut "
                        f"short or changed by hand. Fix: restore it from a copy of the sweep "
                        f"dir.") from None
    missing = [k for k in ("search",) if not isinstance(config, dict)
               or not isinstance(config.get(k), dict)]
    if missing:
        raise UserError(f"{path}: not a sweep's resolved config (no {', '.join(missing)} "
                        f"section); it was cut short or changed by hand. Fix: restore it from a "
                        f"copy of the sweep dir.")
    return config


def open_sweep(path: str | Path, *, files: str = "all") -> SweepDir:
    """Open a sweep dir written by ``qlora-sweep run``: a folder, or a cloud URI, whose files
    are downloaded first (``files="all"``: all but the checkpoints; ``"top"``: only those
    directly in it, enough for ``status``).

    Raises:
        UserError: the path does not exist or is not a sweep dir.
    """
    remote = None
    if is_uri(str(path)):
        from .remote import Mirror

        remote = Mirror(str(path))
        try:
            found = remote.exists() and remote.pull(top_only=files == "top") >= 0
        except OSError as err:
            raise UserError(f"SWEEP_DIR {path}: cannot be read ({err}). Fix: check the URI "
                            f"and this machine's credentials for it (for S3: AWS_PROFILE or "
                            f"AWS_ACCESS_KEY_ID, and AWS_ENDPOINT_URL for an S3-compatible "
                            f"store).") from None
        if not found:
            raise UserError(f"SWEEP_DIR {path}: does not exist. Fix: give the URI that "
                            f"`qlora-sweep run` printed as 'sweep dir' (under storage.path).")
        p = remote.local
    else:
        p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"SWEEP_DIR {path}: does not exist. Fix: give the folder that "
                        f"`qlora-sweep run` printed as 'sweep dir' (under storage.path).")
    if not (p / SWEEP_YAML).is_file():
        raise UserError(f"SWEEP_DIR {path}: not a sweep dir (it has no sweep.yaml). Fix: give "
                        f"the folder that `qlora-sweep run` printed as 'sweep dir'.")
    config = _sweep_config(p / SWEEP_YAML)
    return SweepDir(path=p.resolve(), config=config, baseline=_json(p / BASELINE),
                    best=_json(p / BEST), remote=remote)
