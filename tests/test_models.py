"""Models: shapes of every Table-2 variant and both presets, AlexNet checkpoint compatibility,
spectrogram image preparation, co-attention, save/load, gradients, the encoder path."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from camser.errors import CamserError, ConfigError
from camser.models import (ABLATIONS, CAMSER, CAMSERConfig, build_model, load_pretrained,
                           required_inputs)
from camser.models.blocks import (AlexNet, AlexNetFeatures, CoAttention, LayerWeights,
                                  SpectrogramImage, load_alexnet_imagenet, mean_pool, stats_pool)

torch.set_num_threads(1)

# torchvision.models.alexnet().state_dict(): (name, shape), in order
TORCHVISION_ALEXNET = [
    ("features.0.weight", (64, 3, 11, 11)), ("features.0.bias", (64,)),
    ("features.3.weight", (192, 64, 5, 5)), ("features.3.bias", (192,)),
    ("features.6.weight", (384, 192, 3, 3)), ("features.6.bias", (384,)),
    ("features.8.weight", (256, 384, 3, 3)), ("features.8.bias", (256,)),
    ("features.10.weight", (256, 256, 3, 3)), ("features.10.bias", (256,)),
    ("classifier.1.weight", (4096, 9216)), ("classifier.1.bias", (4096,)),
    ("classifier.4.weight", (4096, 4096)), ("classifier.4.bias", (4096,)),
    ("classifier.6.weight", (1000, 4096)), ("classifier.6.bias", (1000,)),
]

# A tiny configuration of the same parts: keeps every test to a fraction of a second.
TINY = dict(mfcc_frames=12, mfcc_dim=40, lstm_hidden=8, lstm_layers=2, spec_frames=20, spec_bins=16,
            image_size=(64, 64), alexnet_weights="random", cnn_channels=(4, 8), ssl_dim=16,
            ssl_frames=10, attn_dim=8, branch_dim=8, head_hidden=8)


def tiny_batch(cfg: CAMSERConfig, b: int = 3, t_ssl: int | None = None, layers: int | None = None):
    g = torch.Generator().manual_seed(0)
    t_ssl = t_ssl or cfg.ssl_frames
    ssl_shape = (b, layers, t_ssl, cfg.ssl_dim) if layers else (b, t_ssl, cfg.ssl_dim)
    return {"mfcc": torch.randn(b, cfg.mfcc_frames, cfg.mfcc_dim, generator=g),
            "spectrogram": torch.rand(b, cfg.spec_frames, cfg.spec_bins, generator=g) * 80 - 80,
            "ssl": torch.randn(*ssl_shape, generator=g)}


def tiny_model(**overrides) -> tuple[CAMSER, dict]:
    torch.manual_seed(0)
    cfg = CAMSERConfig(n_classes=4, **{**TINY, **overrides})
    model = CAMSER(cfg)
    batch = tiny_batch(cfg, layers=cfg.ssl_layers)
    model.fit_spectrogram([batch["spectrogram"]])
    return model, batch


# ---------------------------------------------------------------- variants and presets

@pytest.mark.parametrize("row", list(ABLATIONS))
@pytest.mark.parametrize("coatt", ["relu", "softmax"])
def test_every_ablation_row_gives_logits(row, coatt):
    model, batch = tiny_model(**{"coattention": coatt, **ABLATIONS[row]})
    logits, emb = model(batch, return_embeddings=True)
    assert logits.shape == (3, 4)
    n_used = sum(k in row.split("+") for k in ("mfcc", "spec", "w2e"))
    assert emb["fused"].shape == (3, n_used * 8)
    assert ("attention" in emb) == row.endswith("+coatt")
    assert set(model.inputs) == {{"w2e": "ssl", "spec": "spectrogram"}.get(k, k) for k in row.split("+") if k != "coatt"}


def test_table2_has_ten_rows_and_builds_from_section():
    assert len(ABLATIONS) == 10
    dims = {"mfcc": (12, 40), "spectrogram": (20, 16), "ssl": (10, 16)}
    m = build_model({"name": "camser", "ablation": "spec+w2e", **{k: v for k, v in TINY.items()
                     if k not in ("mfcc_frames", "spec_frames", "spec_bins", "ssl_dim", "ssl_frames")}},
                    n_classes=5, feature_dims=dims)
    assert m.config.use_spec and m.config.use_ssl and not m.config.use_mfcc
    assert m.config.coattention == "none" and m.config.n_classes == 5


def test_paper_preset_full_size_forward():
    # the published sizes: 256×384 AlexNet image, flattened 300×512 BiLSTM, relu co-attention over 149 frames
    m = build_model({"name": "camser", "alexnet_weights": "random"}, 4,
                    {"mfcc": (300, 40), "spectrogram": (300, 200), "ssl": (149, 768)})
    cfg = m.config
    assert (cfg.spec_encoder, cfg.mfcc_pool, cfg.coattention, cfg.ssl_frames) == ("alexnet", "flatten", "relu", 149)
    assert m.mfcc_encoder.proj.in_features == 300 * 512
    b = {"mfcc": torch.randn(2, 300, 40), "spectrogram": torch.rand(2, 300, 200) * 80 - 80,
         "ssl": torch.randn(2, 149, 768)}
    m.fit_spectrogram([b["spectrogram"]])
    assert m.spec_encoder.image(b["spectrogram"]).shape == (2, 3, 256, 384)
    m.eval()
    with torch.no_grad():
        logits, emb = m(b, return_embeddings=True)
    assert logits.shape == (2, 4) and emb["fused"].shape == (2, 384) and emb["ssl_raw"].shape == (2, 768)


def test_cpu_preset_stacked_layers():
    m = build_model({"name": "camser", "preset": "cpu", "lstm_hidden": 8}, 4,
                    {"mfcc": (300, 40), "spectrogram": (300, 200), "ssl": (7, 150, 512)})
    cfg = m.config
    assert (cfg.spec_encoder, cfg.mfcc_pool, cfg.coattention, cfg.ssl_layers, cfg.ssl_dim) == \
        ("cnn", "mean", "softmax", 7, 512)
    b = {"mfcc": torch.randn(2, 300, 40), "spectrogram": torch.rand(2, 300, 200) * 80 - 80,
         "ssl": torch.randn(2, 7, 150, 512).half()}       # the cache stores float16
    m.fit_spectrogram(b["spectrogram"].numpy())                  # an (N, T, F) array iterates per segment
    m.fit_mfcc(b["mfcc"].numpy())
    logits, emb = m(b, return_embeddings=True)
    assert logits.shape == (2, 4) and emb["attention"].shape == (2, 150)
    std = m.mfcc_standardizer
    torch.testing.assert_close(std.mean, b["mfcc"].reshape(-1, 40).mean(0))
    assert torch.allclose(emb["attention"].sum(1), torch.ones(2))


def test_required_inputs_before_any_data():
    assert required_inputs({"name": "camser"}) == {"mfcc", "spectrogram", "ssl"}
    assert required_inputs({"name": "camser", "preset": "cpu", "ablation": "mfcc+w2e"}) == {"mfcc", "ssl"}
    assert required_inputs({"name": "camser", "use_mfcc": False, "use_ssl": False}) == {"spectrogram"}


def test_fit_normalizers_reads_only_training_rows():
    class Store:
        def __init__(self, array):
            self.array = array
    model, batch = tiny_model()
    spec = np.concatenate([np.full((2, 20, 16), -50.0), np.full((1, 20, 16), 10.0)]).astype(np.float32)
    spec[0, 0, :] = -70.0
    model.fit_normalizers({"spectrogram": Store(spec), "mfcc": Store(None)}, rows=[1, 0])
    scale = model.spec_encoder.image.scale
    assert torch.all(scale.bin_min == -70) and torch.all(scale.bin_max == -50)   # row 2 left out


def test_section_errors_name_the_field():
    dims = {"mfcc": (300, 40), "spectrogram": (300, 200), "ssl": (149, 768)}
    with pytest.raises(ConfigError, match=r"^model\.lstm_hiden: unknown field"):
        build_model({"name": "camser", "lstm_hiden": 3}, 4, dims)
    with pytest.raises(ConfigError, match=r"^model\.ssl_dim: 512"):
        build_model({"name": "camser", "ssl_dim": 512}, 4, dims)
    with pytest.raises(ConfigError, match=r"^model\.coattention"):
        build_model({"name": "camser", "coattention": "sigmoid"}, 4, dims)
    with pytest.raises(ConfigError, match=r"^model\.preset"):
        build_model({"name": "camser", "preset": "gpu"}, 4, dims)
    with pytest.raises(ConfigError, match=r"^model\.name"):
        build_model({"name": "nope"}, 4, dims)


# ---------------------------------------------------------------- AlexNet

def test_alexnet_state_dict_matches_torchvision():
    got = [(k, tuple(v.shape)) for k, v in AlexNet().state_dict().items()]
    assert got == TORCHVISION_ALEXNET
    trunk = [(k, tuple(v.shape)) for k, v in AlexNetFeatures().state_dict().items()]
    assert trunk == TORCHVISION_ALEXNET[:10]


def test_load_alexnet_from_local_file(tmp_path):
    torch.manual_seed(1)
    src = AlexNet()
    path = tmp_path / "alexnet.pth"
    torch.save(src.state_dict(), path)
    full = load_alexnet_imagenet(AlexNet(), path)
    trunk = load_alexnet_imagenet(AlexNetFeatures(), str(path))   # the classifier part is dropped
    for k, v in src.state_dict().items():
        assert torch.equal(full.state_dict()[k], v)
        if k.startswith("features."):
            assert torch.equal(trunk.state_dict()[k], v)


def test_missing_alexnet_weights_is_one_line_camser_error(tmp_path):
    with pytest.raises(CamserError) as e:
        load_alexnet_imagenet(AlexNetFeatures(), tmp_path / "nope.pth")
    msg = str(e.value)
    assert "\n" not in msg and "nope.pth" in msg
    assert "alexnet_weights=<path>" in msg and "alexnet_weights=random" in msg
    with pytest.raises(CamserError, match="alexnet_weights=random"):
        CAMSER(CAMSERConfig(**{**TINY, "alexnet_weights": str(tmp_path / "nope.pth")}))


# ---------------------------------------------------------------- spectrogram image

def test_spectrogram_image_fit_and_output():
    rng = np.random.default_rng(0)
    train = [rng.uniform(-80, 0, (300, 200)).astype(np.float32) for _ in range(3)]
    img = SpectrogramImage(200).fit(iter(train))        # streamed once
    stacked = np.stack(train)
    np.testing.assert_allclose(img.scale.bin_min.numpy(), stacked.min((0, 1)), rtol=1e-6)
    np.testing.assert_allclose(img.scale.bin_max.numpy(), stacked.max((0, 1)), rtol=1e-6)
    assert "scale.bin_min" in img.state_dict() and "scale.bin_max" in img.state_dict()

    x = img(torch.from_numpy(stacked[:2]))
    assert x.shape == (2, 3, 256, 384)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    unnorm = x * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1)
    assert unnorm.min() >= -1e-5 and unnorm.max() <= 1 + 1e-5          # [0, 1] before ImageNet norm
    assert torch.allclose(unnorm[:, 0], unnorm[:, 2], atol=1e-5)         # grey replicated

    # frequency flipped: a spectrogram loud only in the lowest bin lights the bottom rows
    spec = torch.full((1, 300, 200), -80.0)
    spec[..., 0] = 0.0
    grey = (img(spec) * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1))[0, 0]
    assert grey[-1].mean() > 0.9 and grey[0].mean() < 0.1


def test_unfitted_spectrogram_scaling_refuses():
    model = CAMSER(CAMSERConfig(**TINY))
    with pytest.raises(CamserError, match="fit_spectrogram"):
        model(tiny_batch(model.config))


# ---------------------------------------------------------------- co-attention, layer weights, pooling

def test_softmax_coattention_any_length_and_mask():
    att = CoAttention(query_dim=6, frame_dim=5, mode="softmax", out_dim=4, attn_dim=3)
    q = torch.randn(2, 6)
    for t in (7, 149, 150):
        out, pooled, w = att(q, torch.randn(2, t, 5))
        assert out.shape == (2, 4) and pooled.shape == (2, 5) and w.shape == (2, t)
        assert torch.allclose(w.sum(1), torch.ones(2))
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[:, 5:] = False
    _, _, w = att(q, torch.randn(2, 7, 5), mask)
    assert torch.all(w[:, 5:] == 0)

    relu = CoAttention(query_dim=6, frame_dim=5, n_frames=7, mode="relu")
    with pytest.raises(CamserError, match="softmax"):
        relu(q, torch.randn(2, 8, 5))


def test_model_with_softmax_coattention_takes_other_frame_counts():
    model, batch = tiny_model(coattention="softmax")
    for t in (10, 13):
        batch["ssl"] = torch.randn(3, t, 16)
        assert model(batch).shape == (3, 4)


def test_layer_weights_and_pooling():
    lw = LayerWeights(3)
    x = torch.randn(2, 3, 5, 4)
    assert torch.allclose(lw(x), x.mean(1), atol=1e-6)     # uniform at init
    y = x[:, 0]
    assert LayerWeights(None)(y) is y                       # (B, T, D): a no-op
    with pytest.raises(CamserError, match="ssl_layers"):
        LayerWeights(2)(x)
    h = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.allclose(mean_pool(h, mask)[0], h[0, :3].mean(0))
    s = stats_pool(h)
    assert s.shape == (2, 8) and torch.allclose(s[:, 4:], h.std(1, unbiased=False), atol=1e-4)


# ---------------------------------------------------------------- save / load, gradients, encoder

@pytest.mark.parametrize("overrides", [{}, {"spec_encoder": "cnn", "coattention": "softmax",
                                            "mfcc_pool": "mean", "ssl_layers": 3}])
def test_save_pretrained_round_trip(tmp_path, overrides):
    model, batch = tiny_model(**overrides)
    model.eval()
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    again = CAMSER.from_pretrained(tmp_path / "m").eval()
    assert again.config == model.config
    with torch.no_grad():
        assert torch.equal(model(batch), again(batch))           # incl. the fitted scaling
        assert torch.equal(model(batch), load_pretrained(tmp_path / "m").eval()(batch))


def test_gradients_reach_every_branch():
    model, batch = tiny_model(ssl_layers=2)
    batch["ssl"] = torch.randn(3, 2, 10, 16)
    model.train()
    nn.functional.cross_entropy(model(batch), torch.tensor([0, 1, 2])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
    for branch in ("mfcc_encoder.", "spec_encoder.", "layer_weights.", "coattention.", "head."):
        assert any(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n.startswith(branch)), branch


class TinyEncoder(nn.Module):
    """Stands in for wav2vec2: audio (B, samples) → frames (B, samples // 32, 16)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 16, kernel_size=32, stride=32)

    def forward(self, audio):
        return self.conv(audio.unsqueeze(1)).transpose(1, 2)


def test_encoder_path_from_audio(tmp_path):
    torch.manual_seed(0)
    cfg = CAMSERConfig(**TINY)                                  # relu co-attention: 10 frames
    model = CAMSER(cfg, encoder=TinyEncoder())
    assert model.inputs == ("mfcc", "spectrogram", "audio")
    batch = tiny_batch(cfg)
    del batch["ssl"]
    batch["audio"] = torch.randn(3, 320)
    model.fit_spectrogram([batch["spectrogram"]])
    model(batch).sum().backward()
    assert model.encoder.conv.weight.grad.abs().sum() > 0      # trained end to end

    model.eval()
    model.save_pretrained(tmp_path / "m")
    again = CAMSER.from_pretrained(tmp_path / "m", encoder=TinyEncoder()).eval()
    with torch.no_grad():
        assert torch.equal(model(batch), again(batch))
    with pytest.raises(CamserError, match="encoder"):
        CAMSER.from_pretrained(tmp_path / "m")
    built = build_model({"name": "camser", **TINY}, 4, {}, encoder=TinyEncoder())
    assert built.inputs == ("mfcc", "spectrogram", "audio")
    with pytest.raises(ConfigError, match=r"^model\.image_size"):
        CAMSERConfig(image_size=("a", 300))


def test_branch_dropout_zeroes_whole_vectors_in_training_only():
    m = build_model({"name": "camser", "preset": "cpu", "branch_dropout": 0.5}, 4,
                    {"mfcc": (300, 40), "spectrogram": (300, 200), "ssl": (150, 32)})
    b = {"mfcc": torch.randn(64, 300, 40), "spectrogram": torch.rand(64, 300, 200) * 80 - 80, "ssl": torch.randn(64, 150, 32)}
    m.fit_spectrogram(b["spectrogram"].numpy())
    m.fit_mfcc(b["mfcc"].numpy())
    torch.manual_seed(0)
    m.train()
    _, emb = m(b, return_embeddings=True)
    zero_rows = (emb["mfcc"].abs().sum(1) == 0).float().mean()
    assert 0.2 < float(zero_rows) < 0.8                      # about half the samples lose their MFCC vector
    assert bool((emb["ssl"].abs().sum(1) > 0).all())         # the SSL vector is never dropped
    m.eval()
    _, emb = m(b, return_embeddings=True)
    assert bool((emb["mfcc"].abs().sum(1) > 0).all())
    with pytest.raises(ConfigError, match="model.branch_dropout"):
        build_model({"name": "camser", "branch_dropout": 1.0}, 4, {"mfcc": (300, 40), "spectrogram": (300, 200), "ssl": (150, 32)})


def test_per_layer_statistics_train_on_a_batch_of_one():
    """The last training batch of an epoch may hold one example (e.g. 1081 segments in batches
    of 32 with train.unit: segment): the statistics' batch standardisation then scales it by
    its running statistics, leaves them unchanged, and still passes gradients."""
    from camser.models.blocks import BatchScaler
    model, batch = tiny_model(ssl_stats="layers", ssl_layers=3)
    model.train()
    model(batch)                                            # a batch of 3 updates the statistics
    before = model.stats_norm.running_mean.clone()
    one = {k: v[:1] for k, v in batch.items()}
    logits = model(one)
    logits.sum().backward()
    assert logits.shape == (1, 4) and torch.equal(model.stats_norm.running_mean, before)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.stats_proj.parameters())
    scaler, reference = BatchScaler(5), nn.BatchNorm1d(5, affine=False)
    x = torch.randn(4, 5)
    assert torch.allclose(scaler(x), reference(x))          # otherwise exactly batch normalisation
    assert torch.allclose(scaler.running_var, reference.running_var)
    single = scaler(x[:1])
    expected = (x[:1] - scaler.running_mean) / torch.sqrt(scaler.running_var + scaler.eps)
    assert torch.allclose(single, expected, atol=1e-6)
    assert set(scaler.state_dict()) == set(reference.state_dict())   # saved models load as before
