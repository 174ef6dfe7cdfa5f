"""Real-model tier: the fictitious-people scenario on the embedded SmolLM2-135M-Instruct.

The deployed model (the base fine-tuned on 14 invented people's records) is built once and cached;
the deletion runs through the public API the CLI uses. The never-seen level is that of the holdout
people, whom the deployed model never saw (scripts/compare_methods.py also builds a model retrained
without the person and finds the two levels within 0.1 nats). Minutes on a 2-core CPU: marked slow.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def world():
    from forgetctl.adapters.base_model import load_base
    from forgetctl.adapters.evaluate import evaluate_model
    from forgetctl.ops import scenario as sc

    person = sc.deployed_people()[0]
    sets, facts = sc.scenario_sets([person]), sc.scenario_facts([person])
    deployed = sc.deployed_model()

    def scores(model, tokenizer):
        return evaluate_model(model, tokenizer, sets, max_new_tokens=24, answer_keys=facts)

    return {"person": person, "deployed": deployed, "before": scores(*load_base(deployed, device="cpu")),
            "scores": scores, "sc": sc}


@pytest.fixture(scope="module")
def forgotten(world, tmp_path_factory):
    """One GDPR request for the first person, default method, through train_request."""
    from forgetctl.adapters.compose import load_merged
    from forgetctl.ops.train import train_request
    from forgetctl.ops.workspace import init_workspace
    from forgetctl.registry import Registry

    tmp = tmp_path_factory.mktemp("real")
    home = tmp / "home"
    weights = world["deployed"] / "model.safetensors"
    digest_before = _sha256(weights)
    init_workspace(home, str(world["deployed"])).close()
    files = world["sc"].write_request_files(world["person"], tmp / "data")
    result = train_request(home, "req-real-1", files["forget"], retain_path=files["retain"],
                           holdout_path=files["holdout"], reason="gdpr", subject="person-1")
    with Registry.open(home) as reg:
        dirs = [reg.adapter_dir(reg.adapter(a)) for a in reg.head().adapters]
        fingerprint = reg.base.fingerprint
    after = world["scores"](*load_merged(world["deployed"], dirs, base_fingerprint=fingerprint))
    return {"home": home, "result": result, "after": after, "digest_before": digest_before,
            "digest_after": _sha256(weights)}


def test_the_deployed_model_memorised_the_people(world):
    before = world["before"]
    assert before["forget_exact_answer_rate"] >= 0.8
    assert before["retain_exact_answer_rate"] >= 0.8
    # it cannot know the never-seen people's invented facts, and finds them far less likely
    assert before["holdout_exact_answer_rate"] <= 0.1
    assert before["holdout_nll"] > before["forget_nll"] + 1.0


def test_default_method_forgets_the_person_towards_the_never_seen_level(world, forgotten):
    before, after = world["before"], forgotten["after"]
    # greedy answers no longer name the person's facts (at most one of six may still match)
    assert after["forget_exact_answer_rate"] <= 1 / 6 + 1e-9
    # the true answers became several times less likely
    assert after["forget_answer_prob"] <= 0.5 * before["forget_answer_prob"]
    # near the never-seen level: not still remembered, and not pushed far past it
    assert after["forget_nll"] >= before["holdout_nll"] - 1.0
    assert after["forget_nll"] <= before["holdout_nll"] + 3.0


def test_the_other_people_are_still_answered(world, forgotten):
    before, after = world["before"], forgotten["after"]
    assert after["retain_exact_answer_rate"] >= before["retain_exact_answer_rate"] - 0.15
    assert after["retain_nll"] <= before["retain_nll"] + 0.5


def test_membership_inference_can_no_longer_tell_the_person_apart(world, forgotten):
    before, after = world["before"], forgotten["after"]
    assert before["mia_loss_auc"] >= 0.8  # memorised records stand out from never-seen people...
    assert after["mia_loss_auc"] <= before["mia_loss_auc"] - 0.2  # ...much less after the deletion


def test_the_frozen_base_is_untouched_and_the_registry_holds_numbers_only(world, forgotten):
    assert forgotten["digest_after"] == forgotten["digest_before"]
    result = forgotten["result"]
    assert result["composition"] == "c1" and result["version"] == "v1"
    assert result["metrics_after"]["forget_nll"] > result["metrics_before"]["forget_nll"]
    facts = [r["fact"] for r in world["sc"].scenario_rows([world["person"]])["forget"]]
    stored = b"".join(p.read_bytes() for p in forgotten["home"].rglob("*") if p.is_file())
    for text in [world["person"], *facts]:
        assert text.encode() not in stored, text
