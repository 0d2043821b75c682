"""Tests of tests/hub_server.py, driven by the real huggingface_hub client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from huggingface_hub import (CommitOperationAdd, CommitOperationDelete, HfApi, constants, hf_hub_download,
                             snapshot_download)
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from tests.hub_server import HubServer

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parent.parent
TOKENS = {"hf_write": "write", "hf_read": "read"}
REPO = "acme/adapter"
WEIGHTS = os.urandom(1_500_000)  # > 1 MB binary, not valid utf-8
CONFIG = json.dumps({"r": 8, "lora_alpha": 16}).encode()
README = b"---\nlicense: apache-2.0\ntags:\n- peft\n---\n# adapter\n"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    # constants are read when huggingface_hub is imported: keep the developer's login out of these tests
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    with HubServer(tokens=TOKENS, user="acme") as server:
        yield server


@pytest.fixture
def api(hub):
    return HfApi(endpoint=hub.url, token="hf_write")


def _push_initial(api: HfApi, tmp_path: Path):
    weights = tmp_path / "adapter_model.safetensors"
    weights.write_bytes(WEIGHTS)
    api.create_repo(REPO, private=True)
    return api.create_commit(REPO, commit_message="Add adapter", commit_description="trial 3, r=8", operations=[
        CommitOperationAdd("adapter_model.safetensors", weights),  # from a path
        CommitOperationAdd("adapter_config.json", CONFIG),  # from bytes
        CommitOperationAdd("README.md", README),
    ])


def _snapshot(hub, tmp_path, revision=None, token="hf_write"):
    return Path(snapshot_download(REPO, revision=revision, endpoint=hub.url, token=token,
                                  cache_dir=tmp_path / "cache"))


def test_whoami_and_tokens(hub):
    me = HfApi(endpoint=hub.url).whoami(token="hf_write")
    assert me["name"] == "acme" and me["auth"]["accessToken"]["role"] == "write"
    assert HfApi(endpoint=hub.url).whoami(token="hf_read")["auth"]["accessToken"]["role"] == "read"
    with pytest.raises(HfHubHTTPError, match="Invalid user token") as err:
        HfApi(endpoint=hub.url).whoami(token="hf_bogus")
    assert err.value.response.status_code == 401


def test_create_repo_private_and_exist_ok(hub, api):
    url = api.create_repo(REPO, private=True)
    assert url.repo_id == REPO and url.startswith(hub.url)
    info = api.repo_info(REPO)
    assert info.private is True and info.sha == hub.head(REPO)
    assert [c["title"] for c in hub.commits(REPO)] == ["initial commit"]  # like the Hub: .gitattributes only
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(REPO)
    assert err.value.response.status_code == 409
    assert api.create_repo(REPO, exist_ok=True).repo_id == REPO
    with pytest.raises(HfHubHTTPError, match="permission") as err:
        HfApi(endpoint=hub.url, token="hf_read").create_repo("acme/other")
    assert err.value.response.status_code == 403
    api.create_repo("acme/public")
    assert api.model_info("acme/public").private is False
    assert api.repo_exists(REPO) and not api.repo_exists("acme/missing")
    anonymous = HfApi(endpoint=hub.url, token=False)
    assert not anonymous.repo_exists(REPO) and anonymous.repo_exists("acme/public")
    with pytest.raises(RepositoryNotFoundError) as err:
        anonymous.model_info(REPO)
    assert err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError, match="namespace") as err:
        api.create_repo("someone-else/repo")
    assert err.value.response.status_code == 403


def test_commit_list_tag_download(hub, api, tmp_path):
    info = _push_initial(api, tmp_path)
    first = info.oid
    assert len(first) == 40 and hub.head(REPO) == first and info.repo_url.repo_id == REPO
    files = {".gitattributes", "adapter_model.safetensors", "adapter_config.json", "README.md"}
    assert set(api.list_repo_files(REPO)) == files
    meta = api.model_info(REPO, files_metadata=True)
    assert meta.sha == first and meta.private is True
    assert {s.rfilename: s.size for s in meta.siblings}["adapter_model.safetensors"] == len(WEIGHTS)
    assert api.file_exists(REPO, "adapter_config.json") and not api.file_exists(REPO, "nope.bin")
    assert ("POST", f"/api/models/{REPO}/preupload/main") in hub.requests

    api.create_tag(REPO, tag="trial-3", tag_message="best trial")
    refs = api.list_repo_refs(REPO)
    assert [(t.name, t.target_commit) for t in refs.tags] == [("trial-3", first)]
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", first)]
    assert hub.tags(REPO) == {"trial-3": first}
    with pytest.raises(HfHubHTTPError) as err:
        api.create_tag(REPO, tag="trial-3")
    assert err.value.response.status_code == 409

    snap = _snapshot(hub, tmp_path)
    assert (snap / "adapter_model.safetensors").read_bytes() == WEIGHTS
    assert (snap / "adapter_config.json").read_bytes() == CONFIG and (snap / "README.md").read_bytes() == README

    second = api.create_commit(REPO, commit_message="Update adapter", parent_commit=first, operations=[
        CommitOperationAdd("adapter_config.json", b'{"r": 16}'),
        CommitOperationAdd("logs/metrics.json", b"{}"),
        CommitOperationDelete("README.md"),
    ]).oid
    assert hub.head(REPO) == second != first
    assert set(api.list_repo_files(REPO)) == files - {"README.md"} | {"logs/metrics.json"}
    assert {e.path for e in api.list_repo_tree(REPO)} == {".gitattributes", "adapter_model.safetensors",
                                                          "adapter_config.json", "logs"}
    assert set(api.list_repo_files(REPO, revision="trial-3")) == files
    assert api.model_info(REPO, revision="trial-3").sha == first
    assert api.model_info(REPO, revision=first).sha == first

    at_tag = _snapshot(hub, tmp_path, revision="trial-3")
    assert (at_tag / "adapter_config.json").read_bytes() == CONFIG and (at_tag / "README.md").exists()
    at_main = _snapshot(hub, tmp_path)
    assert (at_main / "adapter_config.json").read_bytes() == b'{"r": 16}' and not (at_main / "README.md").exists()
    by_sha = hf_hub_download(REPO, "adapter_config.json", revision=first, endpoint=hub.url, token="hf_read",
                             cache_dir=tmp_path / "cache2")
    assert Path(by_sha).read_bytes() == CONFIG

    commits = api.list_repo_commits(REPO)
    assert [c.commit_id for c in commits[:2]] == [second, first] and commits[1].message == "trial 3, r=8"
    assert [c["title"] for c in hub.commits(REPO)] == ["initial commit", "Add adapter", "Update adapter"]
    assert hub.commits(REPO)[1]["files"]["adapter_model.safetensors"] == WEIGHTS
    assert sum(1 for m, p in hub.requests if m == "POST" and p.endswith("/commit/main")) == 2

    api.delete_tag(REPO, tag="trial-3")
    assert api.list_repo_refs(REPO).tags == [] and hub.tags(REPO) == {}
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="trial-3")


def test_stale_parent_commit_is_rejected(hub, api, tmp_path):
    first = _push_initial(api, tmp_path).oid
    second = api.upload_file(path_or_fileobj=b"1", path_in_repo="a.txt", repo_id=REPO, parent_commit=first).oid
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit(REPO, commit_message="stale", parent_commit=first,
                          operations=[CommitOperationAdd("b.txt", b"2")])
    assert err.value.response.status_code == 412
    assert hub.head(REPO) == second and not api.file_exists(REPO, "b.txt")


def test_failed_commit_leaves_head_unchanged(hub, api, tmp_path):
    first = _push_initial(api, tmp_path).oid
    hub.fail_next("commit", status=500)
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit(REPO, commit_message="boom", operations=[CommitOperationAdd("x.txt", b"x")])
    assert err.value.response.status_code == 500
    assert hub.head(REPO) == first and len(hub.commits(REPO)) == 2
    # the failure was injected once: the same push now goes through
    api.create_commit(REPO, commit_message="retry", operations=[CommitOperationAdd("x.txt", b"x")])
    assert hub.head(REPO) != first and hub.commits(REPO)[-1]["files"]["x.txt"] == b"x"
    hub.fail_next(r"^GET /api/models/.*/refs$", status=503)
    with pytest.raises(HfHubHTTPError):
        api.list_repo_refs(REPO)
    api.list_repo_refs(REPO)


def test_auth_errors(hub, api, tmp_path):
    first = _push_initial(api, tmp_path).oid
    op = [CommitOperationAdd("x.txt", b"x")]
    with pytest.raises(RepositoryNotFoundError) as err:  # what the client raises for the Hub's 401 too
        HfApi(endpoint=hub.url, token=False).create_commit(REPO, commit_message="anon", operations=op)
    assert err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=hub.url, token=False).create_repo("acme/anon")
    assert err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError, match="permission") as err:
        HfApi(endpoint=hub.url, token="hf_read").create_commit(REPO, commit_message="read", operations=op)
    assert err.value.response.status_code == 403 and not isinstance(err.value, RepositoryNotFoundError)
    with pytest.raises(HfHubHTTPError, match="Invalid credentials") as err:
        HfApi(endpoint=hub.url, token="hf_bogus").model_info(REPO)
    assert err.value.response.status_code == 401
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(REPO, "adapter_config.json", endpoint=hub.url, token=False, cache_dir=tmp_path / "c")
    assert hub.head(REPO) == first
    # a read token may read the private repo
    assert HfApi(endpoint=hub.url, token="hf_read").model_info(REPO).sha == first


def test_separate_process_with_env(hub, tmp_path):
    """What CLI tests do: HF_ENDPOINT / HF_TOKEN in the environment, plain HfApi() and snapshot_download."""
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        from huggingface_hub import HfApi, snapshot_download
        api = HfApi()
        assert api.whoami()["name"] == "acme"
        api.create_repo("acme/cli", private=True)
        # read token + exist_ok: the client falls back to repo_info (it needs HF_ENDPOINT for this path)
        assert HfApi(token="hf_read").create_repo("acme/cli", exist_ok=True).repo_id == "acme/cli"
        api.upload_file(path_or_fileobj=b"weights", path_in_repo="adapter_model.safetensors", repo_id="acme/cli")
        folder = Path(snapshot_download("acme/cli"))
        assert (folder / "adapter_model.safetensors").read_bytes() == b"weights", folder
        print("OK", api.model_info("acme/cli").sha)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_ENDPOINT=hub.url, HF_TOKEN="hf_write", HF_HOME=str(tmp_path / "child_home"),
               HF_HUB_DISABLE_TELEMETRY="1")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["OK", hub.head("acme/cli")]
