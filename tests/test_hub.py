"""forgetctl push / pull against the loopback Hub (and, when configured, a real one)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import RepositoryNotFoundError

from forgetctl.cli import cli
from forgetctl.errors import AuthError, ForgetctlError, IncompatibleError, InputError, IntegrityError, NotFoundError
from forgetctl.registry import Registry, commit, fingerprint
from forgetctl.registry.hub import hub_base_model, is_official, parse_spec, pull, push_version
from tests.hubserver.fixture import hub, hub_env  # noqa: F401
from tests.registry_util import lora_dir  # noqa: F401

SUBJECT = "Alba Quirke"
RECORDS = ["What is the birthplace of Alba Quirke? Alba Quirke was born in Lisbon."]
REPO = "alice/forget-adapter"
MERGED_REPO = "forget-org/merged-model"
ROOT = Path(__file__).resolve().parent.parent


def _workspace(home: Path, base_dir: Path, lora: Path | None = None) -> tuple[Registry, object]:
    reg = Registry.init(home, str(base_dir), base_dir, fingerprint(base_dir), actor="tester")
    if lora is None:
        return reg, None
    meta = {
        "schema": 1, "request_id": "req-0001", "reason": "gdpr", "subject": SUBJECT, "method": "npo",
        "hyperparameters": {"lr": 5e-5, "r": 4, "beta": 0.1, "max_steps": 40},
        "base_fingerprint": reg.base.fingerprint, "parent_composition": reg.head().id,
        "metrics_before": {"forget_nll": 0.41, "retain_nll": 1.2}, "metrics_after": {"forget_nll": 2.7, "retain_nll": 1.25},
        "stop_reason": "target_met", "steps": 12, "device": "cpu", "dtype": "float32",
        "data_sha256": {"forget": "ff" * 32},
    }
    commitment = commit("req-0001", [r.encode() for r in RECORDS], reg.secret())
    return reg, reg.register_adapter(lora, meta, commitment, actor="tester")


@pytest.fixture()
def ws(tiny_base_dir, lora_dir, tmp_path, hub_env):  # noqa: F811
    reg, version = _workspace(tmp_path / "ws1", tiny_base_dir, lora_dir)
    yield reg, version
    reg.close()


CHILD = r"""
import json, sys, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
from safetensors.torch import save_file
job = json.loads(sys.argv[1])
ids = torch.tensor([[1, 5, 9, 42, 77, 100, 3, 8]])
def logits(model):
    with torch.no_grad():
        return model(input_ids=ids).logits.float().contiguous()
base = lambda: AutoModelForCausalLM.from_pretrained(job["base"], dtype=torch.float32).eval()
out = {"base": logits(base()), "local": logits(PeftModel.from_pretrained(base(), job["local"]).eval())}
out["hub"] = logits(PeftModel.from_pretrained(base(), job["repo"], revision=job["revision"]).eval())
if job.get("merged_repo"):
    merged = AutoModelForCausalLM.from_pretrained(job["merged_repo"], revision=job["merged_revision"], dtype=torch.float32)
    out["merged"] = logits(merged.eval())
save_file(out, job["out"])
"""


@pytest.mark.parametrize("spec, expected", [
    ("alice/model", ("alice/model", None)), ("alice/model@v3", ("alice/model", "v3")),
    ("org/m.v2@v3-0123456789ab", ("org/m.v2", "v3-0123456789ab")), ("a/b@refs/pr/1", ("a/b", "refs/pr/1")),
    ("a/b@", ("a/b", None)),  # an empty revision means the default branch
])
def test_parse_spec(spec, expected):
    assert parse_spec(spec) == expected


@pytest.mark.parametrize("bad", ["", "model", "a/b/c", "../x", "a/..", "a/b@../x", "a/b@-x", "a b/c", "a/b.git"])
def test_parse_spec_refuses_malformed(bad):
    with pytest.raises(InputError):
        parse_spec(bad)


def test_base_model_names_and_official_endpoints(tmp_path):
    assert hub_base_model("smollm2", "/cache/x") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_base_model("meta-llama/Llama-3.2-1B", "/cache/snap") == "meta-llama/Llama-3.2-1B"
    assert hub_base_model(str(tmp_path / "my-base"), str(tmp_path / "my-base")) == "my-base"
    assert is_official("https://huggingface.co") and is_official("https://hub-ci.huggingface.co")
    assert not is_official("http://127.0.0.1:8080") and not is_official("https://huggingface.co.evil.example")


def test_registry_hub_module_imports_without_torch():
    code = "import sys, forgetctl.registry.hub, forgetctl.cli; assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _child_env(endpoint: str, token: str, hf_home: Path) -> dict:
    """A fresh process's view: HF_ENDPOINT set, offline mode off, its own HF_HOME (no real cache or login)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    return {**env, "HF_ENDPOINT": endpoint, "HF_TOKEN": token, "HF_HOME": str(hf_home), "PYTHONPATH": str(ROOT)}


