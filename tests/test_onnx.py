"""`camser export-onnx` and the ONNX backend: parity with PyTorch (< 1e-4 on probabilities) from
features and from audio, predict/serve on the ONNX file, int8 quantisation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'camser[onnx]')")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'camser[onnx]')")
pytest.importorskip("onnxscript", reason="the onnx extra is not installed (pip install 'camser[onnx]')")

from camser.cli import main  # noqa: E402
from camser.errors import CamserError  # noqa: E402
from camser.inference.backend import TorchBackend  # noqa: E402
from camser.inference.onnx_export import OnnxBackend, export_onnx  # noqa: E402
from camser.inference.pipeline import FeaturePipeline  # noqa: E402
from camser.inference.recognizer import EmotionRecognizer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
TOL = 1e-4


@pytest.fixture(scope="module")
def torch_recognizer(tiny_model_folder):
    return EmotionRecognizer.from_pretrained(tiny_model_folder.model_dir, device="cpu")


@pytest.fixture(scope="module")
def exported(tiny_model_folder, tmp_path_factory):
    """The frozen model exported from features and from audio (the tiny wav2vec2 in the graph)."""
    out = tmp_path_factory.mktemp("onnx")
    log: list[str] = []
    info = {src: export_onnx(tiny_model_folder.model_dir, out / f"{src}.onnx", source=src, log=log.append)
            for src in ("features", "audio")}
    return info, log


def real_batch(recognizer, paths, inputs):
    """Model inputs of corpus utterances by the training feature code, as one batch."""
    pipe = FeaturePipeline(recognizer.cfg, inputs, recognizer.pipeline.encoder if "ssl" in inputs else None)
    windows = [w for p in paths for w in pipe.file_windows(p)]
    return {k: np.concatenate([w.features[k] for w in windows]) for k in inputs}


def max_prob_diff(a, b) -> float:
    return float(np.abs(np.exp(a) - np.exp(b)).max())


def test_export_from_features_matches_pytorch(exported, torch_recognizer, tiny_model_folder):
    info, log = exported
    f = info["features"]
    assert f["inputs"] == ["mfcc", "spectrogram", "ssl"] and f["opset"] >= 17 and "dynamo=True" in f["exporter"]
    assert f["max_abs_diff"] < TOL and any("max |Δp|" in line for line in log)
    backend = OnnxBackend(f["path"])
    assert backend.inputs == ("mfcc", "spectrogram", "ssl") and backend.labels == ["ang", "sad", "hap", "neu"]
    shapes = {i.name: i.shape for i in backend.session.get_inputs()}
    assert shapes["ssl"][0] == shapes["mfcc"][0] == "batch" and shapes["ssl"][1:] == [3, 149, 64]
    batch = real_batch(torch_recognizer, [u.path for u in tiny_model_folder.utterances[:6]], backend.inputs)
    assert len(batch["mfcc"]) >= 6                                   # several segments, one batch
    ref = TorchBackend(torch_recognizer.model).log_probs(batch)
    assert max_prob_diff(backend.log_probs(batch), ref) < TOL
    assert max_prob_diff(backend.log_probs({k: v[:1] for k, v in batch.items()}), ref[:1]) < TOL   # batch 1


def test_export_from_audio_puts_the_encoder_in_the_graph(exported, torch_recognizer, tiny_model_folder):
    info, _ = exported
    a = info["audio"]
    assert a["inputs"] == ["mfcc", "spectrogram", "audio"] and a["max_abs_diff"] < TOL
    backend = OnnxBackend(a["path"])
    assert {i.name: i.shape for i in backend.session.get_inputs()}["audio"] == ["batch", 48000]
    paths = [u.path for u in tiny_model_folder.utterances[:6]]
    batch = real_batch(torch_recognizer, paths, ("mfcc", "spectrogram", "audio"))
    torch_batch = real_batch(torch_recognizer, paths, ("mfcc", "spectrogram", "ssl"))
    ref = TorchBackend(torch_recognizer.model).log_probs(torch_batch)
    assert max_prob_diff(backend.log_probs(batch), ref) < TOL


def test_predict_on_the_onnx_file_gives_pytorchs_labels(exported, torch_recognizer, tiny_model_folder):
    info, _ = exported
    paths = [u.path for u in tiny_model_folder.utterances[:8]]
    expected = torch_recognizer.predict(paths)
    for src in ("features", "audio"):
        r = EmotionRecognizer.from_pretrained(tiny_model_folder.model_dir, onnx=info[src]["path"], device="cpu")
        assert r.model is None and type(r.backend).__name__ == "OnnxBackend"
        assert (r.pipeline.encoder is None) == (src == "audio")      # from audio: no torch encoder needed
        got = r.predict(paths)
        assert [p.label for p in got] == [p.label for p in expected]
        for g, e in zip(got, expected):
            assert [s.label for s in g.segments] == [s.label for s in e.segments]
            assert max(abs(g.probabilities[k] - e.probabilities[k]) for k in e.probabilities) < TOL


def test_cli_predict_with_onnx(exported, tiny_model_folder, capsys):
    info, _ = exported
    path = tiny_model_folder.utterances[0].path
    assert main(["predict", str(tiny_model_folder.model_dir), path, "--format", "json", "--device", "cpu"]) == 0
    torch_out = json.loads(capsys.readouterr().out)
    assert main(["predict", str(tiny_model_folder.model_dir), path, "--format", "json", "--device", "cpu",
                 "--onnx", info["audio"]["path"]]) == 0
    onnx_out = json.loads(capsys.readouterr().out)
    assert onnx_out[0]["label"] == torch_out[0]["label"] and onnx_out[0]["path"] == path


def test_quantized_int8_model_runs(exported, tiny_model_folder, tmp_path, capsys):
    info, _ = exported
    out = tmp_path / "q.onnx"
    assert main(["export-onnx", str(tiny_model_folder.model_dir), str(out), "--quantize", "int8"]) == 0
    assert "int8" in capsys.readouterr().out
    assert out.stat().st_size < Path(info["features"]["path"]).stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.onnx"]                # no temporary files left
    import onnx
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeLinear"}
    r = EmotionRecognizer.from_pretrained(tiny_model_folder.model_dir, onnx=out, device="cpu")
    assert r.backend.quantize == "int8"
    p = r.predict(tiny_model_folder.utterances[0].path)
    assert p.label in r.labels and sum(p.probabilities.values()) == pytest.approx(1.0)


def test_finetuned_model_exports_from_audio(tiny_finetuned_folder, tiny_model_folder, tmp_path):
    info = export_onnx(tiny_finetuned_folder, tmp_path / "ft.onnx", source="audio", log=lambda m: None)
    assert info["inputs"] == ["mfcc", "spectrogram", "audio"] and info["max_abs_diff"] < TOL
    paths = [u.path for u in tiny_model_folder.utterances[:4]]
    ref = EmotionRecognizer.from_pretrained(tiny_finetuned_folder, device="cpu").predict(paths)
    got = EmotionRecognizer.from_pretrained(tiny_finetuned_folder, onnx=info["path"], device="cpu").predict(paths)
    assert [p.label for p in got] == [p.label for p in ref]


def test_onnx_file_from_another_model_folder_is_refused(exported, tiny_finetuned_folder, tmp_path):
    info, _ = exported
    with pytest.raises(CamserError, match="exported from another model folder"):
        EmotionRecognizer.from_pretrained(tiny_finetuned_folder, onnx=info["features"]["path"], device="cpu")
    with pytest.raises(CamserError, match="ONNX file not found"):
        OnnxBackend(tmp_path / "nope.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(CamserError, match="not a usable ONNX model"):
        OnnxBackend(tmp_path / "bad.onnx")


def test_export_argument_errors(tiny_model_folder, tmp_path):
    with pytest.raises(CamserError, match="--from"):
        export_onnx(tiny_model_folder.model_dir, tmp_path / "x.onnx", source="video")
    with pytest.raises(CamserError, match="--quantize"):
        export_onnx(tiny_model_folder.model_dir, tmp_path / "x.onnx", quantize="int4")
    with pytest.raises(CamserError, match=r"\.onnx"):
        export_onnx(tiny_model_folder.model_dir, tmp_path / "x.bin")
    assert main(["export-onnx", str(tmp_path / "nothing"), str(tmp_path / "x.onnx")]) == 2


def test_serve_runs_on_the_onnx_file(exported, tiny_model_folder, live_server):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from camser.serve.app import create_app
    from test_serve import request, upload

    info, _ = exported
    r = EmotionRecognizer.from_pretrained(tiny_model_folder.model_dir, onnx=info["audio"]["path"], device="cpu")
    s = live_server(create_app(r))
    status, body = request(f"{s.url}/v1/model")
    assert status == 200 and body["backend"] == "onnx" and body["onnx"]["source"] == "audio"
    path = Path(tiny_model_folder.utterances[0].path)
    status, body = upload(s.url, path.name, path.read_bytes())
    assert status == 200 and body == r.predict(str(path)).to_dict() | {"path": path.name}


def test_a_whole_utterance_model_exports_with_its_pooling(tiny_model_folder, tmp_path):
    """train.unit: utterance — the graph takes the segment → utterance membership and gives one
    answer per utterance; predictions from the ONNX file match PyTorch's pooled ones."""
    import shutil

    import yaml
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_folder.model_dir, folder)
    exp = yaml.safe_load((folder / "experiment.yaml").read_text())
    exp["train"]["unit"] = "utterance"
    (folder / "experiment.yaml").write_text(yaml.safe_dump(exp))
    info = export_onnx(folder, tmp_path / "pooled.onnx", log=lambda m: None)
    assert info["inputs"][-1] == "owner" and info["max_abs_diff"] < TOL
    backend = OnnxBackend(info["path"])
    assert backend.pools_segments and "owner" not in backend.inputs
    pooled = EmotionRecognizer.from_pretrained(folder, device="cpu")
    assert pooled.unit == "utterance"
    onnx = EmotionRecognizer.from_pretrained(folder, onnx=info["path"], device="cpu", batch_size=3)
    assert onnx.unit == "utterance"
    paths = [u.path for u in tiny_model_folder.utterances[:8]]
    for g, e in zip(onnx.predict(paths), pooled.predict(paths)):
        assert g.label == e.label and len(g.segments) == len(e.segments)
        assert max(abs(g.probabilities[k] - e.probabilities[k]) for k in e.probabilities) < TOL


