"""Per-kind features against direct librosa/numpy computations, and SSL encoders of every
family built tiny from configs (offline, seconds)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from camser.config import ExperimentConfig, MFCCConfig, SpectrogramConfig, SSLConfig
from camser.errors import CamserError, ConfigError
from camser.features import (SSLEncoder, compute_features, extract_features, mfcc_segments,
                             preemphasis, spectrogram_segments)
from camser.segments import cut, segment_utterance
from camser.types import Utterance

SR = 16_000
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def _signal(seconds: float, seed: int = 0) -> np.ndarray:
    """A chirp plus noise with a loud burst: a spectrum with real dynamic range."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    y = 0.3 * np.sin(2 * np.pi * (200 + 800 * t) * t) + 0.01 * rng.standard_normal(t.size)
    y[: SR // 4] *= 3.0
    return y.astype(np.float32)


# ---------------------------------------------------------------------- MFCC / spectrogram

def test_mfcc_equals_librosa_on_padded_segments():
    y = _signal(4.0)
    segs = segment_utterance("u", len(y), 3 * SR)
    out = mfcc_segments(y, segs, SR, MFCCConfig(), n_frames=300)
    assert out.shape == (2, 300, 40) and out.dtype == np.float32
    for i, s in enumerate(segs):
        ref = librosa.feature.mfcc(y=cut(y, s), sr=SR, n_mfcc=40, htk=True, hop_length=160).T[:300]
        np.testing.assert_allclose(out[i], ref, rtol=1e-5, atol=1e-3)


def test_spectrogram_equals_librosa_with_floor_padding():
    y = _signal(4.5)
    cfg = SpectrogramConfig()
    segs = segment_utterance("u", len(y), 3 * SR, hop_samples=SR)   # starts 0, 1, 2 s; the last padded
    out = spectrogram_segments(y, segs, SR, cfg, n_frames=300)
    assert out.shape == (3, 300, 200) and out.dtype == np.float32
    s = np.abs(librosa.stft(y, n_fft=800, hop_length=160, win_length=640, window="hamming",
                            center=True, pad_mode="reflect"))
    db = librosa.amplitude_to_db(s, ref=np.max, top_db=80)[:200].T      # (451 frames, 200 bins)
    assert db.shape == (451, 200)
    np.testing.assert_allclose(out[0], db[:300], atol=1e-4)
    np.testing.assert_allclose(out[1], db[100:400], atol=1e-4)
    np.testing.assert_allclose(out[2, :251], db[200:451], atol=1e-4)
    assert np.all(out[2, 251:] == -80.0)          # padding is silence (the floor), not 0 dB
    assert out.max() <= 0.0 and out.max() > -1.0  # the utterance maximum lies in the 0–4 kHz bins here


def test_spectrogram_reference_is_the_utterance():
    """A quiet segment of a loud utterance stays quiet: dB relative to the utterance max."""
    y = _signal(6.0)
    y[3 * SR:] *= 0.01
    segs = segment_utterance("u", len(y), 3 * SR)
    out = spectrogram_segments(y, segs, SR, SpectrogramConfig(), n_frames=300)
    assert out[0].max() > out[1].max() + 30


def test_preemphasis():
    y = np.array([1.0, 2.0, 4.0], dtype=np.float32)
    np.testing.assert_allclose(preemphasis(y, 0.5), [1.0, 1.5, 3.0])
    assert preemphasis(y, 0.0) is y


def test_compute_features_default_shapes():
    cfg = ExperimentConfig()
    y = _signal(3.5)
    segs = segment_utterance("u", len(y), 3 * SR)
    out = compute_features(y, segs, cfg, ["mfcc", "spectrogram"])
    assert out["mfcc"].shape == (2, 300, 40)
    assert out["spectrogram"].shape == (2, 300, 200)


# ---------------------------------------------------------------------- tiny SSL models

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
            vocab_size=12)


def _save_tiny(kind: str, folder: Path, do_normalize: bool = True) -> str:
    """A randomly initialised tiny model of ``kind`` saved like a hub checkpoint."""
    import transformers as tf

    torch.manual_seed(0)
    if kind == "whisper":
        cfg = tf.WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                               decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64,
                               num_mel_bins=80, vocab_size=12, pad_token_id=0, bos_token_id=1,
                               eos_token_id=2, decoder_start_token_id=3, begin_suppress_tokens=None)
        tf.WhisperForAudioClassification(cfg).save_pretrained(folder)
        tf.WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
        return str(folder)
    config_cls, model_cls = {
        "wav2vec2": (tf.Wav2Vec2Config, tf.Wav2Vec2Model),
        "hubert": (tf.HubertConfig, tf.HubertModel),
        "wavlm": (tf.WavLMConfig, tf.WavLMModel),
        "data2vec-audio": (tf.Data2VecAudioConfig, tf.Data2VecAudioModel),
    }[kind]
    model_cls(config_cls(**TINY)).save_pretrained(folder)
    tf.Wav2Vec2FeatureExtractor(do_normalize=do_normalize).save_pretrained(folder)
    return str(folder)