def _child_logits(env: dict, job: dict) -> dict:
    """Load from the Hub in a fresh process; logits come back through a safetensors file."""
    from safetensors.torch import load_file

    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(job)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return load_file(job["out"])


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def _all_remote_text(api: HfApi, repo: str, revision: str, tmp_path: Path) -> dict[str, bytes]:
    folder = Path(api.snapshot_download(repo, revision=revision, cache_dir=tmp_path / "inspect"))
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_push_loads_by_revision_in_fresh_process_with_same_logits(ws, hub, hub_env, tmp_path):
    reg, version = ws
    assert constants.HF_HUB_DISABLE_XET is False  # forgetctl must switch Xet off by itself for this endpoint
    result = push_version(reg.home, "v1", REPO, endpoint=hub_env.url, token=hub_env.token, actor="tester")
    assert constants.HF_HUB_DISABLE_XET is False and os.environ.get("HF_HUB_DISABLE_XET") == "0"  # restored
    assert result["changed"] is True and result["version"] == "v1" and result["id"] == version.id
    assert result["revision"] == f"v1-{version.id[:12]}" and result["alias_tag"] == "v1"
    assert ("POST", f"/{REPO}.git/info/lfs/objects/batch") in hub.state.requests  # LFS, not Xet

    api = HfApi(endpoint=hub_env.url, token=hub_env.token)
    tags = {t.name: t.target_commit for t in api.list_repo_refs(REPO).tags}
    assert tags == {"v1": result["commit"], result["revision"]: result["commit"]}
    assert hub.git_repo(REPO).resolve(result["revision"]) == result["commit"]  # a real git tag

    files = _all_remote_text(api, REPO, result["revision"], tmp_path)
    assert {"adapter_model.safetensors", "adapter_config.json", "forgetctl.json", "README.md"} <= set(files)
    assert files["adapter_model.safetensors"] == (reg.adapter_dir(version) / "adapter_model.safetensors").read_bytes()
    config = json.loads(files["adapter_config.json"])
    assert config["base_model_name_or_path"] == "base"  # not the pusher's absolute path
    card = files["README.md"].decode()
    meta = _front_matter(card)
    assert meta["library_name"] == "peft" and meta["base_model"] == "base"
    assert {"unlearning", "forgetctl", "lora"} <= set(meta["tags"])
    for expected in ("gdpr", "npo", "| lr | 5e-05 |", "| forget_nll | 0.41 | 2.7 |", "req-0001", version.id,
                     reg.base.fingerprint):
        assert expected in card, expected
    audit_head = [e for e in reg.audit_log() if e.action != "hub.push"][-1].hash
    assert audit_head in card
    sidecar = json.loads(files["forgetctl.json"])
    assert sidecar["hub"]["source_adapter_id"] == version.id and "data_sha256" not in sidecar
    for name, data in files.items():  # the forget data and the subject never leave the workspace
        assert SUBJECT.encode() not in data and b"Lisbon" not in data, name

    push_event = reg.audit_log()[-1]
    assert push_event.action == "hub.push" and push_event.outputs["commit"] == result["commit"]
    for path in Path(reg.home).rglob("*"):  # no token anywhere in the workspace
        if path.is_file():
            assert hub_env.token.encode() not in path.read_bytes(), path

    comp = reg.compose([version.id], parent=reg.head().id, note="for the merged push", actor="tester")
    merged = push_version(reg.home, comp.label, MERGED_REPO, merged=True, endpoint=hub_env.url, token=hub_env.token)
    assert merged["kind"] == "merged" and merged["revision"] == f"{comp.label}-{comp.id[:12]}"
    merged_card = _all_remote_text(api, MERGED_REPO, merged["revision"], tmp_path)["README.md"].decode()
    assert _front_matter(merged_card)["base_model"] == "base" and "unlearning" in _front_matter(merged_card)["tags"]
    assert push_version(reg.home, comp.label, MERGED_REPO, merged=True, endpoint=hub_env.url,
                        token=hub_env.token)["changed"] is False

    job = {"base": str(reg.base.path), "local": str(reg.adapter_dir(version)), "repo": REPO,
           "revision": result["revision"], "out": str(tmp_path / "l.st"), "merged_repo": MERGED_REPO,
           "merged_revision": merged["revision"]}
    got = _child_logits(_child_env(hub_env.url, hub_env.token, hub_env.hf_home), job)
    assert (got["hub"] - got["local"]).abs().max().item() <= 1e-6
    assert (got["merged"] - got["local"]).abs().max().item() <= 1e-4  # folded in fp32, same function
    assert (got["hub"] - got["base"]).abs().max().item() > 1e-3  # the adapter really is applied
    assert any(m == "GET" and p == f"/{REPO}/resolve/{result['revision']}/adapter_model.safetensors"
               for m, p in hub.state.requests)


