"""`camser serve`: real HTTP requests against a real uvicorn server on 127.0.0.1."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'camser[serve]')")
pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install 'camser[serve]')")
pytest.importorskip("multipart", reason="the serve extra is not installed (pip install 'camser[serve]')")

from conftest import LiveServer, write_tone  # noqa: E402

from camser.cli import build_parser  # noqa: E402
from camser.inference.recognizer import EmotionRecognizer  # noqa: E402
from camser.serve.app import create_app  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
LIMIT = 256 * 1024                    # bytes: a 4 s 16-bit WAV is 128 KB


# ---------------------------------------------------------------------- HTTP helpers

def request(url: str, data=None, headers=None, method=None, timeout=60):
    """→ (status, parsed JSON or text)."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, body, ctype = r.status, r.read(), r.headers.get("content-type", "")
    except urllib.error.HTTPError as e:
        status, body, ctype = e.code, e.read(), e.headers.get("content-type", "")
    return status, (json.loads(body) if "json" in ctype else body.decode("utf-8", "replace"))


def multipart(fields: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """``{field: (filename, bytes)}`` → (body, content type)."""
    boundary = uuid.uuid4().hex
    out = b""
    for name, (filename, data) in fields.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def upload(base: str, filename: str, data: bytes, field: str = "file", chunked: bool = False):
    body, ctype = multipart({field: (filename, data)})
    headers = {"Content-Type": ctype}
    if chunked:                       # no Content-Length: the server has to count as it reads
        headers["Transfer-Encoding"] = "chunked"
        body = iter([body[i:i + 65536] for i in range(0, len(body), 65536)])
    return request(f"{base}/v1/predict", data=body, headers=headers, method="POST")


# ---------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def recognizer(tiny_model_folder):
    return EmotionRecognizer.from_pretrained(tiny_model_folder.model_dir, device="cpu")


@pytest.fixture(scope="module")
def server(recognizer):
    with LiveServer(create_app(recognizer, max_upload_bytes=LIMIT)) as s:
        yield s


@pytest.fixture(scope="module")
def tone(tmp_path_factory) -> Path:
    return write_tone(tmp_path_factory.mktemp("serve") / "tone.wav", 4.2)


# ---------------------------------------------------------------------- predict

def test_predict_returns_the_prediction_of_the_upload(server, recognizer, tone, tiny_model_folder):
    status, body = upload(server.url, "talk.wav", tone.read_bytes())
    assert status == 200, body
    expected = recognizer.predict(str(tone)).to_dict()
    assert body == expected | {"path": "talk.wav"}
    assert body["label"] in recognizer.labels and len(body["segments"]) == 2
    # a corpus utterance too (another rate/length): same numbers as the Python API
    path = tiny_model_folder.utterances[0].path
    status, body = upload(server.url, Path(path).name, Path(path).read_bytes())
    assert status == 200 and body == recognizer.predict(path).to_dict() | {"path": Path(path).name}


def test_non_audio_is_415_with_the_reason(server):
    status, body = upload(server.url, "notes.wav", b"this is not audio at all" * 40)
    assert status == 415
    assert body["detail"].startswith("notes.wav: unreadable audio") and "BytesIO" not in body["detail"]


def test_empty_upload_is_400(server):
    status, body = upload(server.url, "empty.wav", b"")
    assert status == 400 and body["detail"] == "empty.wav: empty upload (0 bytes)"


def test_unusable_audio_is_422_with_the_reason(server, tmp_path):
    import numpy as np
    import soundfile as sf
    sf.write(tmp_path / "silence.wav", np.zeros(16000, dtype=np.float32), 16000)
    status, body = upload(server.url, "silence.wav", (tmp_path / "silence.wav").read_bytes())
    assert status == 422 and body["detail"] == "silence.wav: silent audio (all samples are zero)"
    sf.write(tmp_path / "blip.wav", np.full(400, 0.1, dtype=np.float32), 16000)       # 25 ms
    status, body = upload(server.url, "blip.wav", (tmp_path / "blip.wav").read_bytes())
    assert status == 422 and "too short" in body["detail"]


def test_oversized_uploads_are_413(server, tone):
    # Content-Length, then streamed and counted; a large body is drained so the client reads
    # the 413 instead of a connection reset
    for big in (tone.read_bytes() * 3, b"\1" * (6 << 20)):          # ~400 KB and 6 MB > 256 KB
        for chunked in (False, True):
            status, body = upload(server.url, "big.wav", big, chunked=chunked)
            assert status == 413, (len(big), chunked, body)
            assert body["detail"] == "upload too large: the limit is 0.25 MB (262144 bytes)"
    # within the multipart slack but over the limit by one byte: caught while reading the file
    status, body = upload(server.url, "edge.wav", b"\0" * (LIMIT + 1))
    assert status == 413 and "upload too large" in body["detail"]
    status, _ = request(f"{server.url}/healthz")             # and the server is fine
    assert status == 200


def test_missing_file_field_is_422_in_one_line(server, tone):
    one_line = "file: missing (send the audio as the multipart/form-data field 'file')"
    status, body = upload(server.url, "tone.wav", tone.read_bytes(), field="audio")
    assert status == 422 and body == {"detail": one_line}
    status, body = request(f"{server.url}/v1/predict", data=b"", method="POST")
    assert status == 422 and body == {"detail": one_line}


def test_eight_concurrent_requests_all_succeed(server, recognizer, tone, tiny_model_folder):
    paths = [str(tone)] + [u.path for u in tiny_model_folder.utterances[:7]]
    expected = [recognizer.predict(p).to_dict() for p in paths]

    def one(path):
        return upload(server.url, Path(path).name, Path(path).read_bytes())

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, paths))
    assert [s for s, _ in got] == [200] * 8
    assert [b for _, b in got] == [e | {"path": Path(p).name} for e, p in zip(expected, paths)]


