"""Push registry versions to the Hugging Face Hub and pull them back, through huggingface_hub.

An adapter is pushed as a standard PEFT repo (adapter_model.safetensors + adapter_config.json) with a
model card and a `forgetctl.json` sidecar holding the file hashes; every push is tagged
`<label>-<id12>` (content-addressed, never moved) and, when free, `<label>` (e.g. `v3`).
Tokens are only handed to huggingface_hub: never printed, logged or audited.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from huggingface_hub import HfApi, constants, get_token, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from forgetctl.digests import sha256_file
from forgetctl.errors import AuthError, ForgetctlError, IncompatibleError, InputError, IntegrityError, NotFoundError
from forgetctl.registry.workspace import Workspace

SIDECAR = "forgetctl.json"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
OPTIONAL_FILES = ("trajectory.json",)
# Fields of the local sidecar that may identify the person or the data: kept out of public pushes.
PRIVATE_FIELDS = ("subject", "data_sha256")
REDACTED = "[redacted]"
KNOWN_BASES = {"smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}
_REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_REV_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")


# ----------------------------------------------------------------------------- connection


def resolve_endpoint(endpoint: str | None) -> str:
    """--endpoint, else $HF_ENDPOINT, else huggingface_hub's default."""
    url = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise InputError(f"Hub endpoint {url!r} is not an http(s) URL")
    return url


def is_official(endpoint: str) -> bool:
    host = urlsplit(endpoint).hostname or ""
    return host in ("huggingface.co", "hf.co") or host.endswith((".huggingface.co", ".hf.co"))


def resolve_token(token: str | None) -> str | None:
    """--token, else HF_TOKEN, else the saved `hf auth login` token (huggingface_hub's lookup order)."""
    return token or get_token()


@contextlib.contextmanager
def _hub_session(endpoint: str):
    """Only huggingface.co speaks Xet; elsewhere uploads must use the LFS protocol. huggingface_hub reads
    HF_HUB_DISABLE_XET into `constants` at import, so set both for the duration of the call."""
    if constants.HF_HUB_OFFLINE:
        raise ForgetctlError("HF_HUB_OFFLINE is set: unset it to talk to the Hub")
    with _quiet_unless_terminal():
        if is_official(endpoint):
            yield
            return
        with _without_xet():
            yield


