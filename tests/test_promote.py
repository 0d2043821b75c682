"""Promotion end to end against a real HTTP server speaking the Hub API (tests/hub_server.py),
with the real huggingface_hub client pointed at it through HF_ENDPOINT.

Two real one-trial sweeps are run once: ``weak`` (a tiny learning rate, barely better than the
base model) and ``strong`` (which promotes itself at the end of ``run``). Each test works on
its own copy of them and its own repo.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from orchestrator.sweepdir.folder import open_sweep

from .conftest import ForkedCli, run_small_sweeps
from .hub_server import HubServer

WRITE, READ = "hf_sentinel_write_token_8c1f", "hf_sentinel_read_token_77aa"
PROMPT = "How much does this cost? A steel desk, quality 3 of 5."


@pytest.fixture(scope="module")
def hub():
    with HubServer(tokens={WRITE: "write", READ: "read"}, user="acme") as server:
        yield server


@pytest.fixture(scope="module")
def hub_env(hub, tmp_path_factory):
    home = tmp_path_factory.mktemp("hf-home")
    return {"HF_ENDPOINT": hub.url, "HF_TOKEN": WRITE, "HF_HOME": str(home),
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_ENABLE_HF_TRANSFER": None}


@pytest.fixture(scope="module")
def cli(hub_env, tmp_path_factory):
    """The CLI, each command in a fresh process forked from one that imported torch and the
    rest once, with the Hub's environment (tests/cli_server.py)."""
    with ForkedCli(tmp_path_factory.mktemp("cli"), hub_env) as forked:
        yield forked


@pytest.fixture(scope="module")
def sweeps(tiny_model_dir, hub_env, tmp_path_factory):
    root = tmp_path_factory.mktemp("promote-sweeps")
    # Ray's own files (session logs, worker output, runtime env) of the promoting run go to a
    # folder of this test, so they can be searched for the token too. Short: Ray's socket
    # paths under it must stay within the 107-character limit of Unix sockets.
    ray_tmp = tempfile.mkdtemp(prefix="qs-ray-", dir="/tmp")
    try:
        made = run_small_sweeps(root, {
            "weak": dict(learning_rate=1e-5, max_steps=10),
            "strong": dict(learning_rate=3e-3, env={**hub_env, "RAY_TMPDIR": ray_tmp},
                           promote={"repo_id": "acme/auto-promoted", "private": True})})
        weak, strong = made["weak"], made["strong"]
        yield {"weak": weak, "strong": strong, "strong_log": (root / "strong.log").read_text(),
               "ray_tmp": Path(ray_tmp), "hf_home": Path(hub_env["HF_HOME"])}
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def copy(sweeps, name: str, tmp_path: Path) -> Path:
    dest = tmp_path / name
    shutil.copytree(sweeps[name], dest)
    return dest


def promote(cli, sweep: Path, *args: str, env: dict):
    proc = cli("promote", str(sweep), *args, env=env, timeout=600)
    return proc, proc.stdout + proc.stderr


def records(sweep: Path) -> list[dict]:
    return [json.loads(line) for line in (sweep / "promotions.jsonl").read_text().splitlines()]