def test_the_event_loop_is_not_blocked_by_predictions(live_server, recognizer, tone):
    """While slow predictions run (one at a time, in the model thread), health checks answer at once."""
    class Slow:
        labels, cfg, metadata, backend, sample_rate = (recognizer.labels, recognizer.cfg, recognizer.metadata,
                                                       recognizer.backend, recognizer.sample_rate)

        def predict(self, source):
            time.sleep(0.6)
            return recognizer.predict(source)

    s = live_server(create_app(Slow(), max_upload_bytes=LIMIT))
    data = tone.read_bytes()
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(upload, s.url, "tone.wav", data) for _ in range(3)]
        time.sleep(0.3)
        t0 = time.time()
        status, _ = request(f"{s.url}/healthz")
        health_s = time.time() - t0
        results = [f.result() for f in futures]
    assert status == 200 and health_s < 0.5
    assert [r[0] for r in results] == [200] * 3


def test_queue_limit_answers_503(live_server, recognizer, tone):
    gate = threading.Event()

    class Blocked:
        labels, cfg, metadata, backend, sample_rate = (recognizer.labels, recognizer.cfg, recognizer.metadata,
                                                       recognizer.backend, recognizer.sample_rate)

        def predict(self, source):
            gate.wait(20)
            return recognizer.predict(source)

    s = live_server(create_app(Blocked(), max_upload_bytes=LIMIT, max_queue=1))
    data = tone.read_bytes()
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(upload, s.url, "a.wav", data)
        time.sleep(0.5)
        status, body = upload(s.url, "b.wav", data)
        gate.set()
        assert first.result()[0] == 200
    assert status == 503 and body["detail"].startswith("busy")


# ---------------------------------------------------------------------- the other endpoints

def test_healthz(server):
    status, body = request(f"{server.url}/healthz")
    assert status == 200 and body == {"status": "ok", "backend": "torch", "labels": ["ang", "sad", "hap", "neu"]}