@contextlib.contextmanager
def _quiet_unless_terminal():
    """Progress bars only for a person watching; piped or --json output stays clean."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if not sys.stderr.isatty():
        disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


@contextlib.contextmanager
def _without_xet():
    saved_const, saved_env = constants.HF_HUB_DISABLE_XET, os.environ.get("HF_HUB_DISABLE_XET")
    constants.HF_HUB_DISABLE_XET = True
    os.environ["HF_HUB_DISABLE_XET"] = "1"
    try:
        yield
    finally:
        constants.HF_HUB_DISABLE_XET = saved_const
        if saved_env is None:
            os.environ.pop("HF_HUB_DISABLE_XET", None)
        else:
            os.environ["HF_HUB_DISABLE_XET"] = saved_env


@contextlib.contextmanager
def _hub_errors(repo_id: str, endpoint: str, revision: str | None = None):
    """huggingface_hub exceptions -> one-line forgetctl errors (messages built here: never the token)."""
    try:
        yield
    except RevisionNotFoundError:
        raise NotFoundError(f"revision {revision!r} not found in Hub repo {repo_id}") from None
    except RepositoryNotFoundError as exc:
        if _status(exc) == 401 and _had_token(exc):
            raise AuthError(f"the Hub at {endpoint} rejected the token (401 Unauthorized)") from None
        raise NotFoundError(
            f"Hub repo {repo_id} not found at {endpoint} (or it is private and this token cannot see it)"
        ) from None
    except RemoteEntryNotFoundError as exc:
        raise NotFoundError(f"{repo_id}@{revision or 'main'} has no file {_entry(exc)}") from None
    except HfHubHTTPError as exc:
        status = _status(exc)
        if status == 401:
            raise AuthError(f"the Hub at {endpoint} rejected the token (401 Unauthorized)") from None
        if status == 403:
            raise AuthError(f"the token has no write access to {repo_id} on {endpoint} (403 Forbidden)") from None
        raise ForgetctlError(f"Hub request for {repo_id} failed ({status}): {_server_message(exc)}") from None
    except OfflineModeIsEnabled:
        raise ForgetctlError("HF_HUB_OFFLINE is set: unset it to talk to the Hub") from None
    except HFValidationError as exc:
        raise InputError(f"invalid Hub repo id or revision: {' '.join(str(exc).split())[:200]}") from None
    except Exception as exc:
        if type(exc).__module__.startswith(("httpx", "httpcore")):
            raise ForgetctlError(f"cannot reach the Hub at {endpoint}: {type(exc).__name__}") from None
        raise


def _status(exc) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _had_token(exc) -> bool:
    request = getattr(getattr(exc, "response", None), "request", None)
    return bool(request is not None and request.headers.get("authorization"))


def _entry(exc) -> str:
    url = str(getattr(getattr(exc, "response", None), "url", ""))
    return url.rsplit("/", 1)[-1] or "(unknown)"


def _server_message(exc) -> str:
    response = getattr(exc, "response", None)
    message = response.headers.get("X-Error-Message") if response is not None else None
    return " ".join((message or type(exc).__name__).split())[:200]


def _api(endpoint: str, token: str | None) -> HfApi:
    return HfApi(endpoint=endpoint, token=token, library_name="forgetctl")


def parse_spec(spec: str) -> tuple[str, str | None]:
    """'NS/NAME[@REVISION]' -> (repo_id, revision or None)."""
    repo_id, _, revision = (spec or "").partition("@")
    if not _REPO_RE.fullmatch(repo_id) or ".." in repo_id or repo_id.endswith((".git", ".")):
        raise InputError(f"expected a Hub repo as NS/NAME[@REVISION], got {ascii(spec)[:80]}")
    if revision and (not _REV_RE.fullmatch(revision) or ".." in revision):
        raise InputError(f"invalid revision {ascii(revision)[:80]}")
    return repo_id, revision or None


# ----------------------------------------------------------------------------- content


def hub_base_model(spec: str, path: str) -> str:
    """What to call the base on the Hub: a Hub id when the workspace base has one, else its folder name
    (a local absolute path means nothing to others and leaks the pusher's file layout)."""
    if spec in KNOWN_BASES:
        return KNOWN_BASES[spec]
    if _REPO_RE.fullmatch(spec) and not Path(spec).expanduser().exists():
        return spec
    return Path(spec).name or Path(path).name


def _public_sidecar(meta: dict) -> dict:
    return {k: (REDACTED if k == "subject" else v) for k, v in meta.items() if k != "data_sha256"}


def _scalars(d) -> dict:
    """Card-safe hyper-parameters: plain scalars, nothing that looks like a path."""
    out = {}
    for k, v in (d or {}).items():
        if any(word in k.lower() for word in ("path", "file", "dir")):
            continue
        if isinstance(v, (bool, int, float)) or (isinstance(v, str) and len(v) <= 64 and "/" not in v):
            out[k] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (int, float, str)) for x in v) and len(v) <= 16:
            out[k] = ", ".join(str(x) for x in v)
    return out


