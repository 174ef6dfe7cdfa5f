"""A loopback server that speaks the Hugging Face Hub HTTP protocol as `huggingface_hub` uses it.

Covered: token check (whoami), repo create/delete/info (private repos), README YAML validation, preupload,
the git-LFS batch API with a presigned PUT and verify, the NDJSON commit, refs, branches, tags, commit log,
tree listing, paths-info and `resolve` downloads (GET/HEAD, Range) with the headers the client checks
(X-Repo-Commit, ETag / X-Linked-Etag, X-Linked-Size, Content-Length, X-Error-Code).
It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from tests.hubserver.gitstore import (
    REGULAR_MAX_BYTES,
    LFS_SUFFIXES,
    ConflictError,
    GitError,
    GitRepo,
    LfsStore,
    RevisionNotFound,
    pointer_bytes,
    valid_name,
)

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}


class HubError(Exception):
    """Turned into an HTTP error response with the Hub's X-Error-Code / X-Error-Message headers."""

    def __init__(self, status: int, message: str, code: str | None = None, extra_headers: dict | None = None,
                 extra_json: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.extra_headers = extra_headers or {}
        self.extra_json = extra_json or {}


class HubState:
    """Users, tokens, repositories and the LFS store behind one server."""

    def __init__(self, root: Path, tokens: dict[str, str], orgs: dict[str, list[str]] | None = None):
        self.root = Path(root)
        self.tokens = dict(tokens)  # token -> user name
        self.orgs = orgs or {}  # user -> org names it may write to
        self.lfs = LfsStore(self.root / "lfs")
        self.signing_key = secrets.token_bytes(32)
        self.meta_lock = threading.Lock()
        self.repos: dict[tuple[str, str], GitRepo] = {}
        self.repo_meta: dict[tuple[str, str], dict] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) log, for tests that check client behaviour

    def repo_path(self, repo_type: str, repo_id: str) -> Path:
        return self.root / "git" / f"{repo_type}s" / f"{repo_id}.git"

    def sign(self, oid: str, size: int) -> str:
        return hmac.new(self.signing_key, f"{oid}:{size}".encode(), hashlib.sha256).hexdigest()

    def can_write(self, user: str | None, namespace: str) -> bool:
        return user is not None and (namespace == user or namespace in self.orgs.get(user, []))


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # idle keep-alive connections from the client's pool don't pin threads forever
    server_version = "forgetctl-test-hub/1"
    state: HubState  # set on the subclass made per server

    # -- plumbing ---------------------------------------------------------------------------------------------
    def log_message(self, format, *args):  # noqa: A002 - keep pytest output quiet
        pass

    def _body(self) -> bytes:
        if self._drained:
            return b""
        self._drained = True
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json_body(self) -> dict:
        raw = self._body()
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            ctype = self.headers.get("Content-Type", "")
            if "application/x-www-form-urlencoded" in ctype:
                return {k: v if len(v) > 1 or k == "paths" else v[0] for k, v in parse_qs(raw.decode()).items()}
            raise HubError(400, "body is not valid JSON")
        if not isinstance(data, dict):
            raise HubError(400, "body must be a JSON object")
        return data

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False,
              ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _send_json(self, data, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _user(self) -> str | None:
        """The caller's user name, None if anonymous; a token we don't know is a 401 on every route."""
        auth = self.headers.get("Authorization", "")
        if not auth:
            return None
        token = auth[7:] if auth.startswith("Bearer ") else ""
        user = self.state.tokens.get(token)
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    # -- dispatch ---------------------------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.query = parse_qs(split.query)
        self._drained = False
        self.state.requests.append((method, split.path))
        try:
            self.user = self._user()
            segments = split.path.strip("/").split("/")
            for pattern, handler in ROUTES:
                if pattern[0] == method:
                    match = _match(pattern[1], segments)
                    if match is not None:
                        handler(self, **match)
                        return
            raise HubError(404, f"no route for {method} {split.path}")
        except HubError as err:
            if method not in ("GET", "HEAD"):
                self._drain()
            safe_message = err.message.encode("ascii", "replace").decode().replace("\n", " ")
            headers = {"X-Error-Message": safe_message, **err.extra_headers}
            if err.code:
                headers["X-Error-Code"] = err.code
            body = json.dumps({"error": err.message, **err.extra_json}).encode()
            self._send(err.status, body, headers, head=(method == "HEAD"))
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _drain(self) -> None:
        try:
            self._body()
        except Exception:
            pass

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # -- repo lookup ------------------------------------------------------------------------------------------
    def _repo(self, rtype: str, ns: str, name: str, write: bool = False) -> tuple[str, GitRepo]:
        repo_type = REPO_TYPES.get(rtype) if rtype in REPO_TYPES else rtype
        repo_id = f"{ns}/{name}"
        key = (repo_type, repo_id)
        repo, meta = self.state.repos.get(key), self.state.repo_meta.get(key)
        visible = repo is not None and (not meta["private"] or self.state.can_write(self.user, ns))
        if not visible:
            # The Hub answers 401 to anonymous callers and 404 to others, both with RepoNotFound.
            raise HubError(401 if self.user is None else 404, f"Repository {repo_id} not found", "RepoNotFound")
        if write and not self.state.can_write(self.user, ns):
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo_id, repo

    def _commit_of(self, repo: GitRepo, revision: str) -> str:
        try:
            return repo.resolve(unquote(revision))
        except RevisionNotFound:
            raise HubError(404, f"Invalid rev id: {unquote(revision)}", "RevisionNotFound")

    # -- account ----------------------------------------------------------------------------------------------
    def whoami(self):
        if self.user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        orgs = [{"name": o, "type": "org"} for o in self.state.orgs.get(self.user, [])]
        self._send_json({"type": "user", "name": self.user, "fullname": self.user, "orgs": orgs,
                         "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}})

    # -- repos ------------------------------------------------------------------------------------------------
    def create_repo(self):
        payload = self._json_body()
        if self.user is None:
            raise HubError(401, "You must be authenticated to create a repo")
        name, ns = payload.get("name") or "", payload.get("organization") or self.user
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIX:
            raise HubError(400, f"invalid repo type {repo_type!r}")
        if not (valid_name(name) and valid_name(ns)):
            raise HubError(400, "Repository names may only contain letters, digits, '-', '_' and '.'")
        if not self.state.can_write(self.user, ns):
            raise HubError(403, f"You don't have the rights to create a repo under the namespace {ns}")
        repo_id = f"{ns}/{name}"
        url = f"{self._base()}/{URL_PREFIX[repo_type]}{repo_id}"
        private = payload.get("private", payload.get("visibility") == "private")
        with self.state.meta_lock:
            if (repo_type, repo_id) in self.state.repos:
                raise HubError(409, "You already created this model repo", extra_json={"url": url})
            path = self.state.repo_path(repo_type, repo_id)
            repo = GitRepo.create(path, self.user)
            self.state.repos[(repo_type, repo_id)] = repo
            self.state.repo_meta[(repo_type, repo_id)] = {"private": bool(private), "created": _now()}
        self._send_json({"url": url, "name": repo_id, "id": repo_id})

    def delete_repo(self):
        payload = self._json_body()
        ns = payload.get("organization") or self.user or ""
        repo_type = payload.get("type") or "model"
        self._repo(repo_type, ns, payload.get("name", ""), write=True)
        with self.state.meta_lock:
            self.state.repos.pop((repo_type, f"{ns}/{payload['name']}"))
        self._send_json({})

    def repo_info(self, rtype, ns, name, rev="main"):
        repo_id, repo = self._repo(rtype, ns, name)
        commit = self._commit_of(repo, rev)
        meta = self.state.repo_meta[(REPO_TYPES[rtype], repo_id)]
        files = [e for e in repo.entries(commit, recursive=True) if e.kind == "file"]
        card = _card_metadata(repo, commit)
        blobs = self.query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for e in files:
            sib = {"rfilename": e.path}
            if blobs:
                sib.update(size=e.size, blobId=e.oid)
                if e.lfs_oid:
                    sib["lfs"] = {"sha256": e.lfs_oid, "size": e.size, "pointerSize": e.pointer_size}
            siblings.append(sib)
        last = repo.log(commit, limit=1)[0]
        tags = card.get("tags") if isinstance(card.get("tags"), list) else []
        self._send_json({
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "modelId": repo_id,
            "author": ns, "sha": commit, "lastModified": last["date"], "createdAt": meta["created"],
            "private": meta["private"], "gated": False, "disabled": False, "downloads": 0, "likes": 0,
            "library_name": card.get("library_name"), "tags": tags, "cardData": card or None,
            "siblings": siblings,
        })

    # -- README metadata --------------------------------------------------------------------------------------
    def validate_yaml(self):
        payload = self._json_body()
        content = payload.get("content")
        if not isinstance(content, str):
            raise HubError(400, "content must be a string")
        errors, warnings = _validate_card(content)
        status = 400 if errors else 200
        self._send_json({"errors": [{"message": m} for m in errors], "warnings": [{"message": m} for m in warnings]},
                        status=status)

    # -- upload -----------------------------------------------------------------------------------------------
    def preupload(self, rtype, ns, name, rev):
        payload = self._json_body()
        _repo_id, repo = self._repo(rtype, ns, name, write=True)
        self._reject_pr()
        commit = self._commit_of(repo, rev)
        out = []
        for f in payload.get("files", []):
            path, size = f.get("path"), f.get("size")
            if not isinstance(path, str) or not isinstance(size, int):
                raise HubError(400, "each file needs a path and a size")
            sample = base64.b64decode(f.get("sample", ""))
            lfs = size > REGULAR_MAX_BYTES or path.endswith(LFS_SUFFIXES) or b"\0" in sample
            existing = repo.file(commit, path)
            oid = None
            if existing is not None:
                oid = existing.lfs_oid if lfs else (None if existing.lfs_oid else existing.oid)
            out.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._send_json({"files": out, "commitOid": commit})

    def lfs_batch(self, rtype=None, ns=None, name=None, **_):
        if rtype is None:  # model repos have no type prefix in git URLs
            rtype = "models"
        payload = self._json_body()
        repo_id, _repo = self._repo(rtype, ns, name, write=payload.get("operation") == "upload")
        if payload.get("operation") != "upload":
            raise HubError(400, "only the upload operation is supported")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj.get("oid"), obj.get("size")
            if not (isinstance(oid, str) and re.fullmatch(r"[0-9a-f]{64}", oid) and isinstance(size, int)):
                objects.append({"oid": str(oid), "size": int(size or 0),
                                "error": {"code": 422, "message": "invalid oid or size"}})
                continue
            item = {"oid": oid, "size": size, "authenticated": True}
            if not self.state.lfs.has(oid, size):
                sig = self.state.sign(oid, size)
                item["actions"] = {
                    "upload": {"href": f"{self._base()}/lfs-storage/{oid}?size={size}&sig={sig}", "expires_in": 3600},
                    "verify": {"href": f"{self._base()}/{URL_PREFIX[REPO_TYPES[rtype]]}{repo_id}.git/info/lfs/objects/verify",
                               "header": {"Authorization": self.headers.get("Authorization", "")}},
                }
            objects.append(item)
        body = json.dumps({"transfer": "basic", "objects": objects}).encode()
        self._send(200, body, ctype="application/vnd.git-lfs+json")

    def lfs_put(self, oid):
        # Presigned like an S3 URL: no Authorization header, the signature is the credential.
        size = int(self.query.get("size", ["-1"])[0])
        sig = self.query.get("sig", [""])[0]
        if not hmac.compare_digest(sig, self.state.sign(oid, size)):
            raise HubError(403, "bad upload signature")
        try:
            self.state.lfs.put(oid, size, [self._body()])
        except GitError as err:
            raise HubError(400, str(err))
        self._send(200, b"", headers={"ETag": f'"{oid}"'})

    def lfs_verify(self, rtype=None, ns=None, name=None, **_):
        payload = self._json_body()
        self._repo(rtype or "models", ns, name, write=True)
        if not self.state.lfs.has(payload.get("oid", ""), payload.get("size")):
            raise HubError(404, "object not found in LFS storage")
        self._send_json({"success": True})

    def commit(self, rtype, ns, name, rev):
        raw = self._body()
        repo_id, repo = self._repo(rtype, ns, name, write=True)
        self._reject_pr()
        branch = unquote(rev)
        if not repo.has_ref(f"refs/heads/{branch}"):
            raise HubError(404, f"Invalid rev id: {branch} is not a branch", "RevisionNotFound")
        header, operations = None, []
        try:
            lines = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
        except ValueError:
            raise HubError(400, "commit payload is not NDJSON")
        for item in lines:
            key, value = item.get("key"), item.get("value") or {}
            path = value.get("path", "")
            if key != "header" and not _safe_repo_path(path.rstrip("/")):
                raise HubError(400, f"invalid path {path!r}")
            if key == "header":
                header = value
            elif key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, "only base64 file content is supported")
                operations.append(("add", path, base64.b64decode(value["content"])))
            elif key == "lfsFile":
                oid, size = value.get("oid", ""), value.get("size")
                if not self.state.lfs.has(oid) or (size is not None and not self.state.lfs.has(oid, size)):
                    raise HubError(422, f"LFS object {oid} for {path} was not uploaded")
                size = self.state.lfs.path(oid).stat().st_size
                operations.append(("add", path, pointer_bytes(oid, size)))
            elif key == "deletedFile":
                operations.append(("delete", path))
            elif key == "deletedFolder":
                operations.append(("delete_folder", path.rstrip("/")))
            else:
                raise HubError(400, f"unknown commit operation {key!r}")
        if header is None or not header.get("summary"):
            raise HubError(400, "commit header with a summary is required")
        for op in operations:
            if op[0] == "add" and op[1] == "README.md":
                errors, _ = _validate_card(op[2].decode("utf-8", errors="replace"))
                if errors:
                    raise HubError(400, "Invalid metadata in README.md: " + "; ".join(errors))
        try:
            oid = repo.commit(branch, operations, header["summary"], header.get("description", ""), self.user,
                              parent_commit=header.get("parentCommit"))
        except ConflictError as err:
            raise HubError(412, str(err))
        except GitError as err:
            raise HubError(400, str(err))
        prefix = URL_PREFIX[REPO_TYPES[rtype]]
        self._send_json({"success": True, "commitOid": oid, "commitUrl": f"{self._base()}/{prefix}{repo_id}/commit/{oid}",
                         "pullRequestUrl": None})

    def _reject_pr(self):
        if self.query.get("create_pr", ["0"])[0] in ("1", "true"):
            raise HubError(400, "this test Hub does not support pull requests")

    # -- refs -------------------------------------------------------------------------------------------------
    def list_refs(self, rtype, ns, name):
        _repo_id, repo = self._repo(rtype, ns, name)
        fmt = lambda rows: [{"name": n, "ref": r, "targetCommit": c} for n, r, c in rows]  # noqa: E731
        self._send_json({"branches": fmt(repo.refs("heads")), "tags": fmt(repo.refs("tags")), "converts": [],
                         "pullRequests": []})

    def create_branch(self, rtype, ns, name, branch):
        payload = self._json_body()
        _repo_id, repo = self._repo(rtype, ns, name, write=True)
        branch = unquote(branch)
        if not _safe_ref(branch):
            raise HubError(400, f"invalid branch name {branch!r}")
        start = self._commit_of(repo, payload.get("startingPoint") or "main")
        try:
            repo.create_ref(f"refs/heads/{branch}", start)
        except ConflictError:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        self._send_json({})

    def delete_branch(self, rtype, ns, name, branch):
        self._delete_ref(rtype, ns, name, f"refs/heads/{unquote(branch)}")

    def create_tag(self, rtype, ns, name, rev):
        payload = self._json_body()
        _repo_id, repo = self._repo(rtype, ns, name, write=True)
        tag = payload.get("tag") or ""
        if not _safe_ref(tag):
            raise HubError(400, f"invalid tag name {tag!r}")
        commit = self._commit_of(repo, rev)
        try:
            repo.create_ref(f"refs/tags/{tag}", commit, payload.get("message"), author=self.user)
        except ConflictError:
            raise HubError(409, f"Tag {tag} already exists")
        self._send_json({})

    def delete_tag(self, rtype, ns, name, tag):
        self._delete_ref(rtype, ns, name, f"refs/tags/{unquote(tag)}")

    def _delete_ref(self, rtype, ns, name, ref):
        _repo_id, repo = self._repo(rtype, ns, name, write=True)
        try:
            repo.delete_ref(ref)
        except RevisionNotFound:
            raise HubError(404, f"Invalid rev id: {ref}", "RevisionNotFound")
        self._send_json({})

    def list_commits(self, rtype, ns, name, rev):
        _repo_id, repo = self._repo(rtype, ns, name)
        commit = self._commit_of(repo, rev)
        self._send_json([{"id": c["id"], "title": c["title"], "message": c["message"], "date": c["date"],
                          "authors": [{"user": c["author"]}]} for c in repo.log(commit)])

    # -- trees ------------------------------------------------------------------------------------------------
    def tree(self, rtype, ns, name, rev, path=""):
        _repo_id, repo = self._repo(rtype, ns, name)
        commit = self._commit_of(repo, rev)
        path = unquote(path).strip("/")
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        try:
            entries = repo.entries(commit, path, recursive=recursive)
        except GitError:
            raise HubError(404, f"{path} does not exist on {rev}", "EntryNotFound")
        self._send_json([_entry_json(e) for e in entries])

    def paths_info(self, rtype, ns, name, rev):
        payload = self._json_body()
        _repo_id, repo = self._repo(rtype, ns, name)
        commit = self._commit_of(repo, rev)
        paths = payload.get("paths", [])
        paths = [paths] if isinstance(paths, str) else paths
        out = []
        for p in paths:
            entry = repo.file(commit, p)
            if entry is not None:
                out.append(_entry_json(entry))
            else:
                parent, _, leaf = p.rstrip("/").rpartition("/")
                try:
                    out += [_entry_json(e) for e in repo.entries(commit, parent) if e.path == p.rstrip("/")]
                except GitError:
                    pass
        self._send_json(out)

    # -- downloads --------------------------------------------------------------------------------------------
    def resolve(self, ns, name, rev, path, rtype="models"):
        head = self.command == "HEAD"
        _repo_id, repo = self._repo(rtype, ns, name)
        commit = self._commit_of(repo, rev)
        path = unquote(path)
        entry = repo.file(commit, path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit})
        headers = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes", "Cache-Control": "no-cache"}
        if entry.lfs_oid:
            headers.update({"ETag": f'"{entry.lfs_oid}"', "X-Linked-Etag": f'"{entry.lfs_oid}"',
                            "X-Linked-Size": str(entry.size)})
            data_path = self.state.lfs.path(entry.lfs_oid)
            data = b"" if head else data_path.read_bytes()
        else:
            headers["ETag"] = f'"{entry.oid}"'
            data = b"" if head else repo.blob(entry.oid)
        size = entry.size
        status = 200
        range_header = self.headers.get("Range")
        if range_header and (m := re.fullmatch(r"bytes=(\d+)-(\d*)", range_header.strip())):
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else size - 1
            if start >= size and size > 0:
                raise HubError(416, "range not satisfiable", extra_headers={"Content-Range": f"bytes */{size}"})
            end = min(end, size - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            status, data = 206, data[start:end + 1]
            size = end - start + 1
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _entry_json(e) -> dict:
    if e.kind == "directory":
        return {"type": "directory", "oid": e.oid, "size": 0, "path": e.path}
    out = {"type": "file", "oid": e.oid, "size": e.size, "path": e.path}
    if e.lfs_oid:
        out["lfs"] = {"oid": e.lfs_oid, "size": e.size, "pointerSize": e.pointer_size}
    return out


def _safe_repo_path(path: str) -> bool:
    parts = path.split("/")
    return bool(path) and not path.startswith("/") and all(p not in ("", ".", "..", ".git") for p in parts)


def _safe_ref(name: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}", name)) and ".." not in name and not name.endswith(
        (".lock", "/", "."))


def _split_front_matter(content: str) -> str | None:
    m = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.S)
    return m.group(1) if m else None


