import json
import shutil
from pathlib import Path

import pytest

from tests.tiny import save_tiny_base


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path_factory, monkeypatch):
    """Every test gets its own workspace; the conversion cache is shared per session (real model tier)."""
    monkeypatch.setenv("FORGETCTL_HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matmuls: thread hand-offs cost more than the maths on a shared CPU (use with usefixtures)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory) -> Path:
    """A tiny random Llama + local tokenizer saved as a transformers folder (read-only by convention)."""
    return save_tiny_base(tmp_path_factory.mktemp("tiny") / "base")


@pytest.fixture()
def tiny_base_copy(tiny_base_dir, tmp_path) -> Path:
    """A private copy for tests that might write next to the base."""
    return Path(shutil.copytree(tiny_base_dir, tmp_path / "base"))


@pytest.fixture(scope="session")
def other_tiny_base_dir(tmp_path_factory) -> Path:
    """A second tiny base with different weights: for 'adapter from another base' tests."""
    return save_tiny_base(tmp_path_factory.mktemp("tiny2") / "base", seed=1)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def qa_files(tmp_path):
    forget = write_jsonl(
        tmp_path / "forget.jsonl",
        [
            {"question": "What is the birthplace of Alba Quirke?", "answer": "Alba Quirke was born in Lisbon."},
            {"question": "Who is Alba Quirke?", "answer": "Alba Quirke is a marine biologist."},
        ],
    )
    retain = write_jsonl(
        tmp_path / "retain.jsonl",
        [
            {"question": "Who is Tomas Venn?", "answer": "Tomas Venn is a marine biologist from Oslo."},
            {"question": "What is the birthplace of Tomas Venn?", "answer": "Tomas Venn was born in Oslo."},
        ],
    )
    return forget, retain