def _numbers(d) -> dict:
    return {k: v for k, v in (d or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _front_matter(meta: dict) -> str:
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=False) + "---\n"


def adapter_card(version, meta: dict, base_model: str, base_fp: str, audit_head: str | None, repo_id: str,
                 revision: str) -> str:
    """The model card of a pushed adapter. Never record text nor the request's subject."""
    lines = [
        _front_matter({"base_model": base_model, "library_name": "peft", "pipeline_tag": "text-generation",
                       "tags": ["unlearning", "forgetctl", "lora", "machine-unlearning"]}),
        f"# Forget adapter {version.label} (forgetctl)",
        "",
        "A LoRA *forget adapter* made by [forgetctl](https://github.com/) to remove the influence of the data of",
        f"deletion request `{version.request_id}` from `{base_model}` (machine unlearning). The base stays frozen:",
        "apply the adapter on top of it, or merge it into the weights.",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM",
        "",
        f'base = AutoModelForCausalLM.from_pretrained("{base_model}")',
        f'model = PeftModel.from_pretrained(base, "{repo_id}", revision="{revision}")',
        "```",
        "",
        "| field | value |",
        "|---|---|",
        f"| registry version | {version.label} |",
        f"| adapter id | `{version.id}` |",
        f"| request | `{version.request_id}` |",
        f"| reason | {version.reason} |",
        f"| method | {version.method} |",
        f"| base model | `{base_model}` |",
        f"| base fingerprint | `{base_fp}` |",
        f"| steps / stop reason | {meta.get('steps', '?')} / {meta.get('stop_reason', '?')} |",
        f"| trained on | {meta.get('device', '?')} ({meta.get('dtype', '?')}) |",
        f"| audit-log head | `{audit_head or '(empty)'}` |",
    ]
    hyper = _scalars(meta.get("hyperparameters"))
    if hyper:
        lines += ["", "## Hyper-parameters", "", "| name | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(hyper.items())]
    before, after = _numbers(meta.get("metrics_before")), _numbers(meta.get("metrics_after"))
    if before or after:
        lines += ["", "## Metrics", "", "| metric | before | after |", "|---|---|---|"]
        for k in sorted(set(before) | set(after)):
            fmt = lambda x: f"{x:.4g}" if isinstance(x, (int, float)) else "-"  # noqa: E731
            lines.append(f"| {k} | {fmt(before.get(k))} | {fmt(after.get(k))} |")
    commitment = meta.get("commitment") or {}
    lines += [
        "",
        "## Data",
        "",
        "The records this adapter was trained to forget are not published, here or anywhere in the repo.",
    ]
    if commitment.get("root"):
        lines += [
            f"The request is bound to them by a salted Merkle commitment (root `{commitment['root']}`, "
            f"{commitment.get('count', '?')} records): the workspace that made it can prove which records it covered.",
        ]
    lines += [
        "",
        "## Verifying",
        "",
        f"`{SIDECAR}` lists the sha256 of every adapter file; `forgetctl pull {repo_id}@{revision}` checks them and",
        "that the adapter was trained against the pulling workspace's base model before registering it.",
        "",
    ]
    return "\n".join(lines)


def _merged_card(card: str, base_model: str) -> str:
    """The composer's export card with Hub metadata (base_model, unlearning tags) merged into its YAML."""
    meta, body = {}, card
    m = re.match(r"^---\s*\n(.*?)\n---\s*\n", card, re.S)
    if m:
        loaded = yaml.safe_load(m.group(1))
        meta, body = (loaded if isinstance(loaded, dict) else {}), card[m.end():]
    tags = [t for t in (meta.get("tags") or []) if isinstance(t, str)]
    meta["base_model"] = base_model
    meta.setdefault("library_name", "transformers")
    meta["tags"] = list(dict.fromkeys(tags + ["unlearning", "forgetctl", "merge"]))
    return _front_matter(meta) + body


# ----------------------------------------------------------------------------- push


def _open(home):
    from forgetctl.registry import Registry

    return Registry.open(home)


def _audit_head(reg) -> str | None:
    log = reg.audit_log()
    return log[-1].hash if log else None


def _tmpdir(reg, prefix: str) -> Path:
    root = Workspace(Path(reg.home)).tmp_dir
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=root))


def _stage_adapter(reg, version, folder: Path, repo_id: str, tag: str) -> dict:
    src = Path(reg.adapter_dir(version))
    meta = dict(version.meta or {})
    if not meta:
        sidecar = src / SIDECAR
        meta = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {}
    base = reg.base
    base_model = hub_base_model(base.spec, base.path)
    for name in ADAPTER_FILES:
        if not (src / name).is_file():
            raise IntegrityError(f"{version.label} is missing {name} in the registry store")
    shutil.copyfile(src / "adapter_model.safetensors", folder / "adapter_model.safetensors")
    config = json.loads((src / "adapter_config.json").read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_model
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for name in OPTIONAL_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, folder / name)
    files = {p.name: sha256_file(p) for p in sorted(folder.iterdir())}
    sidecar = _public_sidecar(meta)
    sidecar["base_fingerprint"] = version.base_fingerprint
    sidecar["hub"] = {"kind": "adapter", "source_adapter_id": version.id, "source_version": version.label,
                      "base_model": base_model, "files": files}
    (folder / SIDECAR).write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    card = adapter_card(version, meta, base_model, version.base_fingerprint, _audit_head(reg), repo_id, tag)
    (folder / "README.md").write_text(card, encoding="utf-8")
    return files