FAMILIES = ["wav2vec2", "hubert", "wavlm", "data2vec-audio", "whisper"]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {k: _save_tiny(k, root / k) for k in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_ssl_shapes_for_every_layer_option(tiny_models, family):
    seg = SR  # 1 s segments keep it fast
    batch = np.stack([_signal(1.0, seed=i) for i in range(3)])
    outs = {}
    for layer in ["last", 0, 1, -1, "all", "mean"]:
        enc = SSLEncoder(SSLConfig(model=tiny_models[family], layer=layer), seg)
        outs[layer] = enc.encode(batch)
        assert outs[layer].shape == (3, *enc.output_shape)
        assert outs[layer].dtype == np.float32 and np.isfinite(outs[layer]).all()
    t = 50 if family == "whisper" else 49    # whisper: 100 mel frames → 50; wav2vec2 convs: 49
    assert enc.n_layers == 2 and enc.hidden_size == 32 and enc.frames_per_segment == t
    assert outs["last"].shape == (3, t, 32)
    assert outs["all"].shape == (3, 3, t, 32)                 # embeddings + 2 layers
    np.testing.assert_allclose(outs["all"][:, -1], outs["last"], atol=1e-5)
    np.testing.assert_allclose(outs["all"][:, 0], outs[0], atol=1e-5)
    np.testing.assert_allclose(outs["all"][:, 1], outs[1], atol=1e-5)
    np.testing.assert_allclose(outs[-1], outs["last"], atol=1e-5)
    np.testing.assert_allclose(outs["all"].mean(axis=1), outs["mean"], atol=1e-5)


@pytest.mark.parametrize("family,frames", [("wav2vec2", 149), ("whisper", 150)])
def test_three_second_segment_frames(tiny_models, family, frames):
    enc = SSLEncoder(SSLConfig(model=tiny_models[family]), 3 * SR)
    assert enc.frames_per_segment == frames and enc.output_shape == (frames, 32)
    out = enc.encode(_signal(3.0)[None])
    assert out.shape == (1, frames, 32)
    if family == "whisper":
        assert enc.n_mel_frames == 300
        assert enc.module.embed_positions.num_embeddings == 150


def test_whisper_log_mel_matches_feature_extractor_and_numpy(tiny_models):
    from transformers import WhisperFeatureExtractor

    enc = SSLEncoder(SSLConfig(model=tiny_models["whisper"]), 3 * SR)
    x = np.stack([_signal(3.0, seed=1), 0.01 * _signal(3.0, seed=2)])
    mine = enc.whisper_log_mel(torch.from_numpy(x)).numpy()
    assert mine.shape == (2, 80, 300)
    fe = WhisperFeatureExtractor(feature_size=80)
    ref = fe(list(x), sampling_rate=SR, padding="max_length", max_length=3 * SR, return_tensors="np")
    np.testing.assert_allclose(mine, ref["input_features"], atol=1e-5)
    # the same math in numpy (what WhisperFeatureExtractor does without torch)
    for i in range(2):
        spec = librosa.stft(x[i].astype(np.float64), n_fft=400, hop_length=160, window="hann",
                            center=True, pad_mode="reflect")
        mel = fe.mel_filters.T @ (np.abs(spec[:, :-1]) ** 2)
        log = np.log10(np.maximum(mel, 1e-10))
        log = (np.maximum(log, log.max() - 8.0) + 4.0) / 4.0
        np.testing.assert_allclose(mine[i], log, atol=1e-4)


def test_wav2vec2_normalisation_follows_feature_extractor_unless_overridden(tmp_path):
    from transformers import Wav2Vec2FeatureExtractor

    folder = _save_tiny("wav2vec2", tmp_path / "w2v", do_normalize=False)
    x = np.stack([_signal(1.0) * 0.2 + 0.05])
    plain = SSLEncoder(SSLConfig(model=folder), SR)
    forced = SSLEncoder(SSLConfig(model=folder, normalize=True), SR)
    assert plain.normalize is False and forced.normalize is True
    np.testing.assert_array_equal(plain.preprocess_torch(torch.from_numpy(x)).numpy(), x)
    ref = Wav2Vec2FeatureExtractor(do_normalize=True)(list(x), sampling_rate=SR, return_tensors="np")
    np.testing.assert_allclose(forced.preprocess_torch(torch.from_numpy(x)).numpy(), ref["input_values"],
                               atol=1e-5)
    assert not np.allclose(plain.encode(x), forced.encode(x))


@pytest.mark.parametrize("family", ["wav2vec2", "whisper"])
def test_forward_torch_is_differentiable_and_matches_encode(tiny_models, family):
    enc = SSLEncoder(SSLConfig(model=tiny_models[family], layer="mean"), SR)
    x = np.stack([_signal(1.0, seed=3), _signal(1.0, seed=4)])
    frozen = enc.encode(x)
    audio = torch.from_numpy(x).requires_grad_(True)
    out = enc.forward_torch(audio)                        # eval mode: no dropout/masking
    np.testing.assert_allclose(out.detach().numpy(), frozen, atol=1e-5)
    out.pow(2).mean().backward()
    assert audio.grad is not None and audio.grad.abs().sum() > 0
    missing = [n for n, p in enc.module.named_parameters()
               if p.requires_grad and p.grad is None and n != "masked_spec_embed"]  # used only when masking
    assert not missing


def test_full_checkpoints_load_their_encoder_weights(tmp_path):
    """A whole Whisper (encoder-decoder) or a wav2vec2 CTC checkpoint, as on the hub."""
    import transformers as tf

    torch.manual_seed(0)
    wcfg = tf.WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                            decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, num_mel_bins=80,
                            vocab_size=12, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                            decoder_start_token_id=3, begin_suppress_tokens=None)
    whisper = tf.WhisperForConditionalGeneration(wcfg)
    whisper.save_pretrained(tmp_path / "whisper")
    enc = SSLEncoder(SSLConfig(model=str(tmp_path / "whisper")), SR)
    assert torch.equal(enc.module.layers[1].fc1.weight, whisper.model.encoder.layers[1].fc1.weight)
    assert torch.equal(enc.module.embed_positions.weight, whisper.model.encoder.embed_positions.weight[:50])
    ctc = tf.Wav2Vec2ForCTC(tf.Wav2Vec2Config(**TINY))
    ctc.save_pretrained(tmp_path / "ctc")
    enc = SSLEncoder(SSLConfig(model=str(tmp_path / "ctc")), SR)
    assert type(enc.module).__name__ == "Wav2Vec2Model"
    assert torch.equal(enc.module.encoder.layers[0].attention.k_proj.weight,
                       ctc.wav2vec2.encoder.layers[0].attention.k_proj.weight)