def test_model_description(server, tiny_model_folder):
    import camser
    status, body = request(f"{server.url}/v1/model")
    assert status == 200
    assert body["labels"] == ["ang", "sad", "hap", "neu"] and body["inputs"] == ["mfcc", "spectrogram", "ssl"]
    assert body["backend"] == "torch" and body["onnx"] is None
    assert body["encoder"]["model"] == str(tiny_model_folder.encoder.resolve())
    assert body["encoder"]["output_shape"] == [3, 149, 64]
    assert body["version"] == camser.__version__ and body["model_versions"]["torch"]
    assert body["configuration"]["model"]["name"] == "camser"
    assert body["configuration"]["segments"]["length_s"] == 3.0 and "features" in body["configuration"]
    assert body["sample_rate"] == 16000 and body["segment_s"] == 3.0 and body["max_upload_bytes"] == LIMIT
    assert body["max_audio_s"] == 600 and body["request_timeout_s"] == 120
    assert body["test_time_copies"] == []


def test_openapi_schema_has_the_response_models(server):
    status, spec = request(f"{server.url}/openapi.json")
    assert status == 200
    assert set(spec["paths"]) == {"/v1/predict", "/healthz", "/v1/model"}
    post = spec["paths"]["/v1/predict"]["post"]
    ok = post["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/PredictionOut")
    for code in ("400", "408", "413", "415", "422", "503", "504"):
        assert post["responses"][code]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut")
    assert "file" in json.dumps(spec["components"]["schemas"][post["requestBody"]["content"]
                                ["multipart/form-data"]["schema"]["$ref"].split("/")[-1]])
    schemas = spec["components"]["schemas"]
    assert {"segments", "probabilities", "label", "path"} <= set(schemas["PredictionOut"]["properties"])
    assert spec["paths"]["/v1/model"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"]["$ref"].endswith("/ModelOut")


def test_the_page_and_its_assets_are_served(server):
    status, html = request(f"{server.url}/")
    assert status == 200 and 'id="file"' in html and "static/app.js" in html
    assert "http://" not in html and "https://" not in html             # nothing external to load
    for asset in ("app.js", "style.css"):
        status, text = request(f"{server.url}/static/{asset}")
        assert status == 200 and "https://" not in text.replace("http://www.w3.org/2000/svg", "")


def test_cli_registers_serve():
    a = build_parser().parse_args(["serve", "model", "--port", "9000", "--max-upload-mb", "5"])
    assert (a.host, a.port, a.max_upload_mb, a.onnx) == ("127.0.0.1", 9000, 5.0, None)


@contextmanager
def camser_serve(model_dir: Path, *options: str, startup_s: float = 90):
    """`camser serve` as a user runs it: a subprocess on a free port of 127.0.0.1, ready to
    answer → a namespace with ``url``, ``port``, ``proc``; ``output`` (its stdout and stderr)
    once stopped. The subprocess imports the camser the tests import."""
    import camser

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(Path(camser.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryFile("w+") as log:     # a file, not a pipe: a full pipe would block the server
        proc = subprocess.Popen([sys.executable, "-m", "camser.cli", "serve", str(model_dir),
                                 "--port", str(port), "--device", "cpu", *options],
                                stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
        s = SimpleNamespace(url=f"http://127.0.0.1:{port}", port=port, proc=proc, output=None)
        try:
            deadline = time.time() + startup_s
            while True:
                try:
                    if request(f"{s.url}/healthz", timeout=5)[0] == 200:
                        break
                except (urllib.error.URLError, ConnectionError):
                    pass
                if proc.poll() is not None or time.time() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"camser serve did not start: {log.read()[-2000:]}")
                time.sleep(0.3)
            yield s
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            log.seek(0)
            s.output = log.read()


def test_camser_serve_command_serves(tiny_model_folder, tone):
    """`camser serve` as a user runs it: a subprocess on a free port, then a real upload."""
    with camser_serve(tiny_model_folder.model_dir, "--max-upload-mb", "1") as s:
        status, body = upload(s.url, "tone.wav", tone.read_bytes())
        assert status == 200 and body["path"] == "tone.wav" and len(body["segments"]) == 2
        status, body = request(f"{s.url}/v1/model")
        assert body["max_upload_bytes"] == 1 << 20
    assert f"on http://127.0.0.1:{s.port}/" in s.output
