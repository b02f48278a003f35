"""A small, real Hugging Face Hub HTTP server for tests: ``LocalHub``.

``huggingface_hub.HfApi(endpoint=hub.endpoint, token=hub.token)`` talks to it exactly as it talks to
the Hub, so exporter code is tested end to end with the real client, offline, in milliseconds. It
serves (wire formats taken from huggingface_hub 2.4's client code; ``{t}`` is ``models``,
``datasets`` or ``spaces``; model repos have no URL prefix, the others ``datasets/`` / ``spaces/``):

=================================================  ================================================
Route                                              Used by
=================================================  ================================================
``GET /api/whoami-v2``                             ``whoami``
``POST /api/repos/create``                         ``create_repo`` (409 with ``url`` if it exists)
``DELETE /api/repos/delete``                       ``delete_repo``
``GET /api/{t}/{ns}/{name}[/revision/{rev}]``      ``repo_info``, ``dataset_info``, ``repo_exists``,
                                                   ``snapshot_download``
``POST /api/{t}/{ns}/{name}/preupload/{rev}``      ``create_commit``: every file is "regular"
                                                   (inline base64); ``oid`` of the current blob
``POST /api/{t}/{ns}/{name}/commit/{rev}``         ``create_commit``, ``upload_file``,
                                                   ``upload_folder``, ``delete_file``: NDJSON
                                                   ``header`` / ``file`` / ``deletedFile`` /
                                                   ``deletedFolder`` lines; 412 on a stale
                                                   ``parentCommit``
``POST /api/validate-yaml``                        any commit adding ``README.md``
``GET /api/{t}/{ns}/{name}/tree/{rev}[/{path}]``   ``list_repo_tree``, ``list_repo_files`` (cursor
                                                   pages, ``Link: <...>; rel="next"``)
``GET /api/{t}/{ns}/{name}/commits/{rev}``         ``list_repo_commits`` (pages, newest first)
``GET /api/{t}/{ns}/{name}/refs``                  ``list_repo_refs``
``GET|HEAD /[{t}/]{ns}/{name}/resolve/{rev}/...``  ``hf_hub_download``, ``snapshot_download``,
                                                   ``file_exists``: ``ETag``, ``X-Repo-Commit``,
                                                   ``Content-Length``, byte ranges
=================================================  ================================================

Errors carry ``{"error": ...}`` bodies and the ``X-Error-Code`` header the client maps to its
exceptions: ``RepoNotFound`` (401 without a valid token, 404 with one, private repos included),
``RevisionNotFound``, ``EntryNotFound``; an unknown token gets 401 "Invalid credentials in
Authorization header", as on the Hub. LFS/Xet uploads, pull requests and branches other than
``main`` are not supported (a commit with an ``lfsFile`` line gets 400).

Fault injection: ``fail_next_commit(status)`` answers the next commit POST with that status and
changes nothing; ``apply_then_fail_next_commit(status)`` applies it and still answers the error;
``apply_then_timeout_next_commit(delay_s)`` applies it, waits, then drops the connection without
an answer (or, with ``drop_connection=False``, answers late: a client whose timeout is shorter
sees a timeout). ``requests`` records every request, for counting.

Client behaviour worth knowing (huggingface_hub 2.4): ``create_commit`` / ``upload_file`` never
retry the commit POST, and a lost answer surfaces as a raw ``httpx2`` transport error, not an
``HfHubHTTPError``; the default HTTP client has no timeout, so a hung Hub blocks forever unless a
client factory with a timeout is set; ``upload_folder`` (whenever ``hf_xet`` is installed, which
it is as a dependency) DOES retry the commit POST on 5xx and transport errors, so a lost answer
leaves two identical commits, and with ``parent_commit`` the retry fails with 412 although the
first attempt was applied.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import uvicorn
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from huggingface_hub import HfApi

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
DEFAULT_TOKEN = "hf_LocalHubTestToken0000000000000000"
GITATTRIBUTES = (
    b"*.parquet filter=lfs diff=lfs merge=lfs -text\n*.arrow filter=lfs diff=lfs merge=lfs -text\n"
)
_DROP = "localhub-drop-connection"  # returned by the ASGI app: uvicorn then closes the socket


def git_blob_oid(content: bytes) -> str:
    """The git object id of a blob, as the Hub reports it (and as the client computes it)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass(frozen=True)