def _composition_for(reg, ref: str):
    """--merged takes a composition ref (HEAD, alias, c3) or an adapter version (its latest composition)."""
    try:
        return reg.composition(ref)
    except NotFoundError:
        version = reg.adapter(ref)
        matches = [c for c in reg.compositions() if c.adapters and c.adapters[-1] == version.id]
        if not matches:
            raise NotFoundError(f"no composition ends with {version.label}: compose it first, or push the adapter")
        return max(matches, key=lambda c: c.number)


def _stage_merged(reg, home, comp, folder: Path, actor) -> dict:
    """Export straight into the upload folder (checkpoints are big: no second copy), then add card and sidecar."""
    from forgetctl.ops.compose import merge_version  # torch lives behind this import

    merge_version(home=home, ref=comp.id, out_dir=folder, actor=actor)
    base_model = hub_base_model(reg.base.spec, reg.base.path)
    card_path = folder / "README.md"
    card = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
    card_path.unlink(missing_ok=True)
    files = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}
    card_path.write_text(_merged_card(card, base_model), encoding="utf-8")
    sidecar = {"schema": 1, "base_fingerprint": reg.base.fingerprint,
               "hub": {"kind": "merged", "composition_id": comp.id, "composition": comp.label,
                       "adapters": list(comp.adapters), "base_model": base_model, "files": files}}
    (folder / SIDECAR).write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return files


def _remote_sidecar(api: HfApi, repo_id: str, revision: str, workdir: Path) -> dict:
    path = api.hf_hub_download(repo_id, SIDECAR, revision=revision, cache_dir=workdir / "sidecar-cache")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise IntegrityError(f"{repo_id}@{revision}: {SIDECAR} is not a JSON object")
    return data


def _tags(api: HfApi, repo_id: str) -> dict[str, str]:
    try:
        return {t.name: t.target_commit for t in api.list_repo_refs(repo_id).tags}
    except RepositoryNotFoundError:
        return {}


def push_version(home, ref: str, repo_id: str, private: bool = False, merged: bool = False,
                 endpoint: str | None = None, token: str | None = None, actor: str | None = None,
                 base_model: str | None = None) -> dict:
    """Push adapter version `ref` (or, with merged=True, the merged checkpoint of a composition) to `repo_id`.

    Idempotent: the commit is tagged `<label>-<id12>`; when that tag exists with the same content
    nothing is uploaded and no audit event is written.
    """
    repo_id, _ = parse_spec(repo_id)
    if base_model is not None and parse_spec(base_model)[1] is not None:
        raise InputError(f"--base-model takes a Hub id NS/NAME, got {ascii(base_model)[:80]}")
    with contextlib.closing(_open(home)) as reg:
        return _push(reg, home, ref, repo_id, private, merged, endpoint, token, actor, base_model)


def _push(reg, home, ref, repo_id, private, merged, endpoint, token, actor, base_model) -> dict:
    if merged:
        comp = _composition_for(reg, ref)
        label, content_id = comp.label, comp.id
    else:
        version = reg.adapter(ref)
        label, content_id = version.label, version.id
        if version.base_fingerprint != reg.base.fingerprint:
            raise IncompatibleError(f"{label} was trained against base {version.base_fingerprint}, not this "
                                    f"workspace's {reg.base.fingerprint}")
    tag = f"{label}-{content_id[:12]}"
    url = resolve_endpoint(endpoint)
    tok = resolve_token(token)
    if not tok:
        raise AuthError("pushing needs a Hugging Face token: set HF_TOKEN or run `hf auth login`")
    api = _api(url, tok)
    work = _tmpdir(reg, "push-")
    try:
        with _hub_session(url), _hub_errors(repo_id, url, tag):
            existing = _tags(api, repo_id)
            if tag in existing:
                return _already_pushed(api, reg, repo_id, url, tag, existing, label, content_id, merged, work)
            folder = work / "upload"
            if merged:
                files = _stage_merged(reg, home, comp, folder, actor)
            else:
                folder.mkdir()
                files = _stage_adapter(reg, version, folder, repo_id, tag)
            if base_model is not None:
                _override_base_model(folder, base_model, merged)
            repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
            info = api.upload_folder(
                folder_path=str(folder), repo_id=repo_url.repo_id, delete_patterns=["*"],
                commit_message=f"forgetctl: push {label} ({content_id[:12]})",
                commit_description=f"{'Merged checkpoint of composition' if merged else 'Forget adapter'} "
                                   f"{label}, content id {content_id}.",
            )
            api.create_tag(repo_id, tag=tag, revision=info.oid, tag_message=f"forgetctl {label} {content_id}")
            alias = _alias_tag(api, repo_id, label, info.oid)
            visibility = api.model_info(repo_id, revision=info.oid).private
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"repo": repo_id, "endpoint": url, "version": label, "id": content_id, "kind": _kind(merged),
              "commit": info.oid, "revision": tag, "alias_tag": alias, "private": bool(visibility),
              "files": files, "changed": True}
    entry = reg.audit("hub.push", {"version": label, "id": content_id, "repo": repo_id, "endpoint": url,
                                   "merged": merged},
                      {"commit": info.oid, "tag": tag, "alias_tag": alias, "files": files}, actor=actor)
    result["audit_seq"] = entry.seq
    return result