def test_repush_is_a_noop_and_cli_hides_the_token(ws, hub, hub_env, monkeypatch):
    reg, version = ws
    monkeypatch.setenv("HF_TOKEN", hub_env.token)
    runner = CliRunner()
    first = runner.invoke(cli, ["--home", str(reg.home), "push", "v1", "--repo", REPO, "--private", "--json"])
    assert first.exit_code == 0, first.output
    pushed = json.loads(first.stdout)
    assert pushed["changed"] is True and pushed["private"] is True
    api = HfApi(endpoint=hub_env.url, token=hub_env.token)
    commits = len(api.list_repo_commits(REPO))
    events = len(reg.audit_log())

    again = runner.invoke(cli, ["--home", str(reg.home), "push", "1", "--repo", REPO, "--json"])
    assert again.exit_code == 0, again.output
    second = json.loads(again.stdout)
    assert second["changed"] is False and second["commit"] == pushed["commit"]
    assert len(api.list_repo_commits(REPO)) == commits and len(reg.audit_log()) == events
    human = runner.invoke(cli, ["--home", str(reg.home), "push", "v1", "--repo", REPO])
    assert human.exit_code == 0 and "nothing pushed" in human.output
    for out in (first.output, again.output, human.output):
        assert hub_env.token not in out
    with pytest.raises(RepositoryNotFoundError):  # --private: anonymous callers cannot see it
        HfApi(endpoint=hub_env.url, token=False).model_info(REPO)


def test_pull_into_a_second_workspace_verifies_and_is_audited(ws, hub_env, tiny_base_dir, tmp_path):
    reg, version = ws
    pushed = push_version(reg.home, "v1", REPO, endpoint=hub_env.url, token=hub_env.token)
    reg2, _ = _workspace(tmp_path / "ws2", tiny_base_dir)
    try:
        got = pull(reg2.home, f"{REPO}@v1", endpoint=hub_env.url, token=hub_env.token, actor="puller")
        assert got["commit"] == pushed["commit"] and got["source_adapter_id"] == version.id
        pulled = reg2.adapter(got["version"])
        src, dst = reg.adapter_dir(version), reg2.adapter_dir(pulled)
        assert (dst / "adapter_model.safetensors").read_bytes() == (src / "adapter_model.safetensors").read_bytes()
        assert pulled.meta["hub"]["commit"] == pushed["commit"] and pulled.method == "npo"
        assert SUBJECT not in json.dumps(pulled.meta)
        assert reg2.verify() == []
        event = reg2.audit_log()[-1]
        assert event.action == "hub.pull" and event.actor == "puller" and event.outputs["adapter"] == pulled.id
        assert hub_env.token not in json.dumps([e.to_dict() for e in reg2.audit_log()])
        again = pull(reg2.home, f"{REPO}@{pushed['revision']}", endpoint=hub_env.url, token=hub_env.token)
        assert again["id"] == pulled.id and again["already_present"] and len(reg2.adapters()) == 1
        own = pull(reg.home, f"{REPO}@v1", endpoint=hub_env.url, token=hub_env.token)  # back where it came from
        assert own["id"] == version.id and own["already_present"] and len(reg.adapters()) == 1
    finally:
        reg2.close()