def test_test_time_copies_run_through_the_onnx_file_too(exported, tiny_model_folder, tmp_path):
    """features.augment.test_time: the copies are made outside the graph, so the ONNX file
    scores them as PyTorch does."""
    import shutil

    import yaml
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_folder.model_dir, folder)
    features = yaml.safe_load((folder / "features.yaml").read_text())
    features["features"]["augment"] = {"speeds": [0.9, 1.1], "test_time": True}
    (folder / "features.yaml").write_text(yaml.safe_dump(features))
    info, _ = exported
    onnx = EmotionRecognizer.from_pretrained(folder, onnx=info["features"]["path"], device="cpu")
    torch_tta = EmotionRecognizer.from_pretrained(folder, device="cpu")
    plain = EmotionRecognizer.from_pretrained(tiny_model_folder.model_dir, device="cpu")
    assert onnx.pipeline.view_specs == ["speed0.9", "speed1.1"]
    paths = [u.path for u in tiny_model_folder.utterances[:6]]
    expected, alone = torch_tta.predict(paths), plain.predict(paths)
    for g, e, a in zip(onnx.predict(paths), expected, alone):
        assert max(abs(g.probabilities[k] - e.probabilities[k]) for k in e.probabilities) < TOL
        assert len(g.segments) == len(a.segments)
    assert any(max(abs(e.probabilities[k] - a.probabilities[k]) for k in a.probabilities) > 1e-3
               for e, a in zip(expected, alone))
