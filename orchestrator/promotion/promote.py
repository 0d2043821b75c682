"""``qlora-sweep promote``: bundle the winner, judge it against the champion, push it.

The flow, in the order that loses nothing: check the token (before any work), write the
bundle into the sweep dir, read the repo's head, evaluate champion and challenger on the
sweep's eval data, decide, then push everything in one commit with ``parent_commit`` set to
the head that was judged (so a push that raced another one fails instead of overwriting it),
and tag it with the sweep's name. Every attempt is recorded in ``promotions.jsonl``, a failed
one too (``"verdict": "failed"`` and why), never with a token in it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

from trainables.spec import TrialSpec

from ..config.schema import REPO_ID_RULE, parse_improvement, valid_repo_id
from .gate import decide, judge  # noqa: F401  (judge: the means-only rule, also public here)
from ..errors import UserError
from ..sweepdir.folder import SweepDir, open_sweep
from ..sweepdir.names import PROMOTIONS, SWEEP_YAML
from ..sweepdir.results import strict_dumps

log = logging.getLogger(__name__)


def _evaluate(spec: TrialSpec, adapter_dirs: list[Path], resources: dict[str, float]
              ) -> list[dict]:
    """Evaluate the adapters, with the base model loaded once: on a Ray worker when Ray is up
    (the sweep's, or ``promote --address``: a cluster's GPU), which gets the adapters' files
    and the eval rows with the task, else in this process."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        from trainables.entry import evaluate_adapter_files

        files = [{f.name: f.read_bytes() for f in Path(d).iterdir() if f.is_file()}
                 for d in adapter_dirs]
        task = ray.remote(num_cpus=resources["cpu"],
                          num_gpus=resources["gpu"])(evaluate_adapter_files)
        return ray.get(task.remote(spec, files))
    from trainables.trial import evaluate_adapters

    return evaluate_adapters(spec, [str(d) for d in adapter_dirs])


def _eval_gpu(gpu: float | str) -> float:
    """GPUs for an evaluation task: ``auto`` takes a whole GPU where the cluster has one."""
    if gpu != "auto":
        return gpu
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return 1.0 if ray.cluster_resources().get("GPU", 0) else 0.0
    return 0.0


def _same_base(ours: dict[str, Any], theirs: dict[str, Any] | None) -> bool:
    if not theirs:
        return True
    if ours["name_or_path"] != theirs.get("name_or_path"):
        return False
    return not (ours.get("revision") and theirs.get("revision")
                and ours["revision"] != theirs["revision"])


def _champion_base(summary: dict | None, adapter_config: dict | None) -> dict[str, Any] | None:
    if summary and summary.get("base_model"):
        return summary["base_model"]
    if adapter_config and adapter_config.get("base_model_name_or_path"):
        return {"name_or_path": adapter_config["base_model_name_or_path"],
                "revision": adapter_config.get("revision")}
    return None


def _sweep_spec(sweep: SweepDir) -> TrialSpec | None:
    """The spec the sweep recorded (``spec.json``) with its tokenized data (``tokenized/``):
    the eval rows the trials were judged on and the custom scorers' source, so promote works
    from the sweep dir alone, on any machine. None for a sweep dir without them (written
    before they were kept, or with a searched seed): pre-flight reads the data again then."""
    from ..sweepdir import spec_file
    from ..sweepdir.names import TOKENIZED
    from ..sweepdir.tokenized import Unreadable, load

    spec = spec_file.load(sweep.path)
    if spec is None:
        return None
    if sweep.remote is not None:
        sweep.remote.pull(under=TOKENIZED)
    try:
        prepared = load(sweep.path)
    except Unreadable as err:
        log.info(f"note: the sweep's tokenized data cannot be read ({err}); reading the data "
                 f"files again")
        return None
    return None if prepared is None else spec.replace(prepared_data=prepared)


def _record(sweep: SweepDir, entry: dict[str, Any]) -> None:
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **entry}
    with open(sweep.path / PROMOTIONS, "a") as f:
        f.write(redact(strict_dumps(entry)) + "\n")
    sweep.save()  # a cloud sweep dir gets the record and the bundle too


# What a Hugging Face token looks like: never written into a record, whatever said it.
_TOKEN_PATTERN = re.compile(r"\bhf_[A-Za-z0-9_]{6,}")


def redact(text: str) -> str:
    """``text`` without the token in use (wherever a server or library may have echoed it) nor
    anything shaped like a Hugging Face token."""
    try:
        from huggingface_hub import get_token

        token = get_token()
    except Exception:  # no hub client, or an unreadable login cache: nothing to hide then
        token = None
    if token:
        text = text.replace(token, "<token>")
    return _TOKEN_PATTERN.sub("<token>", text)


def _attempts(sweep: SweepDir) -> int:
    path = sweep.path / PROMOTIONS
    return sum(1 for _ in path.open()) if path.is_file() else 0