def _validate_card(content: str) -> tuple[list[str], list[str]]:
    """The metadata checks the Hub makes on a model card's YAML header (the subset forgetctl can trip)."""
    block = _split_front_matter(content)
    if block is None:
        return [], ["Empty or missing yaml metadata in repo card"]
    try:
        data = yaml.safe_load(block)
    except yaml.YAMLError as err:
        return [f"Invalid YAML: {' '.join(str(err).split())}"], []
    if data is None:
        return [], ["Empty or missing yaml metadata in repo card"]
    if not isinstance(data, dict):
        return ["YAML metadata must be a mapping"], []
    errors = []
    for key in ("tags", "datasets", "language"):
        value = data.get(key)
        if value is not None and not (isinstance(value, str) or (
                isinstance(value, list) and all(isinstance(v, str) for v in value))):
            errors.append(f'"{key}" must be a string or an array of strings')
    base = data.get("base_model")
    if base is not None and not (isinstance(base, str) or (isinstance(base, list) and all(isinstance(b, str) for b in base))):
        errors.append('"base_model" must be a string or an array of strings')
    for key in ("library_name", "pipeline_tag", "license"):
        if key in data and not isinstance(data[key], str):
            errors.append(f'"{key}" must be a string')
    return errors, []


def _card_metadata(repo: GitRepo, commit: str) -> dict:
    entry = repo.file(commit, "README.md")
    if entry is None or entry.lfs_oid:
        return {}
    block = _split_front_matter(repo.blob(entry.oid).decode("utf-8", errors="replace"))
    try:
        data = yaml.safe_load(block) if block else None
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _match(pattern: str, segments: list[str]) -> dict | None:
    """Match URL segments against a pattern like 'api/{rtype}/{ns}/{name}/tree/{rev}/{path*}'."""
    parts = pattern.split("/")
    out: dict[str, str] = {}
    for i, part in enumerate(parts):
        if part.endswith("*}"):
            rest = segments[i:]
            if not rest:
                return None
            out[part[1:-2]] = "/".join(rest)
            return out
        if i >= len(segments):
            return None
        seg = segments[i]
        if part.startswith("{"):
            key = part[1:-1]
            if key == "rtype" and seg not in REPO_TYPES:
                return None
            if key == "name" and seg.endswith(".git"):
                return None
            out[key] = seg
        elif part.startswith("<") and part.endswith(".git>"):
            if not seg.endswith(".git"):
                return None
            out[part[1:-5]] = seg[:-4]
        elif part != seg:
            return None
    return out if len(segments) == len(parts) else None