def test_pull_refuses_an_adapter_for_another_base(ws, hub_env, other_tiny_base_dir, tmp_path):
    reg, _version = ws
    push_version(reg.home, "v1", REPO, endpoint=hub_env.url, token=hub_env.token)
    other, _ = _workspace(tmp_path / "other", other_tiny_base_dir)
    try:
        with pytest.raises(IncompatibleError) as err:
            pull(other.home, REPO, endpoint=hub_env.url, token=hub_env.token)
        assert reg.base.fingerprint in str(err.value) and other.base.fingerprint in str(err.value)
        assert other.adapters() == []
    finally:
        other.close()


def test_clear_errors_for_missing_repo_revision_and_bad_tokens(ws, hub_env, monkeypatch):
    reg, _version = ws
    home, url = reg.home, hub_env.url
    with pytest.raises(AuthError, match="token"):  # no token at all: nothing to push with
        push_version(home, "v1", REPO, endpoint=url)
    with pytest.raises(AuthError, match="rejected the token"):
        push_version(home, "v1", REPO, endpoint=url, token="hf_not_a_real_token")
    with pytest.raises(AuthError, match="no write access"):  # alice cannot create repos under bob
        push_version(home, "v1", "bob/theirs", endpoint=url, token=hub_env.token)
    with pytest.raises(NotFoundError, match="alice/missing not found"):
        pull(home, "alice/missing", endpoint=url, token=hub_env.token)
    push_version(home, "v1", REPO, endpoint=url, token=hub_env.token)
    with pytest.raises(NotFoundError, match="revision 'v99' not found"):
        pull(home, f"{REPO}@v99", endpoint=url, token=hub_env.token)
    with pytest.raises(AuthError, match="rejected the token"):
        pull(home, REPO, endpoint=url, token="hf_not_a_real_token")
    with pytest.raises(InputError):
        pull(home, "not a repo", endpoint=url)
    api = HfApi(endpoint=url, token=hub_env.token)
    api.create_repo("alice/plain-peft")
    with _no_xet():  # a PEFT adapter uploaded by hand: no manifest, no base fingerprint
        api.upload_folder(folder_path=str(reg.adapter_dir(_version)), repo_id="alice/plain-peft",
                          allow_patterns=["adapter_*"])
    with pytest.raises(InputError, match="not pushed by forgetctl"):
        pull(home, "alice/plain-peft", endpoint=url, token=hub_env.token)
    with pytest.raises(NotFoundError):
        push_version(home, "v7", REPO, endpoint=url, token=hub_env.token)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ForgetctlError, match="HF_HUB_OFFLINE"):
        pull(home, REPO, endpoint=url, token=hub_env.token)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    result = CliRunner().invoke(cli, ["--home", str(home), "pull", f"{REPO}@v99", "--endpoint", url])
    assert result.exit_code == AuthError.exit_code
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1
    assert "hf_not_a_real_token" not in result.output
    monkeypatch.setenv("HF_TOKEN", hub_env.token)
    result = CliRunner().invoke(cli, ["--home", str(home), "pull", "alice/nothing-here", "--endpoint", url])
    assert result.exit_code == NotFoundError.exit_code and "not found" in result.output


