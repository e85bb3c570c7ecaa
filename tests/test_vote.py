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
        check_vote(NETWORK, NETWORK)
    with pytest.raises(ConfigError, match="model.name linear is not a network"):
        check_vote(PROBE, PROBE)
    with pytest.raises(ConfigError, match="model.C"):                      # its own fields are checked
        check_vote(NETWORK, {**PROBE, "C": [-1]})
    with pytest.raises(ConfigError, match="vote.model.name: missing"):
        make_cfg(ws, NETWORK, "vote.model.C=[0.1]")
    from camser.training.compare import system_model        # how compare and ablation name it
    assert system_model(make_cfg(ws, NETWORK, "vote.model.name=linear")) == "camser + linear (vote, weight 0.5)"
    assert system_model(make_cfg(ws, NETWORK)) == "camser"
    from camser.training.train_model import train_model
    with pytest.raises(ConfigError, match="vote.model: a model folder holds networks only"):
        train_model(make_cfg(ws, NETWORK, "vote.model.name=linear"), tmp_path / "model")
    assert not (tmp_path / "model").exists()
