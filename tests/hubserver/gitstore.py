"""Git-backed storage for the loopback Hub: one bare repository per Hub repo, LFS objects by sha256.

Large files are committed as git-lfs pointer files (as the Hub does) and their bytes live in an
object store keyed by sha256, so commit ids, branches and tags are those of a real git repository.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1\n"
_POINTER_RE = re.compile(rb"^version https://git-lfs.github.com/spec/v1\noid sha256:([0-9a-f]{64})\nsize (\d+)\n$")
# Patterns the Hub puts in a new repository's .gitattributes: matching files go to LFS.
LFS_SUFFIXES = (
    ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".msgpack", ".model", ".gguf",
    ".npy", ".npz", ".pkl", ".zip", ".gz", ".tar", ".parquet", ".arrow", ".tflite", ".ot",
)
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES)
REGULAR_MAX_BYTES = 10 * 1024 * 1024
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


class GitError(Exception):
    """A git command failed, or a ref/path does not exist."""


class RevisionNotFound(GitError):
    pass


class ConflictError(GitError):
    pass


@dataclass(frozen=True)
class Entry:
    """A tree entry as the Hub describes it."""

    path: str
    kind: str  # "file" | "directory"
    oid: str  # git object id (blob or tree)
    size: int  # bytes of the real content (LFS size for LFS files)
    lfs_oid: str | None = None
    pointer_size: int | None = None


def valid_name(name: str) -> bool:
    return bool(_SAFE_NAME.match(name)) and ".." not in name and not name.endswith((".git", "."))


def pointer_bytes(sha256: str, size: int) -> bytes:
    return LFS_POINTER_PREFIX + f"oid sha256:{sha256}\nsize {size}\n".encode()


def parse_pointer(data: bytes) -> tuple[str, int] | None:
    if not data.startswith(LFS_POINTER_PREFIX) or len(data) > 1024:
        return None
    m = _POINTER_RE.match(data)
    return (m.group(1).decode(), int(m.group(2))) if m else None


class LfsStore:
    """Content-addressed large-file store (what the Hub keeps on S3)."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, oid: str) -> Path:
        return self.root / oid[:2] / oid

    def has(self, oid: str, size: int | None = None) -> bool:
        p = self.path(oid)
        return p.is_file() and (size is None or p.stat().st_size == size)

    def put(self, oid: str, size: int, chunks) -> None:
        """Store bytes, refusing them unless they hash to `oid` and have `size` bytes."""
        target = self.path(oid)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest, n = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    digest.update(chunk)
                    n += len(chunk)
                    fh.write(chunk)
            if digest.hexdigest() != oid or n != size:
                raise GitError(f"uploaded bytes do not match oid/size ({n} bytes)")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