H = HubHandler
ROUTES = [
    (("GET", "api/whoami-v2"), H.whoami),
    (("POST", "api/repos/create"), H.create_repo),
    (("DELETE", "api/repos/delete"), H.delete_repo),
    (("POST", "api/validate-yaml"), H.validate_yaml),
    (("GET", "api/{rtype}/{ns}/{name}"), H.repo_info),
    (("GET", "api/{rtype}/{ns}/{name}/revision/{rev}"), H.repo_info),
    (("POST", "api/{rtype}/{ns}/{name}/preupload/{rev}"), H.preupload),
    (("POST", "api/{rtype}/{ns}/{name}/commit/{rev}"), H.commit),
    (("GET", "api/{rtype}/{ns}/{name}/refs"), H.list_refs),
    (("POST", "api/{rtype}/{ns}/{name}/branch/{branch}"), H.create_branch),
    (("DELETE", "api/{rtype}/{ns}/{name}/branch/{branch}"), H.delete_branch),
    (("POST", "api/{rtype}/{ns}/{name}/tag/{rev}"), H.create_tag),
    (("DELETE", "api/{rtype}/{ns}/{name}/tag/{tag}"), H.delete_tag),
    (("GET", "api/{rtype}/{ns}/{name}/commits/{rev}"), H.list_commits),
    (("GET", "api/{rtype}/{ns}/{name}/tree/{rev}"), H.tree),
    (("GET", "api/{rtype}/{ns}/{name}/tree/{rev}/{path*}"), H.tree),
    (("POST", "api/{rtype}/{ns}/{name}/paths-info/{rev}"), H.paths_info),
    (("POST", "{ns}/<name.git>/info/lfs/objects/batch"), H.lfs_batch),
    (("POST", "{rtype}/{ns}/<name.git>/info/lfs/objects/batch"), H.lfs_batch),
    (("POST", "{ns}/<name.git>/info/lfs/objects/verify"), H.lfs_verify),
    (("POST", "{rtype}/{ns}/<name.git>/info/lfs/objects/verify"), H.lfs_verify),
    (("PUT", "lfs-storage/{oid}"), H.lfs_put),
    (("GET", "{ns}/{name}/resolve/{rev}/{path*}"), H.resolve),
    (("HEAD", "{ns}/{name}/resolve/{rev}/{path*}"), H.resolve),
    (("GET", "{rtype}/{ns}/{name}/resolve/{rev}/{path*}"), H.resolve),
    (("HEAD", "{rtype}/{ns}/{name}/resolve/{rev}/{path*}"), H.resolve),
]


class HubServer:
    """Start with `with HubServer(root, tokens={"hf_x": "alice"}) as hub:`; `hub.url` is the endpoint."""

    def __init__(self, root: Path, tokens: dict[str, str], orgs: dict[str, list[str]] | None = None):
        self.state = HubState(root, tokens, orgs)
        handler = type("BoundHubHandler", (HubHandler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="test-hub", daemon=True)

    def start(self) -> "HubServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def git_repo(self, repo_id: str, repo_type: str = "model") -> GitRepo:
        """The bare git repository behind a Hub repo (for tests that check the real git state)."""
        return self.state.repos[(repo_type, repo_id)]


__all__ = ["HubServer", "HubState"]