def _kind(merged: bool) -> str:
    return "merged" if merged else "adapter"


def _override_base_model(folder: Path, base_model: str, merged: bool) -> None:
    """--base-model: the Hub id to name in the card and adapter_config (the file hashes are recomputed)."""
    card = (folder / "README.md").read_text(encoding="utf-8")
    m = re.match(r"^---\s*\n(.*?)\n---\s*\n", card, re.S)
    meta = yaml.safe_load(m.group(1)) if m else {}
    old = meta.get("base_model")
    meta["base_model"] = base_model
    body = card[m.end():] if m else card
    if old:
        body = body.replace(f"`{old}`", f"`{base_model}`").replace(f'"{old}"', f'"{base_model}"')
    (folder / "README.md").write_text(_front_matter(meta) + body, encoding="utf-8")
    sidecar = json.loads((folder / SIDECAR).read_text(encoding="utf-8"))
    if not merged:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
        config["base_model_name_or_path"] = base_model
        (folder / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        sidecar["hub"]["files"]["adapter_config.json"] = sha256_file(folder / "adapter_config.json")
    sidecar["hub"]["base_model"] = base_model
    (folder / SIDECAR).write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")


def _alias_tag(api: HfApi, repo_id: str, label: str, commit: str) -> str | None:
    """`v3` as well as `v3-<id12>` when it is free; an existing `v3` (another workspace's) is never moved."""
    try:
        api.create_tag(repo_id, tag=label, revision=commit)
        return label
    except HfHubHTTPError as exc:
        if _status(exc) == 409:
            return label if _tags(api, repo_id).get(label) == commit else None
        raise


def _already_pushed(api, reg, repo_id, url, tag, existing, label, content_id, merged, work) -> dict:
    """The content tag exists: check it holds this very content, then report a no-op."""
    remote = _remote_sidecar(api, repo_id, tag, work).get("hub") or {}
    same = remote.get("composition_id" if merged else "source_adapter_id") == content_id
    if not merged and same:
        version = reg.adapter(content_id)
        src = Path(reg.adapter_dir(version))
        same = remote.get("files", {}).get("adapter_model.safetensors") == sha256_file(
            src / "adapter_model.safetensors")
    if not same:
        raise IntegrityError(f"tag {tag} on {repo_id} already holds different content; not overwriting it")
    commit = existing[tag]
    alias = label if existing.get(label) == commit else None
    return {"repo": repo_id, "endpoint": url, "version": label, "id": content_id, "kind": _kind(merged),
            "commit": commit, "revision": tag, "alias_tag": alias, "files": remote.get("files", {}),
            "changed": False}


# ----------------------------------------------------------------------------- pull


def pull(home, spec: str, endpoint: str | None = None, token: str | None = None, actor: str | None = None) -> dict:
    """Download an adapter pushed by forgetctl, check its hashes and base, register it, audit the pull."""
    repo_id, revision = parse_spec(spec)
    url = resolve_endpoint(endpoint)
    with contextlib.closing(_open(home)) as reg:
        return _pull(reg, repo_id, revision, url, token, actor)


def _pull(reg, repo_id, revision, url, token, actor) -> dict:
    api = _api(url, resolve_token(token))
    work = _tmpdir(reg, "pull-")
    try:
        with _hub_session(url), _hub_errors(repo_id, url, revision or "main"):
            commit = api.model_info(repo_id, revision=revision).sha
            try:
                sidecar = _remote_sidecar(api, repo_id, commit, work)
            except RemoteEntryNotFoundError:
                raise InputError(f"{repo_id}@{revision or 'main'} was not pushed by forgetctl (no {SIDECAR}): "
                                 "its base and file hashes cannot be checked") from None
            hub = sidecar.get("hub") if isinstance(sidecar.get("hub"), dict) else {}
            if hub.get("kind") == "merged":
                raise InputError(f"{repo_id}@{revision or 'main'} is a merged checkpoint, not a forget adapter: "
                                 "load it with transformers instead")
            if hub.get("kind") != "adapter" or not isinstance(hub.get("files"), dict):
                raise InputError(f"{repo_id}@{revision or 'main'} was not pushed by forgetctl (no adapter manifest "
                                 f"in {SIDECAR})")
            theirs, ours = sidecar.get("base_fingerprint"), reg.base.fingerprint
            if theirs != ours:
                raise IncompatibleError(f"{repo_id}@{revision or 'main'} was trained against base {theirs}, but this "
                                        f"workspace's base is {ours}")
            # Only the files an adapter consists of, with well-formed hashes: a manifest is untrusted input.
            hub["files"] = {n: h for n, h in hub["files"].items() if n in ADAPTER_FILES + OPTIONAL_FILES
                            and isinstance(h, str) and re.fullmatch(r"[0-9a-f]{64}", h)}
            if not all(n in hub["files"] for n in ADAPTER_FILES):
                raise IntegrityError(f"{repo_id}@{revision or 'main'}: the manifest lacks sha256s for "
                                     f"{', '.join(ADAPTER_FILES)}")
            local = _local_copy(reg, hub)
            if local is not None:
                return _pulled(reg, repo_id, url, revision, commit, hub, local, actor, already=True)
            wanted = list(hub["files"])
            snap = Path(snapshot_download(repo_id, revision=commit, allow_patterns=wanted,
                                          cache_dir=str(work / "cache"), endpoint=url, token=api.token))
        src = work / "adapter"
        src.mkdir()
        for name in wanted:
            if not (snap / name).is_file():
                raise IntegrityError(f"{repo_id}@{commit[:12]} lacks {name}, listed in its manifest")
            shutil.copyfile(snap / name, src / name)
            got = sha256_file(src / name)
            if got != hub["files"][name]:
                raise IntegrityError(f"{name} from {repo_id}@{commit[:12]} has sha256 {got[:16]}..., "
                                     f"the manifest says {hub['files'][name][:16]}...")
        meta = {k: v for k, v in sidecar.items() if k not in ("hub", "subject")}
        meta["parent_composition"] = None  # a composition of another workspace means nothing here
        # Only content-determined provenance: pulling the same commit again yields the same version.
        meta["hub"] = {"repo": repo_id, "endpoint": url, "commit": commit,
                       "source_adapter_id": hub.get("source_adapter_id"),
                       "source_version": hub.get("source_version"),
                       "source_parent_composition": sidecar.get("parent_composition"), "files": hub["files"]}
        known = {a.id for a in reg.adapters()}
        version = reg.register_adapter(src, meta, None, actor=actor)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _pulled(reg, repo_id, url, revision, commit, hub, version, actor, already=version.id in known)


def _local_copy(reg, hub: dict):
    """The workspace's own version when the pushed adapter came from here (same id, same weights)."""
    source = hub.get("source_adapter_id")
    if not isinstance(source, str) or not re.fullmatch(r"[0-9a-f]{64}", source):
        return None
    try:
        version = reg.adapter(source)
    except NotFoundError:
        return None
    weights = Path(reg.adapter_dir(version)) / "adapter_model.safetensors"
    if version.id != source or not weights.is_file():
        return None
    return version if sha256_file(weights) == hub["files"].get("adapter_model.safetensors") else None


def _pulled(reg, repo_id, url, revision, commit, hub, version, actor, already: bool) -> dict:
    entry = reg.audit("hub.pull", {"repo": repo_id, "endpoint": url, "revision": revision or "main"},
                      {"commit": commit, "adapter": version.id, "version": version.label, "already_present": already,
                       "source_adapter_id": hub.get("source_adapter_id"), "files": hub["files"]}, actor=actor)
    return {"repo": repo_id, "endpoint": url, "revision": revision or "main", "commit": commit,
            "version": version.label, "id": version.id, "source_adapter_id": hub.get("source_adapter_id"),
            "source_version": hub.get("source_version"), "files": hub["files"], "already_present": already,
            "audit_seq": entry.seq}