def test_bundle_and_model_card_without_a_repo(cli, sweeps, hub_env, tmp_path):
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    sweep = copy(sweeps, "weak", tmp_path)  # its config names no repo
    proc, out = promote(cli, sweep, env={**hub_env, "HF_TOKEN": None})
    assert proc.returncode == 0, out
    assert "--repo-id" in out and "hf auth login" in out  # says how to push it
    bundle = sweep / "promoted"
    names = {p.name for p in bundle.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "README.md",
            "sweep_summary.json", "training_curve.png"} <= names
    assert not names & {"optimizer.pt", "scheduler.pt", "trainer_state.json", "training_args.bin"}

    card = ModelCard.load(bundle / "README.md")
    meta = card.data.to_dict()
    assert meta["library_name"] == "peft" and meta["pipeline_tag"] == "text-generation"
    assert {"qlora", "qlora-sweep"} <= set(meta["tags"])
    assert "base_model" not in meta  # builtin:tiny-llama is not a Hub model
    name, results = model_index_to_eval_results(meta["model-index"])
    summary = json.loads((bundle / "sweep_summary.json").read_text())
    loss = next(r for r in results if r.metric_type == "loss")
    assert loss.metric_value == pytest.approx(summary["winner"]["value"], rel=1e-5)
    assert "PeftModel" not in card.text or "qlora-sweep generate" in card.text
    assert "| **this adapter**" in card.text and "base model without adapter" in card.text
    assert "training_curve.png" in card.text
    # What was scored, in words a reader can trust: the 40 eval rows the loss was computed on
    # (data.max_eval_samples), not the file's row count; a one-trial sweep without early
    # stopping says so; no Python "None" in the prose.
    baseline = json.loads((sweep / "baseline.json").read_text())
    assert f"`pricing_eval.jsonl`, {baseline['eval_samples']} examples scored of its" in card.text
    assert "1 trial searched by random without early stopping" in card.text
    assert "1 trials" not in card.text and "none early stopping" not in card.text
    assert "None" not in card.text.replace("quantization_config=None", "")
    assert results[0].metric_name.endswith("the sweep's objective")  # what picked the winner

    best = json.loads((sweep / "best.json").read_text())
    assert summary["winner"]["trial_id"] == best["trial_id"]
    assert summary["base_model"]["name_or_path"] == "builtin:tiny-llama"
    assert summary["base_model"]["revision"]  # the recipe hash
    assert len(summary["trials"]) == 1 and summary["sweep"]["search_space"]
    assert summary["training"]["seed"] == 42 and summary["sweep"]["search_seed"] == 0
    from orchestrator.promotion.provenance import file_sha256

    data = Path(__file__).resolve().parent.parent / "examples/data/pricing_train.jsonl"
    assert summary["data"]["train"] == {"file": data.name, "sha256": file_sha256(data), "rows": 1600}
    assert summary["data"]["prompt_suffix"] == "\n"
    assert summary["libraries"]["peft"] and summary["project"]["commit"]
    assert str(tmp_path) not in (bundle / "sweep_summary.json").read_text()  # no local paths
    assert json.loads((bundle / "adapter_config.json").read_text())[
        "base_model_name_or_path"] == "builtin:tiny-llama"
    assert records(sweep)[-1]["verdict"] == "bundled"


def test_auto_promotion_at_the_end_of_run(sweeps, hub):
    log = sweeps["strong_log"]
    assert "verdict: promote" in log and "promoted: " in log, log[-3000:]
    commits = hub.commits("acme/auto-promoted")
    assert commits[-1]["title"].startswith("qlora-sweep: promote trial")
    assert "strong" in commits[-1]["title"]
    assert hub.tags("acme/auto-promoted") == {"strong": commits[-1]["sha"]}
    # The token was in the run's environment; it is in none of the files the run wrote: the
    # sweep dir (results, TensorBoard runs, checkpoints, the bundle and its card), Ray's
    # session folder (logs of the driver, the workers and the runtime env), the HF home.
    searched = 0
    for folder in (sweeps["strong"], sweeps["ray_tmp"], sweeps["hf_home"]):
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink() and not path.is_socket():
                assert WRITE.encode() not in path.read_bytes(), path
                searched += 1
    assert searched > 100 and any(sweeps["ray_tmp"].rglob("*.log"))
    assert any(sweeps["strong"].rglob("events.out.tfevents.*"))
    assert (sweeps["strong"] / "promoted" / "README.md").is_file()
    for content in commits[-1]["files"].values():
        assert WRITE.encode() not in content


