"""A small, in-memory, Hub-compatible HTTP server for tests (standard library only).

The real ``huggingface_hub`` client talks to it when pointed at ``HubServer.url`` (``HfApi(endpoint=url)``,
``endpoint=`` on the download helpers, or ``HF_ENDPOINT=url`` in a child process's environment).

Implemented (model repos only; ``{repo}`` is ``namespace/name``, ``{rev}`` a branch, tag or full commit sha):

    GET    /api/whoami-v2                          user name, token role (``auth.accessToken.role``)
    POST   /api/repos/create                       private/public; 409 (with ``url``) if it exists
    DELETE /api/repos/delete
    POST   /api/validate-yaml                      always valid (called by create_commit for README.md)
    GET    /api/models/{repo}[/revision/{rev}]     repo_info/model_info: sha, siblings (+blobs), private, tags
    GET    /api/models/{repo}/tree/{rev}[/{path}]  list_repo_tree / list_repo_files (recursive or not)
    GET    /api/models/{repo}/refs                 list_repo_refs (branches, tags)
    GET    /api/models/{repo}/commits/{rev}        list_repo_commits (newest first, one page)
    POST   /api/models/{repo}/preupload/{rev}      every file is "regular" => content comes base64 in the commit
    POST   /api/models/{repo}/commit/{branch}      atomic ndjson commit (file/deletedFile/deletedFolder);
                                                   ``parentCommit`` checked (412 if the branch moved)
    POST   /api/models/{repo}/tag/{rev}            create_tag (409 if it exists);  DELETE .../tag/{tag}
    HEAD/GET /{repo}/resolve/{rev}/{path}          downloads: X-Repo-Commit, ETag (git blob sha1),
                                                   Content-Length, single byte Range

Not implemented: datasets/spaces, branches other than ``main`` (no create_branch), PRs, repo settings,
paths-info, LFS/xet. The server never answers "lfs" in preupload and never sends xet headers, so the client never
transfers through hf_xet or LFS. Like the real Hub, a new repo starts with an "initial commit" (``.gitattributes``).

Auth: ``tokens`` maps bearer token -> "read" | "write"; every token belongs to ``user`` (member of ``orgs``).
Unknown token: 401 "Invalid credentials in Authorization header". No token on a private/missing repo or on a
repo write endpoint: 401 + ``X-Error-Code: RepoNotFound`` (the client raises ``RepositoryNotFoundError``, as it
does for the real Hub). Read token on a write endpoint: 403 with a "permission" message (``HfHubHTTPError``).
Missing revision/file: 404 ``RevisionNotFound`` / ``EntryNotFound``.

Test helpers: ``fail_next(name_or_regex, status=500, times=1)``, ``requests`` (list of (method, path)),
``head(repo)``, ``commits(repo)``, ``tags(repo)``, ``stop()``. Note: the client retries 408/429/500/502/503/504
(1 s, 2 s, 4 s... back-off, 5 retries) on preupload, tree/commit listings and, with hf_xet installed, on the commit
POST of ``upload_folder`` (its pipelined uploader); ``create_commit``/``upload_file``, create_repo, refs, tags and
resolve are not retried. To fail a push for good in one shot, inject a non-retried status such as 501.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

GITATTRIBUTES = b"".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n".encode()
    for pattern in ("*.bin", "*.ckpt", "*.gz", "*.h5", "*.onnx", "*.pt", "*.pth", "*.safetensors", "*.zip")
)
_R = r"(?P<repo>[^/]+/[^/]+)"
_NAMED_FAILURES = {
    "commit": r"^POST /api/models/[^/]+/[^/]+/commit/",
    "preupload": r"^POST /api/models/[^/]+/[^/]+/preupload/",
    "lfs": r"\.git/info/lfs/",
    "resolve": r"^(GET|HEAD) /[^/]+/[^/]+/resolve/",
    "create_repo": r"^POST /api/repos/create",
    "tag": r"^(POST|DELETE) /api/models/[^/]+/[^/]+/tag/",
    "refs": r"^GET /api/models/[^/]+/[^/]+/refs",
    "tree": r"^GET /api/models/[^/]+/[^/]+/tree/",
    "info": r"^GET /api/models/[^/]+/[^/]+(/revision/[^/]+)?$",
    "whoami": r"^GET /api/whoami-v2",
}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class _Commit:
    sha: str
    parent: str | None
    title: str
    message: str
    files: dict[str, bytes]
    date: str = field(default_factory=_now)


@dataclass
class _Repo:
    repo_id: str
    private: bool
    commits: dict[str, _Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tag_refs: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (sha, message)
    created_at: str = field(default_factory=_now)

    def resolve(self, rev: str) -> _Commit:
        sha = self.branches.get(rev) or (self.tag_refs[rev][0] if rev in self.tag_refs else rev)
        if sha not in self.commits:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return self.commits[sha]

    def history(self, sha: str | None) -> list[_Commit]:  # newest first
        out = []
        while sha is not None:
            out.append(self.commits[sha])
            sha = self.commits[sha].parent
        return out


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers=None, body=None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers, self.body = headers or {}, body or {}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "HubServer/1.0"
    timeout = 60  # drop idle keep-alive connections
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms delayed-ACK stalls

    def log_message(self, *args):  # keep test output quiet
        pass

    def setup(self):
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self):
        self.server.connections.discard(self.connection)
        super().finish()

    def do_GET(self):
        self.server.hub._handle(self)

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET


class HubServer:
    """In-memory Hub on ``http://127.0.0.1:<free port>``, served from a background thread."""

    def __init__(self, tokens: dict[str, str] | None = None, user: str = "user", orgs=()):
        self.tokens = dict(tokens or {})
        self.user, self.orgs = user, set(orgs)
        self.requests: list[tuple[str, str]] = []
        self._repos: dict[str, _Repo] = {}
        self._failures: list[list] = []  # [compiled regex, status, remaining times, message]
        self._lock = threading.RLock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.hub, self._httpd.connections = self, set()
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="HubServer",
                                        daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- test helpers
    def __enter__(self) -> HubServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
            for conn in list(self._httpd.connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._httpd.server_close()
            self._thread.join(timeout=5)

    def fail_next(self, what: str, status: int = 500, times: int = 1, message: str = "Injected failure") -> None:
        """Make the next ``times`` requests matching ``what`` fail with ``status``.

        ``what`` is a name from ``_NAMED_FAILURES`` ("commit", "preupload", "resolve", "create_repo", ...) or a
        regex searched in ``"METHOD /path"`` (path without query string).
        """
        with self._lock:
            self._failures.append([re.compile(_NAMED_FAILURES.get(what, what)), status, times, message])

    def head(self, repo_id: str) -> str | None:
        with self._lock:
            repo = self._repos.get(repo_id)
            return repo.branches.get("main") if repo else None

    def commits(self, repo_id: str) -> list[dict]:
        """Commits of ``main``, oldest first: {sha, title, message, files: {path: bytes}}."""
        with self._lock:
            repo = self._repos.get(repo_id)
            if repo is None:
                return []
            return [
                {"sha": c.sha, "title": c.title, "message": c.message, "files": dict(c.files)}
                for c in reversed(repo.history(repo.branches.get("main")))
            ]

    def tags(self, repo_id: str) -> dict[str, str]:
        with self._lock:
            repo = self._repos.get(repo_id)
            return {name: sha for name, (sha, _) in repo.tag_refs.items()} if repo else {}

    # ---------------------------------------------------------------- HTTP plumbing
    _ROUTES = [
        ("GET", r"^/api/whoami-v2$", "_whoami"),
        ("POST", r"^/api/repos/create$", "_create_repo"),
        ("DELETE", r"^/api/repos/delete$", "_delete_repo"),
        ("POST", r"^/api/validate-yaml$", "_validate_yaml"),
        ("GET", rf"^/api/models/{_R}(?:/revision/(?P<rev>[^/]+))?$", "_info"),
        ("GET", rf"^/api/models/{_R}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?$", "_tree"),
        ("GET", rf"^/api/models/{_R}/refs$", "_refs"),
        ("GET", rf"^/api/models/{_R}/commits/(?P<rev>[^/]+)$", "_list_commits"),
        ("POST", rf"^/api/models/{_R}/preupload/(?P<rev>[^/]+)$", "_preupload"),
        ("POST", rf"^/api/models/{_R}/commit/(?P<rev>[^/]+)$", "_commit"),
        ("POST", rf"^/api/models/{_R}/tag/(?P<rev>[^/]+)$", "_create_tag"),
        ("DELETE", rf"^/api/models/{_R}/tag/(?P<rev>[^/]+)$", "_delete_tag"),
        ("GET HEAD", rf"^/(?!api/){_R}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", "_resolve"),
    ]

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        path, method = parts.path, h.command
        body = self._read_body(h)
        with self._lock:
            self.requests.append((method, path))
        try:
            self._maybe_fail(f"{method} {path}")
            for route_method, pattern, name in self._ROUTES:
                m = re.match(pattern, path)
                if m and method in route_method.split():
                    args = {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
                    status, payload, headers = getattr(self, name)(h, body, parse_qs(parts.query), **args)
                    return self._send(h, status, payload, headers)
            raise HubError(404, f"Sorry, we can't find the page you are looking for ({method} {path})")
        except HubError as e:
            headers = {"X-Error-Message": e.message, **e.headers}
            if e.code:
                headers["X-Error-Code"] = e.code
            self._send(h, e.status, {"error": e.message, **e.body}, headers)
        except Exception as e:  # a bug in this server: report it to the client as a 500
            self._send(h, 500, {"error": f"HubServer internal error: {e!r}"}, {})

    def _maybe_fail(self, line: str) -> None:
        with self._lock:
            for failure in self._failures:
                regex, status, times, message = failure
                if times > 0 and regex.search(line):
                    failure[2] -= 1
                    self._failures = [f for f in self._failures if f[2] > 0]
                    raise HubError(status, message)

    @staticmethod
    def _read_body(h: BaseHTTPRequestHandler) -> bytes:
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(h.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(h.rfile.read(size))
                h.rfile.readline()
            while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        return h.rfile.read(int(h.headers.get("Content-Length") or 0))

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, payload, headers: dict) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        h.send_response(status)
        headers = {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}
        for key, value in headers.items():
            h.send_header(key, str(value).encode("latin-1", "replace").decode("latin-1").replace("\n", " "))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)

    # ---------------------------------------------------------------- auth
    def _role(self, h: BaseHTTPRequestHandler) -> str | None:
        auth = h.headers.get("Authorization", "")
        if not auth:
            return None
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else auth
        if token not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.tokens[token]

    def _require_write(self, role: str | None, action: str, repo_scoped: bool) -> None:
        if role is None:
            raise HubError(401, "Invalid username or password.", "RepoNotFound" if repo_scoped else None)
        if role != "write":
            raise HubError(403, f"You don't have the permission to {action}: this action requires a token with "
                                f"write permissions and the token used has the '{role}' role")

    def _repo(self, h, repo_id: str, write_action: str | None = None) -> tuple[_Repo, str | None]:
        role = self._role(h)
        repo = self._repos.get(repo_id)
        if repo is None or (repo.private and role is None):
            if role is None:
                raise HubError(401, "Invalid username or password.", "RepoNotFound")
            raise HubError(404, "Repository not found", "RepoNotFound")
        if write_action:
            self._require_write(role, write_action, repo_scoped=True)
        return repo, role

    # ---------------------------------------------------------------- endpoints
    def _whoami(self, h, body, query):
        role = self._role(h)
        if role is None:
            raise HubError(401, "Invalid username or password.")
        return 200, {
            "type": "user", "id": hashlib.sha1(self.user.encode()).hexdigest()[:24], "name": self.user,
            "fullname": self.user, "email": f"{self.user}@example.invalid", "emailVerified": True,
            "canPay": False, "isPro": False, "periodEnd": None, "avatarUrl": "",
            "orgs": [{"type": "org", "name": org, "fullname": org, "roleInOrg": "write"} for org in self.orgs],
            "auth": {"type": "access_token",
                     "accessToken": {"displayName": "test-token", "role": role, "createdAt": _now()}},
        }, {}

    def _create_repo(self, h, body, query):
        req = json.loads(body or b"{}")
        role = self._role(h)
        namespace, name = req.get("organization") or self.user, req.get("name") or ""
        kind = req.get("type") or "model"
        self._require_write(role, "create a repository", repo_scoped=False)
        if kind != "model":
            raise HubError(400, f"HubServer only supports model repos, not '{kind}'")
        if namespace not in {self.user, *self.orgs}:
            raise HubError(403, f'You don\'t have the rights to create a model under the namespace "{namespace}"')
        if not re.fullmatch(r"[\w][\w.-]*", name):
            raise HubError(400, f"Invalid repo name: '{name}'")
        repo_id, private = f"{namespace}/{name}", req.get("visibility", "private" if req.get("private") else
                                                          "public") == "private"
        with self._lock:
            if repo_id in self._repos:
                raise HubError(409, "You already created this model repo", body={"url": f"{self.url}/{repo_id}"})
            repo = self._repos[repo_id] = _Repo(repo_id, private)
            self._add_commit(repo, "main", "initial commit", "", {".gitattributes": GITATTRIBUTES})
        return 200, {"url": f"{self.url}/{repo_id}", "name": repo_id, "id": uuid.uuid4().hex[:24]}, {}

    def _delete_repo(self, h, body, query):
        req = json.loads(body or b"{}")
        repo_id = f"{req.get('organization') or self.user}/{req.get('name')}"
        self._repo(h, repo_id, write_action="delete this repository")
        with self._lock:
            del self._repos[repo_id]
        return 200, {}, {}

    def _validate_yaml(self, h, body, query):
        self._role(h)
        return 200, {"errors": [], "warnings": []}, {}

    def _info(self, h, body, query, repo, rev="main"):
        r, _ = self._repo(h, repo)
        with self._lock:
            commit = r.resolve(rev)
        blobs = query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = [{"rfilename": p, **({"size": len(d), "blobId": git_blob_sha(d)} if blobs else {})}
                    for p, d in sorted(commit.files.items())]
        tags = (["safetensors"] if any(p.endswith(".safetensors") for p in commit.files) else []) + ["region:us"]
        return 200, {
            "_id": hashlib.sha1(repo.encode()).hexdigest()[:24], "id": repo, "modelId": repo,
            "author": repo.split("/")[0], "sha": commit.sha, "lastModified": commit.date, "createdAt": r.created_at,
            "private": r.private, "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": tags,
            "siblings": siblings, "spaces": [], "usedStorage": sum(len(d) for d in commit.files.values()),
        }, {}

    @staticmethod
    def _entries(commit: _Commit, base: str, recursive: bool) -> list[dict]:
        prefix = base.strip("/") + "/" if base.strip("/") else ""
        files, dirs = [], set()
        for p, data in sorted(commit.files.items()):
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix):].split("/")
            for i in range(1, len(rest) if recursive else min(2, len(rest))):
                dirs.add(prefix + "/".join(rest[:i]))
            if recursive or len(rest) == 1:
                files.append({"type": "file", "oid": git_blob_sha(data), "size": len(data), "path": p})
        folders = [{"type": "directory", "size": 0, "path": d,
                    "oid": hashlib.sha1(f"{commit.sha}:{d}".encode()).hexdigest()} for d in sorted(dirs)]
        return folders + files

    def _tree(self, h, body, query, repo, rev, path=""):
        r, _ = self._repo(h, repo)
        with self._lock:
            commit = r.resolve(rev)
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        entries = self._entries(commit, path, recursive)
        if path and not entries:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        return 200, entries, {}

    def _refs(self, h, body, query, repo):
        r, _ = self._repo(h, repo)
        with self._lock:
            return 200, {
                "branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": s} for b, s in r.branches.items()],
                "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": s} for t, (s, _) in r.tag_refs.items()],
                "converts": [], "pullRequests": [],
            }, {}

    def _list_commits(self, h, body, query, repo, rev):
        r, _ = self._repo(h, repo)
        with self._lock:
            history = r.history(r.resolve(rev).sha)
        return 200, [{"id": c.sha, "title": c.title, "message": c.message, "date": c.date,
                      "authors": [{"user": self.user, "avatar": ""}]} for c in history], {}

    def _branch_head(self, r: _Repo, rev: str) -> _Commit:
        if rev not in r.branches:
            raise HubError(404 if rev not in r.tag_refs else 400, f"Invalid rev id: {rev} is not a branch",
                           "RevisionNotFound" if rev not in r.tag_refs else None)
        return r.commits[r.branches[rev]]

    def _preupload(self, h, body, query, repo, rev):
        r, _ = self._repo(h, repo, write_action="upload files to this repository")
        if query.get("create_pr"):
            raise HubError(400, "HubServer does not support pull requests (create_pr)")
        with self._lock:
            head = self._branch_head(r, rev)
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                  "oid": git_blob_sha(head.files[f["path"]]) if f["path"] in head.files else None}
                 for f in json.loads(body or b"{}").get("files", [])]
        return 200, {"files": files, "commitOid": head.sha}, {}

    def _commit(self, h, body, query, repo, rev):
        r, _ = self._repo(h, repo, write_action="push commits to this repository")
        if query.get("create_pr"):
            raise HubError(400, "HubServer does not support pull requests (create_pr)")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next((line["value"] for line in lines if line.get("key") == "header"), None)
        if not header or not header.get("summary"):
            raise HubError(400, "Missing commit header with a summary")
        with self._lock:  # validate and apply atomically
            head = self._branch_head(r, rev)
            if header.get("parentCommit") and header["parentCommit"] != head.sha:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(head.files)
            for op in lines:
                key, value = op.get("key"), op.get("value", {})
                if key == "file":
                    files[value["path"]] = base64.b64decode(value["content"]) if value.get(
                        "encoding") == "base64" else value["content"].encode()
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    doomed = [p for p in files if p.startswith(prefix)]
                    if not doomed:
                        raise HubError(404, f"A folder with this name doesn't exist: {value['path']}",
                                       "EntryNotFound")
                    for p in doomed:
                        del files[p]
                elif key != "header":
                    raise HubError(400, f"HubServer does not support commit operation '{key}' (LFS/xet)")
            commit = self._add_commit(r, rev, header["summary"], header.get("description") or "", files)
        return 200, {"success": True, "commitOid": commit.sha, "commitUrl": f"{self.url}/{repo}/commit/{commit.sha}",
                     "hookOutput": ""}, {}

    def _add_commit(self, r: _Repo, branch: str, title: str, message: str, files: dict) -> _Commit:
        parent = r.branches.get(branch)
        seed = f"{parent}\n{title}\n{message}\n{sorted(files)}\n{uuid.uuid4()}".encode()
        commit = _Commit(hashlib.sha1(seed).hexdigest(), parent, title, message, files)
        r.commits[commit.sha] = commit
        r.branches[branch] = commit.sha
        return commit

    def _create_tag(self, h, body, query, repo, rev):
        r, _ = self._repo(h, repo, write_action="create a tag in this repository")
        req = json.loads(body or b"{}")
        tag = req.get("tag") or ""
        with self._lock:
            commit = r.resolve(rev)
            if not re.fullmatch(r"[\w][\w.\-/]*", tag):
                raise HubError(400, f"Invalid tag name: '{tag}'")
            if tag in r.tag_refs or tag in r.branches:
                raise HubError(409, f"Tag '{tag}' already exists")
            r.tag_refs[tag] = (commit.sha, req.get("message") or "")
        return 200, {}, {}

    def _delete_tag(self, h, body, query, repo, rev):
        r, _ = self._repo(h, repo, write_action="delete a tag in this repository")
        with self._lock:
            if r.tag_refs.pop(rev, None) is None:
                raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return 200, {}, {}

    def _resolve(self, h, body, query, repo, rev, path):
        r, _ = self._repo(h, repo)
        with self._lock:
            commit = r.resolve(rev)
        if path not in commit.files:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        data = commit.files[path]
        headers = {"Content-Type": "application/octet-stream", "ETag": f'"{git_blob_sha(data)}"',
                   "X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes"}
        m = re.fullmatch(r"\s*bytes=(\d+)-(\d*)\s*", h.headers.get("Range") or "")  # used to resume downloads
        if m:
            start, end = int(m.group(1)), min(int(m.group(2) or len(data) - 1), len(data) - 1)
            if start > end:
                raise HubError(416, "Requested range not satisfiable",
                               headers={"Content-Range": f"bytes */{len(data)}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return 206, data[start:end + 1], headers
        return 200, data, headers