class GitRepo:
    """One bare repository plus a lock that serialises ref updates."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------------------------------
    def git(self, *args: str, input: bytes | None = None, env: dict | None = None, check: bool = True) -> bytes:
        full_env = {
            **os.environ,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            **(env or {}),
        }
        proc = subprocess.run(
            ["git", f"--git-dir={self.path}", *args], input=input, capture_output=True, env=full_env
        )
        if check and proc.returncode != 0:
            raise GitError(f"git {args[0]} failed: {proc.stderr.decode(errors='replace').strip()}")
        return proc.stdout if proc.returncode == 0 else b""

    @classmethod
    def create(cls, path: Path, author: str) -> "GitRepo":
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "--bare", "-q", "-b", "main", str(path)], check=True, capture_output=True)
        repo = cls(path)
        repo.commit("main", [("add", ".gitattributes", GITATTRIBUTES.encode())], "initial commit", "", author)
        return repo

    # -- refs -------------------------------------------------------------------------------------------------
    def resolve(self, revision: str) -> str:
        """Branch, tag, full or abbreviated commit id -> commit id (RevisionNotFound otherwise)."""
        if not revision or revision.startswith("-") or ".." in revision or "\n" in revision:
            raise RevisionNotFound(revision)
        for candidate in (f"refs/heads/{revision}", f"refs/tags/{revision}", revision):
            if candidate == revision and not re.fullmatch(r"[0-9a-f]{7,40}|refs/[\w./-]+", revision):
                continue
            out = self.git("rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}", check=False).strip()
            if out:
                return out.decode()
        raise RevisionNotFound(revision)

    def refs(self, kind: str) -> list[tuple[str, str, str]]:
        """(name, full ref, target commit) for kind 'heads' or 'tags' (annotated tags are peeled)."""
        out = self.git("for-each-ref", "--format=%(refname)\t%(*objectname)\t%(objectname)", f"refs/{kind}/")
        rows = []
        for line in out.decode().splitlines():
            ref, peeled, obj = line.split("\t")
            rows.append((ref[len(f"refs/{kind}/"):], ref, peeled or obj))
        return rows

    def has_ref(self, ref: str) -> bool:
        return bool(self.git("rev-parse", "--verify", "--quiet", ref, check=False).strip())

    def create_ref(self, ref: str, commit: str, message: str | None = None, author: str = "hub") -> None:
        with self.lock:
            if self.has_ref(ref):
                raise ConflictError(ref)
            if message and ref.startswith("refs/tags/"):
                self.git("tag", "-a", ref[len("refs/tags/"):], commit, "-m", message, env=_identity(author))
            else:
                self.git("update-ref", ref, commit, "0" * 40)

    def delete_ref(self, ref: str) -> None:
        with self.lock:
            if not self.has_ref(ref):
                raise RevisionNotFound(ref)
            self.git("update-ref", "-d", ref)

    # -- trees ------------------------------------------------------------------------------------------------
    def entries(self, commit: str, prefix: str = "", recursive: bool = False) -> list[Entry]:
        """Entries under `prefix` (a folder path, '' for the root) at `commit`; GitError if it is not a folder."""
        treeish = f"{commit}:{prefix}" if prefix else commit
        if prefix and self.git("cat-file", "-t", treeish, check=False).strip() != b"tree":
            raise GitError(f"no folder {prefix!r}")
        args = ["ls-tree", "-l", "-z"] + (["-r", "-t"] if recursive else []) + [treeish]
        out = self.git(*args)
        result = []
        for record in out.split(b"\0"):
            if not record:
                continue
            meta, name = record.split(b"\t", 1)
            _mode, kind, oid, size = meta.split()
            path = (prefix.rstrip("/") + "/" if prefix else "") + name.decode()
            if kind == b"tree":
                result.append(Entry(path, "directory", oid.decode(), 0))
            elif kind == b"blob":
                result.append(self._file_entry(path, oid.decode(), int(size)))
        return result

    def _file_entry(self, path: str, oid: str, size: int) -> Entry:
        if size <= 1024:
            pointer = parse_pointer(self.git("cat-file", "blob", oid))
            if pointer:
                return Entry(path, "file", oid, pointer[1], lfs_oid=pointer[0], pointer_size=size)
        return Entry(path, "file", oid, size)

    def file(self, commit: str, path: str) -> Entry | None:
        out = self.git("ls-tree", "-l", "-z", commit, "--", path, check=False)
        record = out.split(b"\0")[0]
        if not record:
            return None
        meta, name = record.split(b"\t", 1)
        _mode, kind, oid, size = meta.split()
        if kind != b"blob" or name.decode() != path:
            return None
        return self._file_entry(path, oid.decode(), int(size))

    def blob(self, oid: str) -> bytes:
        return self.git("cat-file", "blob", oid)

    def log(self, commit: str, limit: int = 100) -> list[dict]:
        sep = "\x1f"
        out = self.git("log", f"-{limit}", f"--format=%H{sep}%an{sep}%at{sep}%s{sep}%b\x1e", commit)
        commits = []
        for rec in out.decode().split("\x1e"):
            rec = rec.strip("\n")
            if rec:
                sha, author, date, title, body = rec.split(sep)
                when = datetime.fromtimestamp(int(date), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
                commits.append({"id": sha, "author": author, "date": when, "title": title, "message": body.strip()})
        return commits

    # -- commits ----------------------------------------------------------------------------------------------
    def commit(self, branch: str, operations: list[tuple], summary: str, description: str, author: str,
               parent_commit: str | None = None) -> str:
        """Apply ("add", path, bytes) / ("delete", path) / ("delete_folder", path) on top of `branch`.

        Compare-and-swap on the branch ref so concurrent commits can't lose each other.
        """
        ref = f"refs/heads/{branch}"
        with self.lock, tempfile.TemporaryDirectory() as tmp:
            # An empty work tree: plumbing like update-index refuses to run without one, but never reads it here.
            (Path(tmp) / "wt").mkdir()
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index"), "GIT_WORK_TREE": str(Path(tmp) / "wt"),
                   **_identity(author)}
            parent = self.git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False).strip().decode()
            if parent_commit and not (parent and parent.startswith(parent_commit)):
                raise ConflictError(f"branch {branch} is not at {parent_commit}")
            if parent:
                self.git("read-tree", parent, env=env)
            for op in operations:
                if op[0] == "add":
                    _, path, data = op
                    oid = self.git("hash-object", "-w", "--stdin", input=data).strip().decode()
                    self.git("update-index", "--add", "--cacheinfo", f"100644,{oid},{path}", env=env)
                else:
                    _, path = op
                    folder = op[0] == "delete_folder"
                    listed = self.git("ls-files", "-z", "--", path, env=env).split(b"\0")
                    victims = [p.decode() for p in listed if p and (folder or p.decode() == path)]
                    if not victims:
                        raise GitError(f"cannot delete {path!r}: not in the repository")
                    self.git("update-index", "--force-remove", "-z", "--stdin", input=b"\0".join(
                        v.encode() for v in victims) + b"\0", env=env)
            tree = self.git("write-tree", env=env).strip().decode()
            message = summary + ("\n\n" + description if description else "")
            args = ["commit-tree", tree, "-m", message] + (["-p", parent] if parent else [])
            new = self.git(*args, env=env).strip().decode()
            self.git("update-ref", ref, new, parent or "0" * 40)
            return new


def _identity(author: str) -> dict:
    email = f"{author}@users.noreply.localhost"
    return {"GIT_AUTHOR_NAME": author, "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": author, "GIT_COMMITTER_EMAIL": email}