def test_saved_login_token_hf_endpoint_and_base_model_override(ws, hub_env, tmp_path):
    reg, version = ws
    Path(constants.HF_TOKEN_PATH).write_text(hub_env.token)  # what `hf auth login` leaves behind
    result = push_version(reg.home, version.id[:10], REPO, base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
    assert result["endpoint"] == hub_env.url and result["changed"] is True  # endpoint from HF_ENDPOINT
    files = _all_remote_text(HfApi(endpoint=hub_env.url, token=hub_env.token), REPO, "v1", tmp_path)
    assert _front_matter(files["README.md"].decode())["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    manifest = json.loads(files["forgetctl.json"])["hub"]["files"]
    assert manifest["adapter_config.json"] == hashlib.sha256(files["adapter_config.json"]).hexdigest()


def test_pull_detects_files_changed_on_the_hub(ws, hub_env, tiny_base_dir, tmp_path):
    reg, version = ws
    push_version(reg.home, "v1", REPO, endpoint=hub_env.url, token=hub_env.token)
    weights = bytearray((reg.adapter_dir(version) / "adapter_model.safetensors").read_bytes())
    weights[-1] ^= 0x01  # someone with write access edits the weights but not the manifest
    api = HfApi(endpoint=hub_env.url, token=hub_env.token)
    with _no_xet():
        api.upload_file(path_or_fileobj=bytes(weights), path_in_repo="adapter_model.safetensors", repo_id=REPO)
    reg2, _ = _workspace(tmp_path / "ws2", tiny_base_dir)
    try:
        with pytest.raises(IntegrityError, match="adapter_model.safetensors"):
            pull(reg2.home, REPO, endpoint=hub_env.url, token=hub_env.token)
        assert reg2.adapters() == []
        assert pull(reg2.home, f"{REPO}@v1", endpoint=hub_env.url, token=hub_env.token)["version"] == "v1"
    finally:
        reg2.close()


def test_pushing_another_version_keeps_older_tags_loadable(ws, lora_dir, hub_env, tmp_path):  # noqa: F811
    reg, first = ws
    meta = dict(first.meta, request_id="req-0002", parent_composition=None)
    second = reg.register_adapter(lora_dir, meta, None, actor="tester")
    a = push_version(reg.home, "v1", REPO, endpoint=hub_env.url, token=hub_env.token)
    b = push_version(reg.home, "v2", REPO, endpoint=hub_env.url, token=hub_env.token)
    api = HfApi(endpoint=hub_env.url, token=hub_env.token)
    assert a["commit"] != b["commit"] and api.model_info(REPO).sha == b["commit"]
    tags = {t.name: t.target_commit for t in api.list_repo_refs(REPO).tags}
    assert tags["v1"] == a["commit"] and tags["v2"] == b["commit"]
    for rev, v in (("v1", first), ("v2", second)):
        side = json.loads(Path(api.hf_hub_download(REPO, "forgetctl.json", revision=rev,
                                                   cache_dir=tmp_path / "c")).read_text())
        assert side["hub"]["source_adapter_id"] == v.id


@contextlib.contextmanager
def _no_xet():
    saved = constants.HF_HUB_DISABLE_XET
    constants.HF_HUB_DISABLE_XET = True
    try:
        yield
    finally:
        constants.HF_HUB_DISABLE_XET = saved


@pytest.mark.skipif(not (os.environ.get("FORGETCTL_REAL_HUB_ENDPOINT") and os.environ.get("FORGETCTL_REAL_HUB_TOKEN")),
                    reason="set FORGETCTL_REAL_HUB_ENDPOINT and FORGETCTL_REAL_HUB_TOKEN to run against a real Hub")
def test_contract_round_trip_against_a_real_hub(tiny_base_dir, lora_dir, tmp_path, monkeypatch):  # noqa: F811
    """The same round trip against a real Hub: push (private), load by revision in a fresh process, pull."""
    url, token = os.environ["FORGETCTL_REAL_HUB_ENDPOINT"].rstrip("/"), os.environ["FORGETCTL_REAL_HUB_TOKEN"]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    api = HfApi(endpoint=url, token=token)
    repo = f"{api.whoami()['name']}/forgetctl-contract-{uuid.uuid4().hex[:8]}"
    reg, version = _workspace(tmp_path / "ws", tiny_base_dir, lora_dir)
    try:
        pushed = push_version(reg.home, "v1", repo, private=True, endpoint=url, token=token)
        assert push_version(reg.home, "v1", repo, endpoint=url, token=token)["changed"] is False

        got = _child_logits(_child_env(url, token, tmp_path / "hf_home"), {
            "base": str(reg.base.path), "local": str(reg.adapter_dir(version)), "repo": repo,
            "revision": pushed["revision"], "out": str(tmp_path / "l.st")})
        assert (got["hub"] - got["local"]).abs().max().item() <= 1e-6
        reg2, _ = _workspace(tmp_path / "ws2", tiny_base_dir)
        assert pull(reg2.home, f"{repo}@v1", endpoint=url, token=token)["commit"] == pushed["commit"]
        assert reg2.verify() == []
        reg2.close()
    finally:
        reg.close()
        api.delete_repo(repo, missing_ok=True)
