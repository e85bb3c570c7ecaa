"""vote: a network and an utterance-level model fitted on the same training speakers, their
class probabilities averaged (soft voting, as scikit-learn's VotingClassifier)."""
import json

import numpy as np
import pytest
from test_generalisation import cv, make_cfg, ws  # noqa: F401  (ws: the module's fixture)

from camser.errors import ConfigError
from camser.models import check_vote

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

NETWORK = {"name": "camser", "preset": "plus"}
PROBE = {"name": "linear", "C": [0.1], "std": True}
# the network trains on speed copies too and scores each test utterance on its copies as well
COMMON = ("protocol.folds=[1,2]", "train.unit=utterance", "train.max_epochs=2",
          "features.augment.speeds=[1.1]", "features.augment.test_time=true")


def _entry(run, fold: int) -> dict:
    return json.loads((run / f"folds/fold{fold:02d}_seed0/result.json").read_text())


def _probabilities(entry: dict) -> dict:
    pred = entry["predictions"]
    return dict(zip(pred["utterance_ids"], np.asarray(pred["probabilities"])))


def test_a_vote_scores_the_average_of_what_each_model_predicts_alone(ws, tmp_path):  # noqa: F811
    voted = cv(make_cfg(ws, NETWORK, *COMMON, "vote.model.name=linear", "vote.model.C=[0.1]",
                        "vote.model.std=true", "vote.weight=0.3"), tmp_path / "vote")
    network = cv(make_cfg(ws, NETWORK, *COMMON), tmp_path / "network")
    probe = cv(make_cfg(ws, PROBE, "protocol.folds=[1,2]"), tmp_path / "probe")
    for k, fold in enumerate((1, 2)):          # each fold its own probe (fitted once, whatever the seeds)
        v, n, p = (_entry(tmp_path / run, fold) for run in ("vote", "network", "probe"))
        assert voted["folds"][k]["ua"] == v["ua"] and network["folds"][k]["ua"] == n["ua"] == v["voters"]["network"]["ua"]
        net_p, probe_p, vote_p = _probabilities(n), _probabilities(p), _probabilities(v)
        assert set(vote_p) == set(net_p) == set(probe_p)
        for uid, probs in vote_p.items():          # the second model weighs vote.weight
            assert probs == pytest.approx(0.7 * net_p[uid] + 0.3 * probe_p[uid], abs=2e-6)
        assert v["predictions"]["pred"] == [int(np.argmax(vote_p[u])) for u in v["predictions"]["utterance_ids"]]
        # what each scored alone is kept beside the vote's own scores
        assert v["voters"]["linear"]["ua"] == pytest.approx(p["ua"])
        assert "originals_only" in v and set(v["originals_only"]) == {"wa", "ua", "f1_macro"}
        assert not any(key.startswith("_") for key in v)       # nothing private reaches result.json
    assert voted["summary"]["voters"]["linear"]["ua_mean"] == pytest.approx(probe["summary"]["ua_mean"])
    assert "A vote (soft voting)" in (tmp_path / "vote/report.md").read_text()


