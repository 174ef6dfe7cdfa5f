"""Names that end up in paths, branches and logs are validated; unknown refs are named."""

import pytest

from forgetctl.errors import InputError, NotFoundError
from forgetctl.registry import resolve_home, validate_name, validate_pointer_name
from tests.registry_util import lora_dir, meta_for, reg  # noqa: F401

BAD_NAMES = ["", "a/b", "a\\b", "..", "x..y", "../../etc/passwd", "line\nbreak", "tab\there", "nul\x00",
             "bidi\u202eevil", " padded", "-rf", "x" * 200]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused(name):
    with pytest.raises(InputError):
        validate_name(name, "request id")


@pytest.mark.parametrize("name", ["req-1", "GDPR 2026/…".replace("/", "-"), "Alba Quirke", "ticket_42.b", "Zoë"])
def test_ordinary_names_pass(name):
    assert validate_name(name, "request id") == name


@pytest.mark.parametrize("name", BAD_NAMES + ["v3", "c12", "42", "deadbeef", "9lives", "has space"])
def test_bad_pointer_names(name):
    with pytest.raises(InputError):
        validate_pointer_name(name)


def test_pointer_names_through_the_registry(reg):
    for bad in ("../prod", "c1", "pro/d", "HEAD", "head"):
        with pytest.raises(InputError):
            reg.set_alias(bad, "HEAD")
    assert reg.set_alias("production", "HEAD") == reg.head()
    assert reg.pointers()["production"] == reg.head().id


@pytest.mark.parametrize("field", ["request_id", "subject"])
def test_bad_labels_in_meta(reg, lora_dir, field):
    with pytest.raises(InputError, match="path separators"):
        reg.register_adapter(lora_dir, meta_for(reg, "req-1", **{field: "a/../b"}), None)


def test_bad_evaluation_label_and_actor(reg):
    with pytest.raises(InputError):
        reg.add_evaluation("HEAD", {"x": 1.0}, "../label")
    with pytest.raises(InputError):
        reg.add_evaluation("HEAD", {"bad\nname": 1.0}, "ok")
    with pytest.raises(InputError, match="actor"):
        reg.audit("note", {}, {}, actor="evil\x1b[31m")


def test_actor_from_environment(reg, monkeypatch):
    monkeypatch.setenv("FORGETCTL_ACTOR", "dpo@example.org")
    assert reg.audit("note", {}, {}).actor == "dpo@example.org"


@pytest.mark.parametrize("ref", ["v99", "99", "nope", "abcdef12"])
def test_unknown_adapter_refs_are_named(reg, ref):
    with pytest.raises(NotFoundError, match=repr(ref)):
        reg.adapter(ref)


@pytest.mark.parametrize("ref", ["c99", "production", "abcdef12"])
def test_unknown_composition_refs_are_named(reg, ref):
    with pytest.raises(NotFoundError, match=repr(ref)):
        reg.composition(ref)


def test_home_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("FORGETCTL_HOME", str(tmp_path / "env"))
    assert resolve_home(tmp_path / "opt") == (tmp_path / "opt").resolve()
    assert resolve_home(None) == (tmp_path / "env").resolve()
    monkeypatch.delenv("FORGETCTL_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert resolve_home(None) == (tmp_path / "user" / ".local" / "share" / "forgetctl").resolve()
