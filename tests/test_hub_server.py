"""The loopback Hub speaks the protocol the unmodified huggingface_hub client uses (driven only through it)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_download, hf_hub_url, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.hubserver.fixture import ORG, OTHER_TOKEN, hub, hub_env  # noqa: F401
from tests.hubserver.gitstore import parse_pointer

WEIGHTS = bytes(range(256)) * 40  # binary, goes to LFS


@pytest.fixture()
def api(hub_env, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    return HfApi(endpoint=hub_env.url, token=hub_env.token)


def _folder(tmp_path: Path, weights: bytes = WEIGHTS, note: str = "one") -> Path:
    folder = tmp_path / f"upload-{note}"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "config.json").write_text('{"note": "%s"}' % note)
    (folder / "sub" / "extra.txt").write_text("nested")
    (folder / "README.md").write_text("---\nlibrary_name: peft\ntags: [unlearning]\nbase_model: org/base\n---\n# Card\n")
    return folder


def test_create_repo_private_exist_ok_and_namespaces(api, hub, hub_env):
    url = api.create_repo("alice/private-one", private=True)
    assert url.repo_id == "alice/private-one"
    assert api.create_repo("alice/private-one", exist_ok=True).repo_id == "alice/private-one"
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo("alice/private-one")
    assert conflict.value.response.status_code == 409
    api.create_repo(f"{ORG}/shared")  # alice is a member of the org
    with pytest.raises(HfHubHTTPError) as forbidden:
        api.create_repo("bob/not-yours")
    assert forbidden.value.response.status_code == 403
    # Private: visible to its owner, not to another user nor to an anonymous caller.
    assert api.model_info("alice/private-one").private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub_env.url, token=OTHER_TOKEN).model_info("alice/private-one")
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub_env.url, token=False).model_info("alice/private-one")
    assert api.model_info(f"{ORG}/shared").private is False
    # A new repo has a real initial commit on main holding .gitattributes.
    assert hub.git_repo("alice/private-one").resolve("main") == api.model_info("alice/private-one").sha
    assert api.list_repo_files("alice/private-one") == [".gitattributes"]


def test_upload_goes_through_preupload_lfs_batch_put_and_ndjson_commit(api, hub, tmp_path):
    api.create_repo("alice/up")
    info = api.upload_folder(folder_path=_folder(tmp_path), repo_id="alice/up", commit_message="add model")
    calls = hub.state.requests
    assert ("POST", "/api/validate-yaml") in calls
    assert ("POST", "/api/models/alice/up/preupload/main") in calls
    assert ("POST", "/alice/up.git/info/lfs/objects/batch") in calls
    assert any(m == "PUT" and p.startswith("/lfs-storage/") for m, p in calls)
    assert ("POST", "/api/models/alice/up/commit/main") in calls

    git = hub.git_repo("alice/up")
    assert git.resolve("main") == info.oid  # a real git commit id
    assert git.log(info.oid)[0]["title"] == "add model"
    entry = git.file(info.oid, "model.safetensors")
    pointer = parse_pointer(git.blob(entry.oid))  # committed as a git-lfs pointer...
    assert pointer == (hashlib.sha256(WEIGHTS).hexdigest(), len(WEIGHTS))
    assert git.file(info.oid, "config.json").lfs_oid is None  # ...small text stays a regular git blob
    assert sorted(api.list_repo_files("alice/up")) == [".gitattributes", "README.md", "config.json",
                                                       "model.safetensors", "sub/extra.txt"]


def test_download_by_tag_branch_and_commit_serves_exact_bytes(api, hub_env, tmp_path):
    api.create_repo("alice/dl")
    first = api.upload_folder(folder_path=_folder(tmp_path), repo_id="alice/dl", commit_message="v1").oid
    api.create_tag("alice/dl", tag="v1", revision=first, tag_message="registry version 1")
    second_weights = WEIGHTS[::-1]
    second = api.upload_folder(folder_path=_folder(tmp_path, second_weights, "two"), repo_id="alice/dl",
                               commit_message="v2").oid
    assert second != first
    api.create_branch("alice/dl", branch="stable", revision="v1")

    refs = api.list_repo_refs("alice/dl")
    assert {t.name: t.target_commit for t in refs.tags} == {"v1": first}  # annotated tag, peeled
    assert {b.name: b.target_commit for b in refs.branches} == {"main": second, "stable": first}
    assert api.model_info("alice/dl", revision="v1").sha == first

    for rev, expected in (("v1", WEIGHTS), ("stable", WEIGHTS), (first, WEIGHTS), ("main", second_weights)):
        path = hf_hub_download("alice/dl", "model.safetensors", revision=rev, endpoint=hub_env.url,
                               token=hub_env.token, cache_dir=tmp_path / "cache")
        assert Path(path).read_bytes() == expected, rev
    snap = Path(snapshot_download("alice/dl", revision="v1", endpoint=hub_env.url, token=hub_env.token,
                                  cache_dir=tmp_path / "snap"))
    assert (snap / "sub" / "extra.txt").read_text() == "nested"
    assert (snap / "config.json").read_text() == '{"note": "one"}'

    # HEAD metadata: commit id, sha256 ETag for LFS files, real size.
    meta = get_hf_file_metadata(hf_hub_url("alice/dl", "model.safetensors", revision="v1", endpoint=hub_env.url),
                                token=hub_env.token)
    assert (meta.commit_hash, meta.etag, meta.size) == (first, hashlib.sha256(WEIGHTS).hexdigest(), len(WEIGHTS))
    files = {s.rfilename: s for s in api.model_info("alice/dl", revision="v1", files_metadata=True).siblings}
    assert files["model.safetensors"].lfs.sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    assert files["config.json"].lfs is None and files["config.json"].size == len('{"note": "one"}')


def test_identical_reupload_makes_no_commit_and_tags_do_not_move(api, hub, tmp_path):
    api.create_repo("alice/same")
    folder = _folder(tmp_path)
    first = api.upload_folder(folder_path=folder, repo_id="alice/same", commit_message="one").oid
    api.create_tag("alice/same", tag="v1", revision=first)
    again = api.upload_folder(folder_path=folder, repo_id="alice/same", commit_message="again").oid
    assert again == first
    assert len(api.list_repo_commits("alice/same")) == 2  # initial commit + one
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_tag("alice/same", tag="v1", revision="main")
    assert conflict.value.response.status_code == 409
    api.create_tag("alice/same", tag="v1", revision="main", exist_ok=True)
    assert hub.git_repo("alice/same").resolve("v1") == first


def test_branch_commits_deletes_and_parent_commit_check(api, tmp_path):
    api.create_repo("alice/br")
    base = api.upload_folder(folder_path=_folder(tmp_path), repo_id="alice/br", commit_message="base").oid
    api.create_branch("alice/br", branch="dev")
    api.delete_folder("sub", repo_id="alice/br", revision="dev", commit_message="drop sub")
    api.delete_file("config.json", repo_id="alice/br", revision="dev", commit_message="drop config")
    assert sorted(api.list_repo_files("alice/br", revision="dev")) == [".gitattributes", "README.md",
                                                                       "model.safetensors"]
    assert api.model_info("alice/br").sha == base  # main untouched
    with pytest.raises(HfHubHTTPError) as stale:
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/br", revision="dev",
                        parent_commit=base)
    assert stale.value.response.status_code == 412
    with pytest.raises(HfHubHTTPError) as exists:
        api.create_branch("alice/br", branch="dev")
    assert exists.value.response.status_code == 409


def test_errors_map_to_the_clients_exception_types(api, hub_env, tmp_path):
    api.create_repo("alice/err", private=True)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("alice/missing")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("alice/err", revision="v404")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("alice/err", ".gitattributes", revision="v404", endpoint=hub_env.url, token=hub_env.token,
                        cache_dir=tmp_path / "c")
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("alice/err", "nope.bin", endpoint=hub_env.url, token=hub_env.token, cache_dir=tmp_path / "c")
    with pytest.raises(HfHubHTTPError) as bad_token:
        HfApi(endpoint=hub_env.url, token="hf_wrong").whoami()
    assert bad_token.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as bad_token_upload:
        HfApi(endpoint=hub_env.url, token="hf_wrong").upload_file(path_or_fileobj=b"x", path_in_repo="x",
                                                                 repo_id="alice/err")
    assert bad_token_upload.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as not_writer:
        HfApi(endpoint=hub_env.url, token=OTHER_TOKEN).create_tag("alice/err", tag="t")
    assert not_writer.value.response.status_code in (403, 404)
    with pytest.raises(ValueError, match="Invalid metadata"):
        api.upload_file(path_or_fileobj=b"---\ntags: {a: 1}\n---\n", path_in_repo="README.md", repo_id="alice/err")
    assert api.list_repo_files("alice/err") == [".gitattributes"]  # nothing half-committed
    assert api.whoami()["name"] == "alice"


def test_concurrent_commits_to_one_branch_are_all_kept(api):
    from concurrent.futures import ThreadPoolExecutor

    api.create_repo("alice/busy")

    def add(i: int) -> str:
        return api.upload_file(path_or_fileobj=f"file {i}".encode(), path_in_repo=f"f{i}.txt", repo_id="alice/busy",
                               commit_message=f"add {i}").oid

    with ThreadPoolExecutor(4) as pool:
        oids = list(pool.map(add, range(6)))
    assert len(set(oids)) == 6
    assert sorted(api.list_repo_files("alice/busy")) == [".gitattributes"] + [f"f{i}.txt" for i in range(6)]
    assert len(api.list_repo_commits("alice/busy")) == 7
