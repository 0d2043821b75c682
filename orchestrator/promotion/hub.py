"""The Hugging Face Hub side of promotion: auth, the champion in the repo, one atomic commit.

The token is whatever ``huggingface_hub`` finds (``HF_TOKEN``, then the login cache); this
module only asks whether there is one and never reads it into anything that is written.
``HF_ENDPOINT`` is honoured by ``huggingface_hub`` itself.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from ..errors import RUNTIME_EXIT, UserError
from .untrusted import check_adapter_weights, download_patterns

LOGIN_FIX = ("Fix: run `hf auth login` with a token that has write access, or set HF_TOKEN in "
             "the environment.")


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


@contextlib.contextmanager
def hub_errors(action: str, repo_id: str):
    """Turn the client's exceptions into one message that says what failed and what to do."""
    try:  # huggingface_hub 2.x speaks httpx2, 1.x httpx
        import httpx2 as httpx
    except ImportError:
        import httpx
    from huggingface_hub.errors import (HfHubHTTPError, HFValidationError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError)

    try:
        yield
    except HFValidationError as err:
        raise UserError(f"--repo-id {repo_id!r}: {err}. Fix: use 'owner/name'.") from None
    except RepositoryNotFoundError:
        raise UserError(f"while {action}: the repo {repo_id} was not found on {endpoint()}, or "
                        f"the token cannot see it (private repos need a token with read access). "
                        f"{LOGIN_FIX}") from None
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        detail = err.server_message or str(err).splitlines()[0]
        if status == 401:
            raise UserError(f"while {action}: the Hub at {endpoint()} refused the token (HTTP 401: "
                            f"{detail}): it is missing, invalid or expired. {LOGIN_FIX}") from None
        if status == 403:
            raise UserError(f"while {action}: the token has no write permission on {repo_id} "
                            f"(HTTP 403: {detail}). Fix: use a token with the 'write' role, or a "
                            f"fine-grained token allowed to write to the '{repo_id.split('/')[0]}' "
                            f"namespace.") from None
        if status in (409, 412):
            raise UserError(f"while {action}: {repo_id} changed on the Hub while promoting (HTTP "
                            f"{status}: {detail}); nothing was committed. Fix: run promote again, "
                            f"it compares against the new head.", exit_code=RUNTIME_EXIT) from None
        raise UserError(f"while {action}: the Hub at {endpoint()} failed (HTTP {status}: "
                        f"{detail}). Nothing was committed: a promotion is one atomic commit. "
                        f"Fix: run the same command again later.",
                        exit_code=RUNTIME_EXIT) from None
    except (httpx.TransportError, LocalEntryNotFoundError, ConnectionError) as err:
        raise UserError(f"while {action}: cannot reach the Hub at {endpoint()} "
                        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). "
                        f"Nothing was committed. Fix: check the network, or HF_ENDPOINT if you use "
                        f"a mirror, and run again.", exit_code=RUNTIME_EXIT) from None


class Hub:
    """One model repo on the Hub, as promotion sees it."""

    def __init__(self, repo_id: str):
        from huggingface_hub import HfApi

        self.repo_id = repo_id
        self.api = HfApi()

    @staticmethod
    def has_token() -> bool:
        from huggingface_hub import get_token

        return bool(get_token())

    def check_write_access(self) -> str:
        """Who the token belongs to; fails early for no token or a read-only token."""
        return self.check_access(write=True)

    def check_access(self, *, write: bool) -> str | None:
        """Who the token belongs to (None: no token, accepted only without ``write``).

        Raises:
            UserError: no token (with ``write``), a token the Hub refuses, or a read-only
                token (with ``write``).
        """
        if not self.has_token():
            if not write:
                return None
            raise UserError(f"promoting to {self.repo_id} needs a Hugging Face token and none was "
                            f"found (HF_TOKEN is unset and there is no login). {LOGIN_FIX}")
        with hub_errors("checking the token", self.repo_id):
            info = self.api.whoami()
        role = ((info.get("auth") or {}).get("accessToken") or {}).get("role")
        if write and role == "read":
            raise UserError(f"the token of {info.get('name')} is read-only, and promoting to "
                            f"{self.repo_id} needs write permission. {LOGIN_FIX}")
        return info.get("name", "")

    def head(self) -> tuple[str | None, list[str], bool | None]:
        """``(commit sha, files, private)`` of the main branch; ``(None, [], None)`` if no repo."""
        from huggingface_hub.errors import RepositoryNotFoundError

        with hub_errors("reading the repo", self.repo_id):
            try:
                info = self.api.model_info(self.repo_id)
            except RepositoryNotFoundError:
                if not self.has_token():
                    raise
                return None, [], None
        return info.sha, [s.rfilename for s in info.siblings or []], info.private

    def read_json(self, filename: str, revision: str) -> dict[str, Any] | None:
        from huggingface_hub import hf_hub_download

        with hub_errors(f"reading {filename}", self.repo_id):
            path = hf_hub_download(self.repo_id, filename, revision=revision)
        try:
            return json.loads(Path(path).read_text())
        except json.JSONDecodeError:
            return None

    def download(self, revision: str, files: list[str], *, allow_pickle: bool = False) -> Path:
        """The adapter files at ``revision`` (in the Hugging Face cache): safetensors, JSON and
        tokenizer files only, unless ``allow_pickle`` (see :mod:`orchestrator.promotion.untrusted`).

        Raises:
            UserError: the repo's adapter is pickle-only and ``allow_pickle`` is false.
        """
        from huggingface_hub import snapshot_download

        check_adapter_weights(files, f"{self.repo_id} (commit {revision[:12]})",
                              allow_pickle=allow_pickle)
        with hub_errors("downloading the current adapter", self.repo_id):
            return Path(snapshot_download(self.repo_id, revision=revision,
                                          **download_patterns(allow_pickle)))

    def push(self, bundle: Path, *, parent: str | None, private: bool, message: str,
             description: str):
        """Create the repo if needed and commit every bundle file in one commit."""
        from huggingface_hub import CommitOperationAdd

        with hub_errors("pushing", self.repo_id):
            if parent is None:
                self.api.create_repo(self.repo_id, private=private, exist_ok=True)
                parent = self.api.model_info(self.repo_id).sha
            operations = [CommitOperationAdd(path_in_repo=f.name, path_or_fileobj=str(f))
                          for f in sorted(bundle.iterdir()) if f.is_file()]
            return self.api.create_commit(self.repo_id, operations=operations,
                                          commit_message=message,
                                          commit_description=description,
                                          parent_commit=parent)

    def tag(self, name: str, revision: str, message: str) -> str:
        """Tag ``revision``; if ``name`` is taken by another commit, a suffixed name is used."""
        with hub_errors("tagging the commit", self.repo_id):
            refs = self.api.list_repo_refs(self.repo_id)
            tags = {t.name: t.target_commit for t in refs.tags}
            candidate, n = name, 1
            while candidate in tags and tags[candidate] != revision:
                n += 1
                candidate = f"{name}-{n}"
            if candidate not in tags:
                self.api.create_tag(self.repo_id, tag=candidate, revision=revision,
                                    tag_message=message)
        return candidate

    def commit_url(self, sha: str) -> str:
        return f"{endpoint()}/{self.repo_id}/commit/{sha}"
