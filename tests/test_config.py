import pytest
import yaml

from camser.config import ExperimentConfig, config_hash, load_config
from camser.errors import ConfigError


def test_defaults_follow_the_paper():
    c = ExperimentConfig()
    assert c.segments.samples(16_000) == (48_000, 48_000)
    assert (c.features.mfcc.n_mfcc, c.features.mfcc.hop_length, c.features.mfcc.htk) == (40, 160, True)
    s = c.features.spectrogram
    assert (s.n_fft, s.win_length, s.hop_length, s.n_bins, s.window) == (800, 640, 160, 200, "hamming")
    assert c.features.ssl.model == "facebook/wav2vec2-base"
    assert (c.train.lr, c.train.batch_size, c.train.patience, c.train.min_epochs) == (1e-5, 64, 8, 5)


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump({"corpus": {"name": "ravdess"}, "train": {"lr": "1e-4"},
                                 "model": {"name": "camser", "preset": "cpu"}}))
    c = load_config(p, ["train.max_epochs=3", "model.coattention=softmax", "features.ssl.layer=all",
                        "protocol.folds=[1, 2]"])
    assert c.corpus.name == "ravdess" and c.train.lr == 1e-4 and c.train.max_epochs == 3
    assert c.model == {"name": "camser", "preset": "cpu", "coattention": "softmax"}
    assert c.features.ssl.layer == "all" and c.protocol.folds == [1, 2]


def test_saved_config_round_trips(tmp_path):
    c = load_config(overrides=["train.seeds=[1, 2]", "labels.include=all"])
    c.save(tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == c


@pytest.mark.parametrize("override,field", [
    ("train.lrr=1", "train.lrr"), ("train.lr=abc", "train.lr"), ("segments.length_s=[1]", "segments.length_s"),
    ("nosuch.x=1", "nosuch"), ("train.seeds=3", "train.seeds"), ("train", "--set train"),
])
def test_bad_fields_are_named(override, field):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=[override])
    assert str(e.value).startswith(field)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)


def test_hash_changes_with_config():
    a, b = ExperimentConfig(), ExperimentConfig()
    assert config_hash(a.features.mfcc) == config_hash(b.features.mfcc)
    b.features.mfcc.n_mfcc = 13
    assert config_hash(a.features.mfcc) != config_hash(b.features.mfcc)


def test_validation_none_needs_a_fixed_epoch_count():
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["protocol.validation=none"])          # train.keep defaults to best
    assert str(e.value).startswith("train.keep: best") and "protocol.validation: none" in str(e.value)
    c = load_config(overrides=["protocol.validation=none", "train.keep=last"])
    assert c.protocol.validation == "none"
