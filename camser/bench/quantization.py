"""What int8 dynamic quantisation costs in accuracy: one model trained on one fold, its test
utterances predicted end to end (files → ``EmotionRecognizer.predict``) by PyTorch fp32, by
onnxruntime fp32 and by onnxruntime int8, the ONNX graphs exported from audio (the encoder
inside, as :mod:`camser.bench.inference` times them).

A full run trains ``configs/ravdess_emobox.yaml`` (CA-MSER, Whisper-base frozen, from
../shared) on RAVDESS EmoBox fold 1; the speed figures use the wav2vec2-base architecture with
random weights, which has no accuracy to lose, so the UA change is measured with the pretrained
encoder we have. A quick run uses the synthetic corpus and the tiny wav2vec2.
"""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path

from .common import Skip, rnd

REPO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "ravdess_emobox.yaml"


def _experiment(ctx):
    """(config, description) of the model to train, its feature cache in the scratch folder."""
    from ..config import load_config
    from .common import tiny_wav2vec2, whisper_folder

    cache = str(ctx.work / "cache-int8")
    if ctx.sizes["tiny_models"]:
        from ..corpora import scan_corpus, write_manifest
        from ..corpora.synthetic import generate_iemocap
        root = generate_iemocap(ctx.work / "synthetic", n_sessions=3, utterances_per_speaker=8, seed=0)
        scan = scan_corpus("iemocap", root)
        write_manifest(ctx.work / "synthetic-prepared", scan.utterances, scan.skipped)
        cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml", data={
            "corpus": {"prepared": str(ctx.work / "synthetic-prepared")},
            "features": {"cache_dir": cache, "ssl": {"model": str(tiny_wav2vec2(ctx.work / "tiny-wav2vec2"))}},
            "train": {"max_epochs": 3, "min_epochs": 1}, "protocol": {"folds": [1]}})
        return cfg, "synthetic corpus (quick run), tiny random wav2vec2, leave-one-session-out fold 1"
    ravdess = Path(ctx.shared or "") / "data" / "ravdess"
    whisper = whisper_folder(ctx.shared)
    if whisper is None or not (ravdess / "folds_emobox.csv").is_file():
        raise Skip("needs ../shared (RAVDESS and the Whisper-base encoder)")
    if not REPO_CONFIG.is_file():
        raise Skip(f"{REPO_CONFIG} not found (run from a clone of the repository)")
    cfg = load_config(REPO_CONFIG, data={
        "corpus": {"root": str(ravdess), "folds_csv": str(ravdess / "folds_emobox.csv")},
        "features": {"cache_dir": cache, "ssl": {"model": str(whisper)}}, "protocol": {"folds": [1]}})
    return cfg, "configs/ravdess_emobox.yaml (CA-MSER, Whisper-base frozen), RAVDESS EmoBox fold 1"


def measure_int8_ua(ctx) -> dict:
    for module in ("onnxruntime", "onnx", "onnxscript"):
        if importlib.util.find_spec(module) is None:
            raise Skip(f"{module} is not installed (pip install 'camser[onnx]')")
    from ..inference.model_dir import with_resolved_encoder
    from ..inference.onnx_export import export_onnx
    from ..inference.recognizer import EmotionRecognizer
    from ..training.train_model import save_trained
    from ..training.cv import data_inputs, train_split
    from ..training.experiment import prepare_data
    from ..metrics import compute_metrics
    from ..protocols import make_folds

    started = time.time()
    cfg, desc = _experiment(ctx)
    cfg = with_resolved_encoder(cfg)
    data = prepare_data(cfg, data_inputs(cfg), progress=False)
    fold = make_folds(data.utterances, cfg.protocol, folds_csv=cfg.corpus.folds_csv)[0]
    seed = cfg.train.seeds[0]
    model, result, _ = train_split(cfg, data, fold, seed, None, log=lambda m: None)
    model_dir = ctx.work / "model-int8-check"
    save_trained(model_dir, model, cfg, data, fold, result, seed, started)
    train_s = time.time() - started

    test = [u for u in data.utterances if u.id in set(fold.test_ids)]
    paths = [u.path for u in test]
    y_true = [u.label for u in test]
    variants: dict[str, dict] = {}
    for name, quantize in (("torch_fp32", None), ("onnx_fp32", "none"), ("onnx_int8", "int8")):
        onnx_file = None
        if quantize is not None:
            onnx_file = ctx.work / f"int8-check-{name}.onnx"
            export_onnx(model_dir, onnx_file, source="audio", quantize=None if quantize == "none" else quantize,
                        log=lambda m: None)
        rec = EmotionRecognizer.from_pretrained(model_dir, device="cpu", onnx=onnx_file)
        t = time.perf_counter()
        y_pred = [p.label for p in rec.predict(paths)]
        m = compute_metrics(y_true, y_pred, rec.labels)
        variants[name] = {"ua": rnd(m["ua"]), "wa": rnd(m["wa"]), "predict_s": rnd(time.perf_counter() - t, 1),
                          "y_pred": y_pred}
    ref = variants["onnx_fp32"]
    int8 = variants["onnx_int8"]
    agree = sum(a == b for a, b in zip(ref.pop("y_pred"), int8.pop("y_pred"))) / len(test)
    variants["torch_fp32"].pop("y_pred")
    return {"experiment": desc, "fold": fold.index, "test_speakers": fold.test_speakers,
            "n_test_utterances": len(test), "best_epoch": result.best_epoch, "epochs": result.epochs,
            "train_s": rnd(train_s, 1), "variants": variants,
            "ua_change_int8_vs_fp32": rnd(int8["ua"] - ref["ua"]),
            "wa_change_int8_vs_fp32": rnd(int8["wa"] - ref["wa"]),
            "prediction_agreement_int8_vs_fp32": rnd(agree),
            "definition": "UA/WA of whole-file predictions of the fold's test utterances; int8 = "
                          "onnxruntime dynamic quantisation of the audio graph (encoder inside)"}