def promote(sweep_path: str | Path, *, repo_id: str | None = None, private: bool | None = None,
            min_improvement: float | str | None = None, force: bool = False,
            dry_run: bool = False, allow_pickle: bool = False) -> dict[str, Any]:
    """Bundle the sweep's winner and, with a repo id, promote it; returns the recorded verdict.

    Unset options come from the sweep's ``promote`` section. The adapter already in the repo is
    read as safetensors only; one stored only as a pickle is refused unless ``allow_pickle``.
    Every attempt on a sweep dir that could be opened is recorded in ``promotions.jsonl``,
    failed ones with why.

    Raises:
        UserError: anything the user can fix; nothing is pushed then.
    """
    sweep = open_sweep(sweep_path)
    before = _attempts(sweep)
    options = {"repo_id": repo_id or (sweep.config.get("promote") or {}).get("repo_id"),
               "dry_run": dry_run, "force": force,
               "min_improvement": min_improvement}
    try:
        return _promote(sweep, repo_id=repo_id, private=private,
                        min_improvement=min_improvement, force=force, dry_run=dry_run,
                        allow_pickle=allow_pickle)
    except (Exception, KeyboardInterrupt) as err:
        if _attempts(sweep) == before:  # not recorded by the step that refused
            why = (err.render().removeprefix("error: ") if isinstance(err, UserError)
                   else "interrupted (Ctrl-C)" if isinstance(err, KeyboardInterrupt)
                   else f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[-1]}")
            _record(sweep, {**{k: v for k, v in options.items() if v not in (None, False)},
                            "verdict": "failed", "reason": why})
        raise


def _promote(sweep: SweepDir, *, repo_id: str | None, private: bool | None,
             min_improvement: float | str | None, force: bool, dry_run: bool,
             allow_pickle: bool) -> dict[str, Any]:
    from .bundle import build_bundle
    from ..config.loading import load_config
    from ..config.preflight import preflight

    best = sweep.require_best()
    section = sweep.config.get("promote") or {}
    repo_id = repo_id or section.get("repo_id")
    private = section.get("private", False) if private is None else private
    min_improvement = section.get("min_improvement", 0.0) if min_improvement is None else min_improvement
    try:
        parse_improvement(min_improvement)
    except ValueError as err:
        raise UserError(f"--min-improvement {min_improvement!r}: {err}.") from None
    hub = None
    if repo_id:
        if not valid_repo_id(repo_id):
            raise UserError(f"--repo-id {repo_id!r}: must be {REPO_ID_RULE}. Fix: e.g. "
                            f"acme/pricing-qlora.")
        from .hub import Hub

        hub = Hub(repo_id)
        # Before any work (the bundle, the evaluation): a push needs a token with write
        # access; a dry run pushes nothing, so a read-only token, or none for a public repo,
        # will do, but a token the Hub refuses stops it here too.
        user = hub.check_access(write=not dry_run)
        log.info(f"Hub: {hub.api.endpoint} as {user or 'anonymous (no token)'}")

    cfg, derived = load_config(sweep.path / SWEEP_YAML, existing=True)
    spec = _sweep_spec(sweep) or preflight(cfg, derived)
    bundle = build_bundle(sweep, spec, derived, repo_id=repo_id)
    summary = json.loads((bundle / "sweep_summary.json").read_text())
    size = sum(f.stat().st_size for f in bundle.iterdir())
    log.info(f"bundle: {bundle} ({size / 1e6:.2f} MB: adapter, tokenizer, model card, summary)")
    if hub is None:
        log.info(f"no --repo-id (and no promote.repo_id in the sweep), so nothing is "
                 f"{'compared or ' if dry_run else ''}pushed: the bundle is all. To push it: "
                 f"`hf auth login` (or set HF_TOKEN), then")
        log.info(f"  qlora-sweep promote {sweep.where} --repo-id <owner>/<name> [--private]")
        entry = {"verdict": "bundled", "bundle": str(bundle), "trial_id": best["trial_id"]}
        _record(sweep, entry)
        return entry
    return _against_champion(sweep, hub, bundle, summary, spec, cfg, private=private,
                             min_improvement=min_improvement, force=force, dry_run=dry_run,
                             allow_pickle=allow_pickle)