def test_bad_layer_is_a_config_error(tiny_models):
    with pytest.raises(ConfigError, match="features.ssl.layer"):
        SSLEncoder(SSLConfig(model=tiny_models["wav2vec2"], layer=7), SR)
    with pytest.raises(ConfigError, match="features.ssl.layer"):
        SSLEncoder(SSLConfig(model=tiny_models["wav2vec2"], layer="first"), SR)


def test_unreachable_hub_gives_one_line_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CamserError) as err:
        SSLEncoder(SSLConfig(model="nonexistent-org/nonexistent-model"), SR)
    msg = str(err.value)
    assert "\n" not in msg
    assert "Hugging Face hub" in msg and "--set features.ssl.model=/path/to/folder" in msg
    with pytest.raises(ConfigError, match="no such folder"):
        SSLEncoder(SSLConfig(model="/nonexistent/model/folder"), SR)


# ---------------------------------------------------------------------- real model (shared)

@pytest.mark.shared
def test_real_whisper_base_on_ravdess(tmp_path):
    model = SHARED / "models" / "whisper-base-encoder"
    clips = sorted((SHARED / "data" / "ravdess" / "Actor_01").glob("*.flac"))[:3]
    if not (model / "config.json").is_file() or len(clips) < 2:
        pytest.skip("needs ../shared/models/whisper-base-encoder and RAVDESS Actor_01")
    utts = [Utterance(p.stem, str(p), "x", "01", "01", sf.info(str(p)).duration) for p in clips]
    cfg = ExperimentConfig()
    cfg = dataclasses.replace(cfg, features=dataclasses.replace(
        cfg.features, ssl=SSLConfig(model=str(model), dtype="float32")))
    store = extract_features(utts, cfg, tmp_path, kinds=["ssl"], progress=False)["ssl"]
    n_seg = sum(len(store.rows_of(u.id)) for u in utts)
    assert store.array.shape == (n_seg, 150, 512) and n_seg >= len(utts)
    assert np.isfinite(store.array).all() and store.array.std() > 0