class HubCommit:
    """One commit of a repo's ``main`` branch."""

    oid: str
    title: str
    message: str
    parent: str | None
    date: datetime
    author: str
    tree: dict[str, str]  # path -> blob oid


@dataclass
class HubRequest:
    """One HTTP request the server received; ``status`` is None when the connection was dropped."""

    method: str
    path: str
    query: str
    status: int | None = None


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: datetime
    commits: list[HubCommit] = field(default_factory=list)

    @property
    def head(self) -> HubCommit:
        return self.commits[-1]


class HubError(Exception):
    """An HTTP error answer: status, message and the ``X-Error-Code`` the client looks for."""

    def __init__(self, status: int, message: str, code: str | None = None, **headers: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers

    def response(self) -> JSONResponse:
        headers = dict(self.headers)
        if self.message.isascii():  # headers are latin-1; the body carries the message anyway
            headers["X-Error-Message"] = self.message
        if self.code:
            headers["X-Error-Code"] = self.code
        return JSONResponse({"error": self.message}, status_code=self.status, headers=headers)


@dataclass
class _CommitFault:
    kind: str  # "fail" | "apply_fail" | "drop" | "late"
    status: int = 500
    delay_s: float = 0.0


class LocalHub:
    """The server: ``with LocalHub() as hub: HfApi(endpoint=hub.endpoint, token=hub.token)``.

    Binds 127.0.0.1 on a free port and serves from a background thread. State lives in memory:
    repos, their full commit history (so old revisions resolve) and blobs. ``token`` may write;
    ``read_token`` may only read (writes get 403); any other token is rejected with 401.
    """

    def __init__(
        self,
        *,
        user: str = "arena-tester",
        token: str = DEFAULT_TOKEN,
        read_token: str = "hf_LocalHubReadOnlyToken00000000000000",
        tree_page_size: int = 1000,
        commits_page_size: int = 50,
        host: str = "127.0.0.1",
    ) -> None:
        self.user, self.token, self.read_token, self.host = user, token, read_token, host
        self.tree_page_size, self.commits_page_size = tree_page_size, commits_page_size
        self.port = 0
        self.requests: list[HubRequest] = []
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._blobs: dict[str, bytes] = {}
        self._faults: list[_CommitFault] = []
        self._lock = threading.Lock()
        self._counter = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._log_filter = _DropLogFilter()
        self._app = _build_app(self)

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The base URL to pass as ``HfApi(endpoint=...)`` and ``hf_hub_download(endpoint=...)``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> LocalHub:
        """Bind, serve in a thread, and return once connections are accepted."""
        if self._thread is not None:
            raise RuntimeError("the local hub is already running")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._asgi,
            http="h11",
            interface="asgi3",
            lifespan="off",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        logging.getLogger("uvicorn.error").addFilter(self._log_filter)

        def run() -> None:
            assert self._server is not None
            asyncio.run(self._server.serve(sockets=[sock]))

        self._thread = threading.Thread(target=run, name=f"local-hub-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the local hub did not start on {self.endpoint}")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread (in-flight requests get a second to finish)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        logging.getLogger("uvicorn.error").removeFilter(self._log_filter)
        self._server, self._thread = None, None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def api(self, token: str | bool | None = None) -> HfApi:
        """An ``HfApi`` on this hub, with the write token unless told otherwise."""
        return HfApi(endpoint=self.endpoint, token=self.token if token is None else token)

    # --- inspection and seeding -----------------------------------------------------------------

    def files(
        self, repo_id: str, repo_type: str = "dataset", revision: str = "main"
    ) -> dict[str, bytes]:
        """Path -> content of every file of a repo at a revision (a commit oid or ``main``)."""
        with self._lock:
            commit = self._resolve(self._get_repo(repo_type, repo_id), revision)
            return {path: self._blobs[oid] for path, oid in sorted(commit.tree.items())}

    def commits(self, repo_id: str, repo_type: str = "dataset") -> list[HubCommit]:
        """The repo's commits, oldest first (the Hub's own listing is newest first)."""
        with self._lock:
            return list(self._get_repo(repo_type, repo_id).commits)

    def head(self, repo_id: str, repo_type: str = "dataset") -> str:
        """The oid of the repo's last commit on ``main``."""
        return self.commits(repo_id, repo_type)[-1].oid

    def exists(self, repo_id: str, repo_type: str = "dataset") -> bool:
        with self._lock:
            return (repo_type, repo_id) in self._repos

    def seed(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        repo_type: str = "dataset",
        private: bool = False,
        message: str = "Seed files",
    ) -> str:
        """Create the repo if needed and commit ``files`` directly; returns the commit oid."""
        with self._lock:
            repo = self._repos.get((repo_type, repo_id)) or self._create(
                repo_type, repo_id, private
            )
            tree = dict(repo.head.tree)
            for path, content in files.items():
                tree[path] = self._store(content)
            return self._commit(repo, message, "", tree).oid

    def request_count(self, method: str | None = None, path_contains: str = "") -> int:
        """How many requests matched a method (any if None) and a path substring."""
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (method is None or r.method == method) and path_contains in r.path
            )

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # --- fault injection ------------------------------------------------------------------------

    def fail_next_commit(self, status: int = 500, *, times: int = 1) -> None:
        """Answer the next ``times`` commit POSTs with ``status`` and leave the repo unchanged."""
        with self._lock:
            self._faults.extend(_CommitFault("fail", status=status) for _ in range(times))

    def apply_then_fail_next_commit(self, status: int = 500) -> None:
        """Apply the next commit but answer ``status``: the Hub has done this on a 500."""
        with self._lock:
            self._faults.append(_CommitFault("apply_fail", status=status))

    def apply_then_timeout_next_commit(
        self, delay_s: float = 0.0, *, drop_connection: bool = True
    ) -> None:
        """Apply the next commit, wait ``delay_s``, then drop the connection without answering.

        With ``drop_connection=False`` the normal answer is sent after ``delay_s`` instead: a
        client whose read timeout is shorter sees a timeout. huggingface_hub's default HTTP client
        has no timeout at all, so only the dropped connection makes it fail.
        """
        with self._lock:
            self._faults.append(
                _CommitFault("drop" if drop_connection else "late", delay_s=delay_s)
            )

    # --- state (call with the lock held) --------------------------------------------------------

    def _get_repo(self, repo_type: str, repo_id: str) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise KeyError(f"no {repo_type} repo {repo_id!r} on the local hub")
        return repo

    def _store(self, content: bytes) -> str:
        oid = git_blob_oid(content)
        self._blobs[oid] = content
        return oid

    def _create(self, repo_type: str, repo_id: str, private: bool) -> _Repo:
        repo = _Repo(repo_type, repo_id, private, datetime.now(UTC))
        self._repos[(repo_type, repo_id)] = repo
        self._commit(repo, "initial commit", "", {".gitattributes": self._store(GITATTRIBUTES)})
        return repo

    def _commit(self, repo: _Repo, title: str, message: str, tree: dict[str, str]) -> HubCommit:
        self._counter += 1
        parent = repo.commits[-1].oid if repo.commits else None
        seed = f"{repo.repo_id}\n{parent}\n{title}\n{sorted(tree.items())}\n{self._counter}"
        commit = HubCommit(
            oid=hashlib.sha1(seed.encode()).hexdigest(),
            title=title,
            message=message,
            parent=parent,
            date=datetime.now(UTC),
            author=self.user if repo.commits else "system",
            tree=dict(sorted(tree.items())),
        )
        repo.commits.append(commit)
        return commit

    def _resolve(self, repo: _Repo, revision: str) -> HubCommit:
        if revision == "main":
            return repo.head
        for commit in repo.commits:
            if commit.oid == revision:
                return commit
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _repo_url(self, repo: _Repo) -> str:
        return f"{self.endpoint}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}"

    # --- HTTP -------------------------------------------------------------------------------------

    async def _asgi(self, scope: dict, receive: Any, send: Any) -> Any:
        """Records requests, and swallows the answer of a dropped commit (see ``_DROP``)."""
        if scope["type"] != "http":
            return await self._app(scope, receive, send)
        record = HubRequest(scope["method"], scope["path"], scope["query_string"].decode())
        with self._lock:
            self.requests.append(record)
        scope["localhub.drop"] = drop = []

        async def send_unless_dropped(message: dict) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            if not drop:
                await send(message)

        await self._app(scope, receive, send_unless_dropped)
        if drop:
            record.status = None
            return _DROP  # uvicorn closes the transport when an ASGI app returns a value
        return None

    def _caller(self, request: Request) -> str | None:
        """The token's role: "write", "read" or None (anonymous); 401 for an unknown token."""
        auth = request.headers.get("authorization")
        if not auth:
            return None
        token = auth.removeprefix("Bearer ").strip()
        if token == self.token:
            return "write"
        if token == self.read_token:
            return "read"
        raise HubError(401, "Invalid credentials in Authorization header")

    def _visible_repo(self, request: Request, kind: str, ns: str, name: str) -> _Repo:
        repo_type = REPO_TYPES.get(kind)
        caller = self._caller(request)
        repo = self._repos.get((repo_type, f"{ns}/{name}")) if repo_type else None
        if repo is None or (repo.private and caller is None):
            raise HubError(
                401 if caller is None else 404,
                "Repository not found",
                "RepoNotFound",
            )
        return repo

    def _writable_repo(self, request: Request, kind: str, ns: str, name: str) -> _Repo:
        repo = self._visible_repo(request, kind, ns, name)
        if self._caller(request) != "write":
            raise HubError(403, "You don't have the rights to write to this repository")
        return repo

    def _info(self, repo: _Repo, commit: HubCommit, blobs: bool) -> dict[str, Any]:
        siblings = []
        for path, oid in commit.tree.items():
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=len(self._blobs[oid]), blobId=oid)
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.oid,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "createdAt": _iso(repo.created_at),
            "lastModified": _iso(commit.date),
            "siblings": siblings,
            "usedStorage": sum(len(self._blobs[oid]) for oid in commit.tree.values()),
        }
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
        readme = commit.tree.get("README.md")
        if readme is not None:
            card = _front_matter(self._blobs[readme])
            if isinstance(card, dict):
                info["cardData"] = card
        return info

    def _apply_commit(self, repo: _Repo, body: bytes) -> HubCommit:
        """Parse an NDJSON commit body and apply it; raises HubError without changing anything."""
        try:
            items = [json.loads(line) for line in body.splitlines() if line.strip()]
        except json.JSONDecodeError as error:
            raise HubError(400, f"Invalid NDJSON commit payload: {error}") from None
        if not items or items[0].get("key") != "header":
            raise HubError(400, "The commit payload must start with a header line")
        header = items[0]["value"]
        parent = header.get("parentCommit")
        if parent is not None and parent != repo.head.oid:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        tree = dict(repo.head.tree)
        blobs: dict[str, bytes] = {}
        for item in items[1:]:
            key, value = item.get("key"), item.get("value") or {}
            path = str(value.get("path", "")).strip("/")
            if key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, f"Unsupported encoding for {path}")
                content = base64.b64decode(value["content"])
                oid = git_blob_oid(content)
                blobs[oid], tree[path] = content, oid
            elif key == "deletedFile":
                if tree.pop(path, None) is None:
                    raise HubError(
                        404, f"A file with this name doesn't exist: {path}", "EntryNotFound"
                    )
            elif key == "deletedFolder":
                doomed = [p for p in tree if p.startswith(path + "/")]
                if not doomed:
                    raise HubError(
                        404, f"A folder with this name doesn't exist: {path}", "EntryNotFound"
                    )
                for p in doomed:
                    del tree[p]
            elif key == "lfsFile":
                raise HubError(400, f"LFS files are not supported by the local hub: {path}")
            else:
                raise HubError(400, f"Unknown commit operation {key!r}")
        self._blobs.update(blobs)
        return self._commit(repo, header.get("summary") or "", header.get("description", ""), tree)

    def _tree_entries(self, commit: HubCommit, path: str, recursive: bool) -> list[dict[str, Any]]:
        prefix = f"{path}/" if path else ""
        if path and path not in commit.tree and not any(p.startswith(prefix) for p in commit.tree):
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        folders: dict[str, None] = {}
        files: list[dict[str, Any]] = []
        for p, oid in commit.tree.items():
            if not p.startswith(prefix):
                continue
            parts = p[len(prefix) :].split("/")
            for depth in range(1, len(parts) if recursive else min(2, len(parts))):
                folders[prefix + "/".join(parts[:depth])] = None
            if recursive or len(parts) == 1:
                files.append({"type": "file", "oid": oid, "size": len(self._blobs[oid]), "path": p})
        entries = [
            {"type": "directory", "oid": _folder_oid(commit, f), "size": 0, "path": f}
            for f in folders
        ]
        return sorted(entries + files, key=lambda e: e["path"])

    def _last_commit(self, repo: _Repo, path: str) -> dict[str, str]:
        """The last commit that changed a file or anything in a folder (``expand=True``)."""

        def state(commit: HubCommit) -> object:
            if path in commit.tree:
                return commit.tree[path]
            return [(p, o) for p, o in commit.tree.items() if p.startswith(path + "/")]

        commits = repo.commits
        last = len(commits) - 1
        while last > 0 and state(commits[last - 1]) == state(commits[last]):
            last -= 1
        found = commits[last]
        return {"id": found.oid, "title": found.title, "date": _iso(found.date)}


