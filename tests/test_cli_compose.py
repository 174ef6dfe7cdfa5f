"""CLI: merge / squash / rollback / generate, --json output, one-line errors with their exit codes."""

import hashlib
import json

import pytest
from click.testing import CliRunner

from forgetctl.cli import cli
from forgetctl.registry import Registry
from tests.test_rollback import build
from tests.tiny import make_lora_adapter


@pytest.fixture(scope="module")
def raw(tiny_base_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-raw")
    return [make_lora_adapter(tiny_base_dir, root / f"r{i}", seed=20 + i, r=2 + i) for i in range(3)]


@pytest.fixture()
def home(tiny_base_dir, raw, tmp_path):
    build(tmp_path / "home", tiny_base_dir, raw).close()
    return tmp_path / "home"


def run(home, *args):
    result = CliRunner().invoke(cli, ["--home", str(home), *args])
    return result


def one_line_error(result, code):
    assert result.exit_code == code, (result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_merge_json_and_human(home, tmp_path):
    r = run(home, "merge", "--out", str(tmp_path / "out"), "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["composition"] == "c3" and data["adapters"] == ["v1", "v2", "v3"]
    for name, digest in data["weight_files"].items():
        assert hashlib.sha256((tmp_path / "out" / name).read_bytes()).hexdigest() == digest
    r = run(home, "merge", "--version", "c1", "--out", str(tmp_path / "out"))
    assert r.exit_code == 0 and "merged c1" in r.stdout and "sha256:" in r.stdout


def test_merge_errors_are_one_line(home, tmp_path):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "a.txt").write_text("mine")
    assert "not a previous forgetctl export" in one_line_error(run(home, "merge", "--out", str(keep)), 2)
    assert (keep / "a.txt").read_text() == "mine"
    one_line_error(run(home, "merge", "--version", "c42", "--out", str(tmp_path / "o")), 3)
    one_line_error(run(tmp_path / "nowhere", "merge", "--out", str(tmp_path / "o")), 3)


def test_rollback_commands(home):
    r = run(home, "rollback", "c1", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["to"] == "c1"
    r = run(home, "rollback", "c3")
    assert r.exit_code == 0 and "HEAD c1 -> c3" in r.stdout
    r = run(home, "rollback", "--without", "v2")
    assert r.exit_code == 0 and "HEAD c3 -> c4" in r.stdout
    assert "warning:" in r.stderr and "v3" in r.stderr
    with Registry.open(home) as reg:
        assert [reg.adapter(a).label for a in reg.head().adapters] == ["v1", "v3"]
    one_line_error(run(home, "rollback"), 2)
    one_line_error(run(home, "rollback", "c1", "--without", "v1"), 2)
    one_line_error(run(home, "rollback", "--without", "v2"), 3)  # already dropped from HEAD


def test_squash_commands(home, tmp_path):
    r = run(home, "squash", "v1", "v2", "--out", str(tmp_path / "sq"), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rank"] == 2 + 3
    assert (tmp_path / "sq" / "adapter_model.safetensors").is_file()
    r = run(home, "squash", "HEAD", "--out", str(tmp_path / "svd"), "--mode", "svd", "--rank", "1")
    assert r.exit_code == 0 and "relative Frobenius error" in r.stdout
    one_line_error(run(home, "squash", "v1", "--out", str(tmp_path / "x"), "--mode", "svd"), 2)
    one_line_error(run(home, "squash", "v1", "--out", str(tmp_path / "sq")), 2)  # not empty: refused


def test_generate_stacked_and_merged_agree(home):
    a = run(home, "generate", "--prompt", "Who is Alba Quirke?", "--max-new-tokens", "6", "--json")
    b = run(home, "generate", "--prompt", "Who is Alba Quirke?", "--max-new-tokens", "6", "--merged", "--json")
    assert a.exit_code == 0 and b.exit_code == 0, (a.output, b.output)
    da, db = json.loads(a.stdout), json.loads(b.stdout)
    assert da["answer"] == db["answer"] and da["merged"] is False and db["merged"] is True
    assert da["adapters"] == ["v1", "v2", "v3"]
    one_line_error(run(home, "generate", "--prompt", "  "), 2)