def test_a_vote_needs_a_network_and_a_fitted_second_model(ws, tmp_path):  # noqa: F811
    with pytest.raises(ConfigError, match="vote.model.name: camser is a network"):
        check_vote(NETWORK, [NETWORK])
    with pytest.raises(ConfigError, match="model.name linear is not a network"):
        check_vote(PROBE, [PROBE])
    with pytest.raises(ConfigError, match="model.C"):                      # its own fields are checked
        check_vote(NETWORK, [{**PROBE, "C": [-1]}])
    with pytest.raises(ConfigError, match=r"vote.also\[0\].model.name: camser is a network"):
        check_vote(NETWORK, [PROBE, NETWORK])
    with pytest.raises(ConfigError, match="vote.model.name: missing"):
        make_cfg(ws, NETWORK, "vote.model.C=[0.1]")
    from camser.training.compare import system_model        # how compare and ablation name it
    assert system_model(make_cfg(ws, NETWORK, "vote.model.name=linear")) == "camser + linear (vote, weight 0.5)"
    assert system_model(make_cfg(ws, NETWORK)) == "camser"
    from camser.training.train_model import train_model
    with pytest.raises(ConfigError, match="vote.model: a model folder holds networks only"):
        train_model(make_cfg(ws, NETWORK, "vote.model.name=linear"), tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_the_second_model_reads_features_of_its_own(ws, tmp_path):  # noqa: F811
    """vote.audio / vote.features: the probe of a vote reads what the same probe alone reads
    with those settings (here frames pooled by 2 and silence cut), the network its own."""
    own = ("vote.features.ssl.frame_pool=2", "vote.audio.trim_db=30")
    cv(make_cfg(ws, NETWORK, *COMMON, "vote.model.name=linear", "vote.model.C=[0.1]", "vote.model.std=true",
                *own), tmp_path / "vote")
    cv(make_cfg(ws, PROBE, "protocol.folds=[1,2]", "features.ssl.frame_pool=2", "audio.trim_db=30"), tmp_path / "probe")
    cv(make_cfg(ws, PROBE, "protocol.folds=[1,2]"), tmp_path / "probe_shared")
    cv(make_cfg(ws, NETWORK, *COMMON), tmp_path / "network")
    for fold in (1, 2):
        v, n, p, s = (_entry(tmp_path / run, fold) for run in ("vote", "network", "probe", "probe_shared"))
        assert v["voters"]["linear"]["ua"] == pytest.approx(p["ua"])
        net_p, probe_p, shared_p = _probabilities(n), _probabilities(p), _probabilities(s)
        # the settings matter: the probe reads other vectors than the network's own cache gives
        assert max(np.abs(probe_p[u] - shared_p[u]).max() for u in probe_p) > 1e-3
        for uid, probs in _probabilities(v).items():
            assert probs == pytest.approx(0.5 * net_p[uid] + 0.5 * probe_p[uid], abs=2e-6)
    with pytest.raises(ConfigError, match="vote.features.ssl.frame_poll: unknown field"):
        make_cfg(ws, NETWORK, "vote.model.name=linear", "vote.features.ssl.frame_poll=2")
    with pytest.raises(ConfigError, match="vote.audio.trim_db"):
        make_cfg(ws, NETWORK, "vote.model.name=linear", "vote.audio.trim_db=loud")


def test_a_vote_chooses_its_weight_on_the_validation_speakers(ws, tmp_path):  # noqa: F811
    candidates = [0.2, 0.5, 0.8]
    voted = cv(make_cfg(ws, NETWORK, *COMMON, "vote.model.name=linear", "vote.model.C=[0.1]",
                        "vote.model.std=true", f"vote.weight={candidates}"), tmp_path / "vote")
    network = cv(make_cfg(ws, NETWORK, *COMMON), tmp_path / "network")
    cv(make_cfg(ws, PROBE, "protocol.folds=[1,2]"), tmp_path / "probe")
    for k, fold in enumerate((1, 2)):
        v, n, p = (_entry(tmp_path / run, fold) for run in ("vote", "network", "probe"))
        w = v["chosen"]["vote.weight"]
        scores = {float(c): s for c, s in v["vote_validation"].items()}
        assert w in candidates and set(scores) == set(candidates)
        best = max(scores.values())
        assert scores[w] == best and all(abs(c - 0.5) >= abs(w - 0.5) for c in candidates if scores[c] == best)
        net_p, probe_p = _probabilities(n), _probabilities(p)
        for uid, probs in _probabilities(v).items():      # the test utterances voted with that weight
            assert probs == pytest.approx((1 - w) * net_p[uid] + w * probe_p[uid], abs=2e-6)
        assert network["folds"][k]["ua"] == v["voters"]["network"]["ua"]
    chosen = voted["summary"]["vote_weight_chosen"]
    assert sum(chosen.values()) == 2
    assert "weight chosen on the validation speakers from 0.2, 0.5, 0.8" in (tmp_path / "vote/report.md").read_text()
    from camser.training.compare import system_model
    assert "weight chosen on the validation speakers" in system_model(make_cfg(ws, NETWORK, "vote.model.name=linear",
                                                                               f"vote.weight={candidates}"))
    with pytest.raises(ConfigError, match=r"vote.weight\[1\]"):
        make_cfg(ws, NETWORK, "vote.model.name=linear", "vote.weight=[0.3, 1.5]")
    with pytest.raises(ConfigError, match="vote.weight: .*protocol.validation: none"):
        make_cfg(ws, NETWORK, "vote.model.name=linear", "vote.weight=[0.3, 0.5]", "protocol.validation=none",
                 "train.keep=last")


def test_the_weight_choice_scores_only_validation_utterances_and_prefers_equal_votes():
    """chosen_weight: the network right and the probe wrong on the validation utterances → the
    smallest weight; both equally right → 0.5 (ties go to equal votes)."""
    from types import SimpleNamespace

    from camser.training.cv import chosen_weight
    cfg = SimpleNamespace(vote=SimpleNamespace(weights=[0.2, 0.5, 0.8]), train=SimpleNamespace(select_on="ua"))
    data = SimpleNamespace(labels=["a", "b"], label_index=lambda: {"u1": 0, "u2": 1})
    right = {"u1": np.array([0.9, 0.1]), "u2": np.array([0.1, 0.9])}
    wrong = {"u1": np.array([0.1, 0.9]), "u2": np.array([0.9, 0.1])}
    assert chosen_weight(cfg, right, [wrong], data)[0] == 0.2
    assert chosen_weight(cfg, wrong, [right], data)[0] == 0.8
    w, scores = chosen_weight(cfg, right, [right], data)
    assert w == 0.5 and set(scores) == {"0.2", "0.5", "0.8"}
    # two second models each weigh w: two right ones outvote a wrong network from w > 1/3 on, so
    # 0.5 already scores best (one right model alone needed 0.8)
    assert chosen_weight(cfg, wrong, [right, right], data)[0] == 0.5
    assert chosen_weight(cfg, right, [right, wrong], data)[0] == 0.5


def test_voted_probabilities_weigh_each_second_model_as_the_first():
    from camser.training.cv import voted_probabilities
    p, q, r = np.array([[0.6, 0.4]]), np.array([[0.2, 0.8]]), np.array([[0.5, 0.5]])
    assert voted_probabilities(p, [q], 0.3) == pytest.approx(0.7 * p + 0.3 * q)     # one: as it always was
    assert voted_probabilities(p, [q, r], 0.5) == pytest.approx((p + q + r) / 3)    # 0.5: equal votes
    assert voted_probabilities(p, [q, r], 0.3) == pytest.approx((0.7 * p + 0.3 * q + 0.3 * r) / 1.3)


ALSO_COPIES = ("vote.also=[{model: {name: linear, C: 0.1, std: true}, "
               "features: {augment: {speeds: [1.1], test_time: true}}}]")


def test_further_second_models_vote_beside_the_first(ws, tmp_path):  # noqa: F811
    """vote.also: a third model (here the probe trained on the speed copies too and scoring each
    test utterance averaged over its copies) votes as the first second model does; each weighs
    vote.weight, the network 1 - weight, normalised. What each scored alone is kept by name."""
    voted = cv(make_cfg(ws, NETWORK, *COMMON, "vote.model.name=linear", "vote.model.C=[0.1]",
                        "vote.model.std=true", "vote.weight=0.3", ALSO_COPIES), tmp_path / "vote")
    cv(make_cfg(ws, NETWORK, *COMMON), tmp_path / "network")
    cv(make_cfg(ws, PROBE, "protocol.folds=[1,2]"), tmp_path / "probe")
    copies = cv(make_cfg(ws, {**PROBE, "C": 0.1}, "protocol.folds=[1,2]", "features.augment.speeds=[1.1]",
                         "features.augment.test_time=true"), tmp_path / "copies")
    for fold in (1, 2):
        v, n, p, c = (_entry(tmp_path / run, fold) for run in ("vote", "network", "probe", "copies"))
        assert set(v["voters"]) == {"network", "linear", "linear 2"}
        assert v["voters"]["linear 2"]["ua"] == pytest.approx(c["ua"])
        assert v["voters"]["linear"]["ua"] == pytest.approx(p["ua"])
        net_p, probe_p, copies_p = _probabilities(n), _probabilities(p), _probabilities(c)
        for uid, probs in _probabilities(v).items():
            expected = (0.7 * net_p[uid] + 0.3 * probe_p[uid] + 0.3 * copies_p[uid]) / 1.3
            assert probs == pytest.approx(expected, abs=3e-6)
        assert "originals_only" in v and not any(key.startswith("_") for key in v)
    assert set(voted["summary"]["voters"]) == {"network", "linear", "linear 2"}
    assert voted["summary"]["voters"]["linear 2"]["ua_mean"] == pytest.approx(copies["summary"]["ua_mean"])
    assert "averaged with 2 other models' (each)" in (tmp_path / "vote/report.md").read_text()
    from camser.training.compare import system_model
    assert system_model(make_cfg(ws, NETWORK, "vote.model.name=linear", ALSO_COPIES)) == \
        "camser + linear + linear (vote, weight 0.5)"


def test_further_second_models_are_checked_by_name(ws):  # noqa: F811
    with pytest.raises(ConfigError, match=r"vote.also\[0\]: a second model is"):
        make_cfg(ws, NETWORK, "vote.model.name=linear", "vote.also=[{modle: {name: linear}}]")
    with pytest.raises(ConfigError, match=r"vote.also\[0\].model.name: missing"):
        make_cfg(ws, NETWORK, "vote.model.name=linear", "vote.also=[{model: {C: 0.1}}]")
    with pytest.raises(ConfigError, match=r"vote.also\[0\]: further second models need the first"):
        make_cfg(ws, NETWORK, "vote.also=[{model: {name: linear}}]")
    with pytest.raises(ConfigError, match=r"vote.also\[0\].features.augment.speedz: unknown field"):
        make_cfg(ws, NETWORK, "vote.model.name=linear",
                 "vote.also=[{model: {name: linear}, features: {augment: {speedz: [1.1]}}}]")


def test_the_weight_is_chosen_without_a_test_or_validation_speaker_in_the_probes_fit(ws, tmp_path, monkeypatch):  # noqa: F811
    """Strictness: the probe that scores the validation speakers (for the weight choice) is fitted
    without them; no fit of the probe ever sees a test speaker."""
    from camser.models.classic import LinearProbe
    fitted_on = []
    original = LinearProbe.fit

    def spy(self, X, y, groups=None):
        fitted_on.append(set(groups))
        return original(self, X, y, groups=groups)

    monkeypatch.setattr(LinearProbe, "fit", spy)
    cv(make_cfg(ws, NETWORK, *COMMON, "vote.model.name=linear", "vote.model.C=[0.01, 0.1]",
                "vote.model.inner_folds=2", "vote.weight=[0.3, 0.5]"), tmp_path / "vote")
    for fold in (1, 2):
        entry = _entry(tmp_path / "vote", fold)
        test, val = set(entry["test_speakers"]), set(entry["val_speakers"])
        fits = [f for f in fitted_on if not f & test]
        assert val and any(not f & val for f in fits) and any(f & val for f in fits)
    assert len(fitted_on) == 4 and all(not f & set(_entry(tmp_path / "vote", k)["test_speakers"])
                                       for f, k in zip(fitted_on, (1, 1, 2, 2)))