def _against_champion(sweep, hub, bundle: Path, summary: dict, spec: TrialSpec, cfg, *,
                      private: bool, min_improvement, force: bool, dry_run: bool,
                      allow_pickle: bool) -> dict[str, Any]:

    best = sweep.require_best()
    metric, mode = sweep.metric, sweep.mode
    if not metric.startswith(("eval_", "task_")):
        log.info(f"the sweep ranks by {metric}, which has no value on eval data; champion and "
                 f"challenger are compared by eval_loss")
        metric, mode = "eval_loss", "min"
    entry: dict[str, Any] = {"repo_id": hub.repo_id, "trial_id": best["trial_id"],
                             "metric": metric, "mode": mode,
                             "min_improvement": min_improvement, "dry_run": dry_run}
    head, files, is_private = hub.head()
    entry["head_before"] = head
    champion_summary = None
    if head is None:
        log.info(f"{hub.repo_id} does not exist yet: it will be created "
                 f"({'private' if private else 'public'})")
    elif "adapter_config.json" not in files:
        log.info(f"{hub.repo_id} holds no adapter yet (head {head[:12]})")
    else:
        if "sweep_summary.json" in files:
            champion_summary = hub.read_json("sweep_summary.json", head)
        ours = summary["winner"]["adapter_sha256"]
        if champion_summary and champion_summary.get("winner", {}).get("adapter_sha256") == ours:
            tag = hub.tag(sweep.name, head, f"qlora-sweep {sweep.name}, trial {best['trial_id']}")
            log.info(f"{hub.repo_id} already holds this adapter (trial {best['trial_id']} of "
                     f"{sweep.name}, commit {head[:12]}, tag {tag}): nothing new to push")
            entry.update(verdict="already promoted", commit=head, tag=tag,
                         url=hub.commit_url(head))
            _record(sweep, entry)
            return entry
    if head is not None and private and is_private is False:
        log.info(f"note: {hub.repo_id} exists and is public; --private applies only when "
                 f"creating it")

    trial = spec.for_trial(best["config"])
    resources = {"cpu": cfg.resources.cpu, "gpu": _eval_gpu(cfg.resources.gpu)}
    champion_value = None
    wins, reason = True, "no adapter in the repo yet"
    if head is not None and "adapter_config.json" in files:
        try:
            champion_dir = hub.download(head, files, allow_pickle=allow_pickle)
        except UserError:
            entry.update(verdict="refused: the adapter in the repo is a pickle")
            _record(sweep, entry)
            raise
        theirs = _champion_base(champion_summary, _read(champion_dir / "adapter_config.json"))
        ours = summary["base_model"]
        if not _same_base(ours, theirs):
            text = (f"the adapter in {hub.repo_id} is for base model {theirs.get('name_or_path')} "
                    f"(revision {theirs.get('revision')}), this sweep's for "
                    f"{ours['name_or_path']} (revision {ours['revision']}), so they cannot be "
                    f"compared")
            if not force:
                entry.update(verdict="refused: different base model")
                _record(sweep, entry)
                raise UserError(f"{text}. Fix: promote to another repo, or pass --force to "
                                f"replace it anyway (the old adapter stays in the repo's history).")
            log.info(f"{text}; --force: replacing it without a comparison")
            wins, reason = True, "forced over an adapter for a different base model"
        else:
            log.info(f"evaluating the current adapter ({head[:12]}) and trial "
                     f"{best['trial_id']} on the sweep's eval data ...")
            champion, challenger = _evaluate(trial, [champion_dir, bundle], resources)
            champion_value, challenger_value = champion[metric], challenger[metric]
            entry.update(champion={"commit": head, "value": champion_value,
                                   "sweep": (champion_summary or {}).get("sweep", {}).get("name"),
                                   "trial_id": (champion_summary or {}).get("winner", {}).get("trial_id")},
                         challenger_value=challenger_value)
            wins, reason, paired = decide(challenger, champion, metric=metric, mode=mode,
                                          min_improvement=min_improvement,
                                          share=sweep.share and metric == sweep.metric)
            log.info(f"  champion   {metric} {champion_value:.4f}")
            log.info(f"  challenger {metric} {challenger_value:.4f} (trial {best['trial_id']})")
            if paired is not None:
                entry["paired"] = paired
                log.info(f"  {paired['sentence']}")
    if "challenger_value" not in entry:
        entry["challenger_value"] = best["value"] if metric == sweep.metric else None
    verdict = "promote" if wins else "keep the champion"
    if not wins and force:
        verdict = "promote (forced)"
    log.info(f"verdict: {verdict}: {reason}")
    if not (wins or force):
        entry.update(verdict="kept champion", reason=reason)
        _record(sweep, entry)
        return entry
    if dry_run:
        log.info(f"--dry-run: nothing pushed. Without it, {bundle} would be committed to "
                 f"{hub.repo_id} and tagged {sweep.name}.")
        entry.update(verdict="would promote (dry run)", reason=reason)
        _record(sweep, entry)
        return entry
    value = entry["challenger_value"]
    message = (f"qlora-sweep: promote trial {best['trial_id']} of sweep {sweep.name}"
               + (f" ({metric} {value:.4f})" if value is not None else ""))
    description = (f"Sweep {sweep.name}, trial {best['trial_id']}, checkpoint at step "
                   f"{best['step']}.\n\n{metric}: challenger {_f(value)}, champion "
                   f"{_f(champion_value)} (previous head {head or 'none'}).\nVerdict: {verdict}: "
                   f"{reason}.")
    log.info(f"pushing {len(list(bundle.iterdir()))} files to {hub.repo_id} in one commit ...")
    info = hub.push(bundle, parent=head, private=private, message=message,
                    description=description)
    tag = hub.tag(sweep.name, info.oid, message)
    log.info(f"promoted: {info.commit_url or hub.commit_url(info.oid)} (tag {tag})")
    entry.update(verdict="promoted", reason=reason, commit=info.oid, tag=tag,
                 url=info.commit_url or hub.commit_url(info.oid))
    _record(sweep, entry)
    return entry


def _f(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None