def _logits(adapter_dir: Path, model_dir: Path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                               bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=quant,
                                                dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    ids = AutoTokenizer.from_pretrained(model_dir)(PROMPT + "\n", return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits


def test_champion_challenger_round_trip(cli, sweeps, hub, hub_env, tiny_model_dir, tmp_path):
    import torch
    from huggingface_hub import snapshot_download

    repo = "acme/pricing-qlora"
    weak, strong = copy(sweeps, "weak", tmp_path), copy(sweeps, "strong", tmp_path)

    # The first promotion creates the (private) repo: one commit, tagged with the sweep.
    proc, out = promote(cli, weak, "--repo-id", repo, "--private", env=hub_env)
    assert proc.returncode == 0, out
    assert "does not exist yet" in out and f"{hub.url}/{repo}/commit/" in out
    first = hub.head(repo)
    assert hub.tags(repo) == {"weak": first}
    assert len(hub.commits(repo)) == 2  # the repo's initial commit + ours

    # What is on the Hub loads with PEFT and computes what the trial's checkpoint computes.
    snap = Path(snapshot_download(repo, endpoint=hub.url, token=WRITE,
                                  cache_dir=tmp_path / "dl"))
    checkpoint = open_sweep(weak).best_checkpoint()
    assert str(checkpoint).startswith(str(weak))
    assert torch.equal(_logits(snap, tiny_model_dir), _logits(checkpoint, tiny_model_dir))

    # A much better challenger replaces it, after both are evaluated on the same data.
    proc, out = promote(cli, strong, "--repo-id", repo, env=hub_env)
    assert proc.returncode == 0, out
    assert "champion   eval_loss" in out and "challenger eval_loss" in out
    second = hub.head(repo)
    assert second != first and hub.tags(repo) == {"weak": first, "strong": second}
    rec = records(strong)[-1]
    assert rec["verdict"] == "promoted" and rec["champion"]["commit"] == first
    assert rec["challenger_value"] < rec["champion"]["value"]
    assert WRITE not in (strong / "promotions.jsonl").read_text()

    # A worse challenger: nothing pushed, the head unchanged, both values printed and recorded.
    weak_again = copy(sweeps, "weak", tmp_path / "again")
    proc, out = promote(cli, weak_again, "--repo-id", repo, env=hub_env)
    assert proc.returncode == 0, out
    assert "verdict: keep the champion" in out
    assert hub.head(repo) == second
    assert records(weak_again)[-1]["verdict"] == "kept champion"

    # The same winner twice: no new commit.
    commits_before = len(hub.commits(repo))
    proc, out = promote(cli, strong, "--repo-id", repo, env=hub_env)
    assert proc.returncode == 0, out
    assert "nothing new to push" in out
    assert len(hub.commits(repo)) == commits_before

    # A local bundle and the Hub repo generate the same completion.
    remote = cli("generate", repo, PROMPT, env=hub_env)
    local = cli("generate", str(strong / "promoted"), PROMPT, env=hub_env)
    assert remote.returncode == 0 and local.returncode == 0, remote.stderr + local.stderr
    assert remote.stdout == local.stdout and "$" in remote.stdout


def test_min_improvement_and_dry_run(cli, sweeps, hub, hub_env, tmp_path):
    repo = "acme/threshold"
    weak, strong = copy(sweeps, "weak", tmp_path), copy(sweeps, "strong", tmp_path)
    proc, out = promote(cli, strong, "--repo-id", repo, "--dry-run", env=hub_env)
    assert proc.returncode == 0, out
    assert "--dry-run: nothing pushed" in out and hub.head(repo) is None
    assert promote(cli, weak, "--repo-id", repo, env=hub_env)[0].returncode == 0
    head = hub.head(repo)
    # Strong beats weak by a lot, but not by 10000 %: kept.
    proc, out = promote(cli, strong, "--repo-id", repo, "--min-improvement", "10000%", env=hub_env)
    assert proc.returncode == 0 and "keep the champion" in out and hub.head(repo) == head
    proc, out = promote(cli, strong, "--repo-id", repo, "--min-improvement", "0.01", "--dry-run",
                        env=hub_env)
    assert "verdict: promote" in out and "--dry-run" in out and hub.head(repo) == head
    proc, out = promote(cli, strong, "--repo-id", repo, "--min-improvement", "lots", env=hub_env)
    assert proc.returncode == 2 and "--min-improvement" in out and "Traceback" not in out


def test_different_base_model_is_refused_unless_forced(cli, sweeps, hub, hub_env, tmp_path):
    from huggingface_hub import CommitOperationAdd, HfApi

    repo = "acme/other-base"
    strong = copy(sweeps, "strong", tmp_path)
    bundle = strong / "promoted"
    summary = json.loads((bundle / "sweep_summary.json").read_text())
    summary["base_model"] = {"name_or_path": "meta-llama/Llama-3.2-1B", "revision": None}
    summary["winner"]["adapter_sha256"] = "0" * 64
    api = HfApi(endpoint=hub.url, token=WRITE)
    api.create_repo(repo)
    api.create_commit(repo, commit_message="someone else's adapter", operations=[
        CommitOperationAdd("adapter_config.json", str(bundle / "adapter_config.json")),
        CommitOperationAdd("adapter_model.safetensors", str(bundle / "adapter_model.safetensors")),
        CommitOperationAdd("sweep_summary.json", json.dumps(summary).encode())])
    head = hub.head(repo)
    proc, out = promote(cli, strong, "--repo-id", repo, env=hub_env)
    assert proc.returncode == 2 and "meta-llama/Llama-3.2-1B" in out and "--force" in out
    assert "Traceback" not in out and hub.head(repo) == head
    proc, out = promote(cli, strong, "--repo-id", repo, "--force", env=hub_env)
    assert proc.returncode == 0, out
    assert hub.head(repo) != head


def test_hub_failures_leave_the_repo_unchanged(cli, sweeps, hub, hub_env, tmp_path):
    repo = "acme/flaky"
    weak, strong = copy(sweeps, "weak", tmp_path), copy(sweeps, "strong", tmp_path)
    assert promote(cli, weak, "--repo-id", repo, env=hub_env)[0].returncode == 0
    head = hub.head(repo)

    hub.fail_next("commit", status=500)  # create_commit is not retried by the client
    proc, out = promote(cli, strong, "--repo-id", repo, env=hub_env)
    assert proc.returncode == 1 and "HTTP 500" in out and "Nothing was committed" in out, out
    assert "Traceback" not in out and hub.head(repo) == head
    assert (strong / "promoted" / "adapter_model.safetensors").is_file()  # nothing lost locally

    proc, out = promote(cli, strong, "--repo-id", repo, env={**hub_env, "HF_TOKEN": READ})
    assert proc.returncode == 2 and "read-only" in out and hub.head(repo) == head

    proc, out = promote(cli, strong, "--repo-id", repo, env={**hub_env, "HF_TOKEN": "hf_revoked"})
    assert proc.returncode == 2 and "401" in out and "hf auth login" in out

    # The run after the outage goes through.
    assert promote(cli, strong, "--repo-id", repo, env=hub_env)[0].returncode == 0
    assert hub.head(repo) != head
    # Every attempt is recorded, the failed ones with why; no token is written.
    attempts = [r for r in records(strong) if r.get("repo_id") == repo]
    assert [r["verdict"] for r in attempts] == ["failed", "failed", "failed", "promoted"]
    assert "HTTP 500" in attempts[0]["reason"] and "read-only" in attempts[1]["reason"]
    assert "401" in attempts[2]["reason"]
    text = (strong / "promotions.jsonl").read_text()
    assert WRITE not in text and READ not in text and "hf_revoked" not in text


def test_no_token_fails_before_any_work(cli, sweeps, hub, hub_env, tmp_path):
    strong = copy(sweeps, "strong", tmp_path)
    shutil.rmtree(strong / "promoted")
    requests = len(hub.requests)
    proc, out = promote(cli, strong, "--repo-id", "acme/no-token",
                        env={**hub_env, "HF_TOKEN": None})
    assert proc.returncode == 2 and "needs a Hugging Face token" in out and "HF_TOKEN" in out
    assert not (strong / "promoted").exists() and len(hub.requests) == requests
    assert records(strong)[-1]["verdict"] == "failed"  # the refused attempt is recorded
    assert "needs a Hugging Face token" in records(strong)[-1]["reason"]
    # A dry run checks the token first too: one the Hub refuses stops it before the bundle.
    proc, out = promote(cli, strong, "--repo-id", "acme/no-token", "--dry-run",
                        env={**hub_env, "HF_TOKEN": "hf_revoked_dry_run"})
    assert proc.returncode == 2 and "401" in out and not (strong / "promoted").exists()
    assert "hf_revoked_dry_run" not in (strong / "promotions.jsonl").read_text()


@pytest.mark.parametrize("args, message", [
    (["--repo-id", "acme/bad--name"], "--repo-id 'acme/bad--name'"),
    (["--repo-id", "a/b/c"], "--repo-id 'a/b/c'"),
])
def test_invalid_repo_id(cli, sweeps, hub_env, tmp_path, args, message):
    proc, out = promote(cli, copy(sweeps, "strong", tmp_path), *args, env=hub_env)
    assert proc.returncode == 2 and message in out and "Traceback" not in out


def test_bad_sweep_dirs_and_adapters(cli, sweeps, hub_env, tmp_path):
    proc, out = promote(cli, tmp_path / "missing", env=hub_env)
    assert proc.returncode == 2 and "does not exist" in out
    proc, out = promote(cli, tmp_path, env=hub_env)
    assert proc.returncode == 2 and "not a sweep dir" in out
    unfinished = copy(sweeps, "weak", tmp_path)
    (unfinished / "best.json").unlink()
    proc, out = promote(cli, unfinished, env=hub_env)
    assert proc.returncode == 2 and "no completed trial" in out
    proc = cli("generate", str(tmp_path), PROMPT, env=hub_env)
    assert proc.returncode == 2 and "not an adapter" in proc.stderr
    proc = cli("generate", "acme/does-not-exist", PROMPT, env=hub_env)
    assert proc.returncode == 2 and "not found" in proc.stderr and "Traceback" not in proc.stderr
