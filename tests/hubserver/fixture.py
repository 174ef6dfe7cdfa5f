"""Pytest fixtures for the loopback Hub. Import them into a test module:

    from tests.hubserver.fixture import hub, hub_env  # noqa: F401
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.hubserver.server import HubServer

TOKEN = "hf_test_alice_write_token"
OTHER_TOKEN = "hf_test_bob_write_token"
USER = "alice"
ORG = "forget-org"


@pytest.fixture()
def hub(tmp_path_factory):
    """A fresh Hub on 127.0.0.1 (ephemeral port) with users alice (member of forget-org) and bob."""
    root = tmp_path_factory.mktemp("hub")
    with HubServer(root, tokens={TOKEN: USER, OTHER_TOKEN: "bob"}, orgs={USER: [ORG]}) as server:
        yield server


@dataclass
class HubEnv:
    url: str
    token: str
    hf_home: Path


@pytest.fixture()
def hub_env(hub, tmp_path, monkeypatch) -> HubEnv:
    """Point huggingface_hub (already imported, so its constants too) at the loopback Hub, online, with a
    private HF_HOME so no real cache or saved token is touched. Xet is left to the code under test."""
    from huggingface_hub import constants

    hf_home = tmp_path / "hf_home"
    hf_home.mkdir()
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HOME", str(hf_home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(hf_home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(hf_home / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    # Restored at teardown whatever the code under test sets.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", constants.HF_HUB_DISABLE_XET)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "0")
    return HubEnv(url=hub.url, token=TOKEN, hf_home=hf_home)
