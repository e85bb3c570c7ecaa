"""`camser bench --quick`: the benchmark runs end to end and writes bench.json / bench.md with
every key (speeds are not asserted: a quick run's figures mean nothing)."""
import json
import os
import subprocess
import sys

from camser.bench.runner import MEASUREMENTS
from camser.bench.targets import TARGETS


def test_bench_quick_writes_json_and_markdown(tmp_path):
    out = tmp_path / "bench"
    r = subprocess.run([sys.executable, "-m", "camser.cli", "bench", "--quick", "--out", str(out),
                        "--tmp", str(tmp_path / "scratch")],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"}, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "bench.json").is_file() and (out / "bench.md").is_file()

    report = json.loads((out / "bench.json").read_text())
    for key in ("schema", "command", "argv", "date", "quick", "machine", "sizes", "measurements", "targets",
                "duration_s"):
        assert key in report, key
    assert report["quick"] is True and report["command"].startswith("camser bench --out")
    for key in ("cpu_model", "cpu_cores", "torch_threads", "versions", "cuda_available"):
        assert key in report["machine"], key
    assert {"python", "torch", "transformers", "numpy"} <= set(report["machine"]["versions"])

    measurements = report["measurements"]
    assert set(measurements) == {"features", "training", "inference", "peak_memory"}
    for name, (group, *_rest) in MEASUREMENTS.items():
        entry = measurements[group][name]
        # every measurement ran or says why not; none failed
        assert entry["status"] == "ok" or entry["status"].startswith("skipped: "), (name, entry["status"])
        assert "peak_private_mb" in entry["process"] and "peak_rss_mb" in entry["process"]
    assert measurements["features"]["ssl_wav2vec2"]["mkldnn"]["faster"] in ("on", "off")
    assert measurements["training"]["train_paper"]["extrapolated"] is True
    assert measurements["training"]["cv_ratio"]["status"] == "ok"
    assert measurements["inference"]["onnx"]["status"] != "ok" or "variants" in measurements["inference"]["onnx"]
    int8 = measurements["inference"]["int8_ua"]
    if int8["status"] == "ok":                 # trained on the synthetic corpus, fold 1, in a quick run
        assert set(int8["variants"]) == {"torch_fp32", "onnx_fp32", "onnx_int8"}
        assert all(0 <= v["ua"] <= 1 for v in int8["variants"].values())
        assert int8["variants"]["onnx_fp32"]["ua"] == int8["variants"]["torch_fp32"]["ua"]
        assert int8["ua_change_int8_vs_fp32"] == round(int8["variants"]["onnx_int8"]["ua"]
                                                      - int8["variants"]["onnx_fp32"]["ua"], 4)
    assert measurements["peak_memory"]["peak_private_mb"] is not None

    assert [t["id"] for t in report["targets"]] == [t.id for t in TARGETS]
    for t in report["targets"]:
        assert t["status"] in ("met", "missed") or t["status"].startswith("not measured"), t
        assert {"what", "figure", "op", "threshold", "unit", "value"} <= set(t)

    md = (out / "bench.md").read_text()
    assert "## Targets" in md and "Quick run" in md
    for t in TARGETS:
        assert t.what in md
    assert not (tmp_path / "scratch").exists() or not any((tmp_path / "scratch").iterdir())   # scratch removed