def _build_app(hub: LocalHub) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.exception_handler(HubError)
    async def hub_error(request: Request, error: HubError) -> JSONResponse:
        return error.response()

    @app.get("/api/whoami-v2")
    async def whoami(request: Request) -> dict[str, Any]:
        role = hub._caller(request)
        if role is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return {
            "type": "user",
            "id": hashlib.sha1(hub.user.encode()).hexdigest()[:24],
            "name": hub.user,
            "fullname": hub.user,
            "email": None,
            "emailVerified": False,
            "isPro": False,
            "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": role}},
        }

    @app.post("/api/repos/create")
    async def create_repo(request: Request) -> JSONResponse:
        role = hub._caller(request)
        if role != "write":
            raise HubError(401 if role is None else 403, "You must use a write token")
        body = await request.json()
        repo_type = body.get("type") or "model"
        if repo_type not in URL_PREFIXES:
            raise HubError(400, f"Invalid repo type {repo_type!r}")
        repo_id = f"{body.get('organization') or hub.user}/{body['name']}"
        private = body.get("visibility", "public") == "private" or bool(body.get("private"))
        with hub._lock:
            existing = hub._repos.get((repo_type, repo_id))
            if existing is not None:
                return JSONResponse(
                    {
                        "error": f"You already created this {repo_type} repo",
                        "url": hub._repo_url(existing),
                    },
                    status_code=409,
                )
            repo = hub._create(repo_type, repo_id, private)
            return JSONResponse({"url": hub._repo_url(repo), "name": repo_id, "id": repo_id})

    @app.delete("/api/repos/delete")
    async def delete_repo(request: Request) -> Response:
        body = await request.json()
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or hub.user}/{body['name']}"
        kind = f"{repo_type}s"
        with hub._lock:
            hub._writable_repo(request, kind, *repo_id.split("/"))
            del hub._repos[(repo_type, repo_id)]
        return Response(status_code=200)

    @app.post("/api/validate-yaml")
    async def validate_yaml(request: Request) -> JSONResponse:
        body = await request.json()
        try:
            _front_matter(body.get("content", "").encode())
        except yaml.YAMLError as error:
            return JSONResponse(
                {"errors": [{"message": f"Invalid YAML metadata: {error}"}], "warnings": []},
                status_code=400,
            )
        return JSONResponse({"errors": [], "warnings": []})

    @app.get("/api/{kind}/{ns}/{name}")
    async def repo_info(request: Request, kind: str, ns: str, name: str) -> dict[str, Any]:
        return await repo_info_at(request, kind, ns, name, "main")

    @app.get("/api/{kind}/{ns}/{name}/revision/{revision}")
    async def repo_info_at(
        request: Request, kind: str, ns: str, name: str, revision: str
    ) -> dict[str, Any]:
        blobs = request.query_params.get("blobs", "").lower() in ("1", "true")
        with hub._lock:
            repo = hub._visible_repo(request, kind, ns, name)
            return hub._info(repo, hub._resolve(repo, revision), blobs)

    @app.get("/api/{kind}/{ns}/{name}/refs")
    async def refs(request: Request, kind: str, ns: str, name: str) -> dict[str, Any]:
        with hub._lock:
            head = hub._visible_repo(request, kind, ns, name).head.oid
        branch = {"name": "main", "ref": "refs/heads/main", "targetCommit": head}
        return {"branches": [branch], "converts": [], "tags": [], "pullRequests": []}

    @app.post("/api/{kind}/{ns}/{name}/preupload/{revision}")
    async def preupload(request: Request, kind: str, ns: str, name: str, revision: str) -> Any:
        body = await request.json()
        with hub._lock:
            repo = hub._writable_repo(request, kind, ns, name)
            tree = hub._resolve(repo, revision).tree
            files = [
                {
                    "path": f["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": tree.get(f["path"]),
                }
                for f in body.get("files", [])
            ]
            return {"files": files, "commitOid": repo.head.oid}

    @app.post("/api/{kind}/{ns}/{name}/commit/{revision}")
    async def commit(request: Request, kind: str, ns: str, name: str, revision: str) -> Any:
        if request.query_params.get("create_pr"):
            raise HubError(400, "Pull requests are not supported by the local hub")
        body = await request.body()
        with hub._lock:
            repo = hub._writable_repo(request, kind, ns, name)
            if revision != "main":
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            fault = hub._faults.pop(0) if hub._faults else None
            if fault is not None and fault.kind == "fail":
                raise HubError(fault.status, f"Injected failure ({fault.status})")
            new = hub._apply_commit(repo, body)
            url = f"{hub._repo_url(repo)}/commit/{new.oid}"
            if fault is not None and fault.kind == "apply_fail":
                raise HubError(fault.status, f"Injected failure after the commit ({fault.status})")
        answer = {"success": True, "commitOid": new.oid, "commitUrl": url, "hookOutput": ""}
        if fault is not None:
            await asyncio.sleep(fault.delay_s)
            if fault.kind == "drop":
                request.scope["localhub.drop"].append(True)
        return answer

    @app.get("/api/{kind}/{ns}/{name}/tree/{revision}")
    async def tree_root(request: Request, kind: str, ns: str, name: str, revision: str) -> Any:
        return await tree(request, kind, ns, name, revision, "")

    @app.get("/api/{kind}/{ns}/{name}/tree/{revision}/{path:path}")
    async def tree(
        request: Request, kind: str, ns: str, name: str, revision: str, path: str
    ) -> Response:
        params = request.query_params
        recursive = params.get("recursive", "").lower() in ("1", "true")
        expand = params.get("expand", "").lower() in ("1", "true")
        with hub._lock:
            repo = hub._visible_repo(request, kind, ns, name)
            commit = hub._resolve(repo, revision)
            entries = hub._tree_entries(commit, path.strip("/"), recursive)
            size = min(hub.tree_page_size, 50) if expand else hub.tree_page_size
            start = int(params.get("cursor") or 0)
            page = entries[start : start + size]
            if expand:
                for entry in page:
                    entry["lastCommit"] = hub._last_commit(repo, entry["path"])
        headers = {}
        if start + size < len(entries):
            next_url = request.url.include_query_params(cursor=start + size)
            headers["Link"] = f'<{next_url}>; rel="next"'
        return JSONResponse(page, headers=headers)

    @app.get("/api/{kind}/{ns}/{name}/commits/{revision}")
    async def commits(request: Request, kind: str, ns: str, name: str, revision: str) -> Response:
        page = int(request.query_params.get("p") or 0)
        with hub._lock:
            repo = hub._visible_repo(request, kind, ns, name)
            head = hub._resolve(repo, revision)
            history = repo.commits[: repo.commits.index(head) + 1][::-1]
        size = hub.commits_page_size
        items = [
            {
                "id": c.oid,
                "title": c.title,
                "message": c.message,
                "authors": [{"user": c.author, "avatar": None}],
                "date": _iso(c.date),
            }
            for c in history[page * size : (page + 1) * size]
        ]
        headers = {}
        if (page + 1) * size < len(history):
            next_url = request.url.include_query_params(p=page + 1)
            headers["Link"] = f'<{next_url}>; rel="next"'
        return JSONResponse(items, headers=headers)

    async def resolve(
        request: Request, repo_type: str, ns: str, name: str, revision: str, path: str
    ):
        with hub._lock:
            repo = hub._visible_repo(request, f"{repo_type}s", ns, name)
            commit = hub._resolve(repo, revision)
            oid = commit.tree.get(path)
            if oid is None:
                raise HubError(
                    404,
                    f"Entry not found: {path}",
                    "EntryNotFound",
                    **{"X-Repo-Commit": commit.oid},
                )
            content = hub._blobs[oid]
        filename = path.rsplit("/", 1)[-1]
        fallback = filename.encode("ascii", "replace").decode().replace('"', "_")
        headers = {
            "ETag": f'"{oid}"',
            "X-Repo-Commit": commit.oid,
            "Accept-Ranges": "bytes",
            "Content-Disposition": (
                f"inline; filename*=UTF-8''{quote(filename)}; filename=\"{fallback}\""
            ),
        }
        status = 200
        ranged = _byte_range(request.headers.get("range"), len(content))
        if ranged is not None:
            first, last = ranged
            headers["Content-Range"] = f"bytes {first}-{last}/{len(content)}"
            content, status = content[first : last + 1], 206
        return Response(content, status, headers, media_type="application/octet-stream")

    for prefix, repo_type in (("/datasets", "dataset"), ("/spaces", "space"), ("", "model")):

        def route(repo_type: str = repo_type) -> Any:
            async def endpoint(request: Request, ns: str, name: str, revision: str, path: str):
                return await resolve(request, repo_type, ns, name, revision, path)

            return endpoint

        app.add_api_route(
            f"{prefix}/{{ns}}/{{name}}/resolve/{{revision}}/{{path:path}}",
            route(),
            methods=["GET", "HEAD"],
        )

    return app


class _DropLogFilter(logging.Filter):
    """Hides uvicorn's complaint about the value ``_asgi`` returns to drop a connection."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _DROP not in record.getMessage()


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(first, last)`` of a single ``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` range, or None."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first_s, _, last_s = header[len("bytes=") :].partition("-")
    if not first_s:
        first, last = max(0, size - int(last_s)), size - 1
    else:
        first, last = int(first_s), min(int(last_s) if last_s else size - 1, size - 1)
    return (first, last) if first <= last else None


def _front_matter(content: bytes) -> Any:
    """The YAML block between leading ``---`` lines of a README, or None."""
    text = content.decode("utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    block, sep, _ = text[3:].partition("\n---")
    return yaml.safe_load(block) if sep else None


def _folder_oid(commit: HubCommit, folder: str) -> str:
    inside = sorted((p, o) for p, o in commit.tree.items() if p.startswith(folder + "/"))
    return hashlib.sha1(repr(inside).encode()).hexdigest()


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
