"""`camser serve` bounds the work of every request (issue 14): decoded duration and sample rate
checked from the header, a body that stalls or trickles, a request time limit, one-line
errors. Real uvicorn servers on 127.0.0.1; every loop and wait is bounded."""
from __future__ import annotations

import io
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'camser[serve]')")
pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install 'camser[serve]')")
pytest.importorskip("multipart", reason="the serve extra is not installed (pip install 'camser[serve]')")

from conftest import write_tone  # noqa: E402
from test_serve import camser_serve, multipart, request, upload  # noqa: E402

from camser.cli import main  # noqa: E402
from camser.inference.recognizer import EmotionRecognizer  # noqa: E402
from camser.serve.app import create_app  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
MAX_AUDIO_S = 60
BODY_TIMEOUT_S = 1.0
RSS_BOUND_MB = 300                    # peak RSS over idle while serving the bombs (README: Serving)


# ---------------------------------------------------------------------- payloads

def encoded(seconds: float, sr: int, fmt: str = "WAV", channels: int = 1, burst_s: float = 0.25) -> bytes:
    """A recording of ``seconds`` at ``sr`` Hz: a short tone, then a constant level (what
    compresses a long FLAC to almost nothing), written block by block so no test holds it."""
    out = io.BytesIO()
    n, done = int(round(seconds * sr)), 0
    block = max(1, min(n, 1 << 18))
    with sf.SoundFile(out, "w", sr, channels, format=fmt, subtype="PCM_16") as f:
        while done < n:
            t = (done + np.arange(min(block, n - done))) / sr
            y = np.where(t < burst_s, 0.3 * np.sin(2 * np.pi * 220 * t), 0.1).astype(np.float32)
            f.write(np.repeat(y[:, None], channels, axis=1))
            done += len(t)
    return out.getvalue()


def raw_post(port: int, content_length: int, parts: list[bytes], pause_s: float = 0.0,
             timeout_s: float = 30.0) -> tuple[int, dict, float]:
    """POST /v1/predict by hand: declare ``content_length``, send the multipart head of a
    ``file`` part, then ``parts`` with ``pause_s`` before each (stopping once the server has
    answered) → (status, JSON body, seconds until the answer was read)."""
    whole, ctype = multipart({"file": ("slow.wav", b"")})
    head = whole[:whole.index(b"\r\n\r\n") + 4]
    t0 = time.time()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
                  f"Content-Length: {content_length}\r\n\r\n".encode() + head)
        for part in parts:
            s.settimeout(pause_s)
            try:
                if s.recv(1, socket.MSG_PEEK):              # answered (and closing): stop sending
                    break
            except (socket.timeout, BlockingIOError):
                pass
            s.settimeout(timeout_s)
            try:
                s.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break
        s.settimeout(timeout_s)
        data = b""
        while time.time() - t0 < timeout_s and (chunk := s.recv(65536)):
            data += chunk
    took = time.time() - t0
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2]), took


def vm_kb(pid: int, field: str) -> int:
    """``VmRSS`` / ``VmHWM`` (peak) of a process, in KB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def one_line(body) -> bool:
    return isinstance(body, dict) and isinstance(body.get("detail"), str) and "\n" not in body["detail"]


# ---------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def tone(tmp_path_factory) -> Path:
    return write_tone(tmp_path_factory.mktemp("limits") / "tone.wav", 4.2)


@pytest.fixture(scope="module")
def recognizer(tiny_model_folder):
    return EmotionRecognizer.from_pretrained(tiny_model_folder.model_dir, device="cpu")


@pytest.fixture(scope="module")
def cli_server(tiny_model_folder):
    """`camser serve` in a subprocess (its RSS is its own), with the limits set on the command line."""
    with camser_serve(tiny_model_folder.model_dir, "--max-upload-mb", "1", "--max-audio-s", str(MAX_AUDIO_S),
                      "--request-timeout-s", "90", "--body-timeout-s", str(BODY_TIMEOUT_S)) as s:
        yield s


BOMBS = {   # name → (how to make it, status, what the detail says)
    "1hz.wav": (lambda: encoded(5000, 1, burst_s=0), 422, "unsupported sample rate 1 Hz"),   # 10 KB, 5000 s
    "1hz.flac": (lambda: encoded(5000, 1, "FLAC", burst_s=0), 422, "unsupported sample rate 1 Hz"),
    "500khz.wav": (lambda: encoded(0.1, 500_000), 422, "unsupported sample rate 500000 Hz"),
    "30min.flac": (lambda: encoded(1800, 16_000, "FLAC"), 413, "too long: 1800.0 s of audio, the limit is 60 s"),
    "61s-384khz.flac": (lambda: encoded(61, 384_000, "FLAC"), 413, "too long: 61.0 s"),
}


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    return {name: make() for name, (make, _, _) in BOMBS.items()}


# ---------------------------------------------------------------------- decoded-audio bombs

def test_audio_bombs_are_refused_from_the_header_and_memory_stays_bounded(cli_server, bombs, tone):
    pid = cli_server.proc.pid
    assert upload(cli_server.url, "warm.wav", tone.read_bytes())[0] == 200
    idle_kb = vm_kb(pid, "VmRSS")
    for name, (_, status, says) in BOMBS.items():
        data = bombs[name]
        assert len(data) < 200_000, (name, len(data))              # small uploads, huge declared audio
        t0 = time.time()
        got, body = upload(cli_server.url, name, data)
        assert (got, body["detail"].startswith(f"{name}: {says}")) == (status, True), (name, body)
        assert time.time() - t0 < 5 and one_line(body)
    # allowed but heavy: 59 s at 384 kHz in 8 channels (~180 M samples decoded) streams through
    heavy = encoded(59, 384_000, "FLAC", channels=8)
    t0 = time.time()
    got, body = upload(cli_server.url, "59s-384khz-8ch.flac", heavy)
    assert got == 200 and body["segments"][-1]["end_s"] == pytest.approx(59, abs=0.01), body
    assert time.time() - t0 < 60
    peak_mb = (vm_kb(pid, "VmHWM") - idle_kb) / 1024
    assert peak_mb < RSS_BOUND_MB, f"peak RSS {peak_mb:.0f} MB over idle"


def test_empty_file_says_so_in_the_server_and_in_camser_predict(cli_server, tiny_model_folder, tmp_path, capsys):
    got, body = upload(cli_server.url, "empty.wav", b"")
    assert got == 400 and body["detail"] == "empty.wav: empty upload (0 bytes)"
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert main(["predict", str(tiny_model_folder.model_dir), str(empty), "--device", "cpu"]) == 2
    assert f"camser: {empty}: unreadable audio (empty file, 0 bytes)\n" in capsys.readouterr().err


# ---------------------------------------------------------------------- bodies that never finish

def test_a_lying_or_stalled_body_is_answered_within_the_body_timeout(cli_server):
    # 10^12 bytes declared, 1 KB sent: over the size limit (413), answered once the body stalls
    status, body, took = raw_post(cli_server.port, 10 ** 12, [b"\0" * 1024])
    assert status == 413 and "upload too large" in body["detail"] and took < BODY_TIMEOUT_S + 3
    # 100 KB declared (within the limit), 1 KB sent: 408 after the body timeout
    status, body, took = raw_post(cli_server.port, 100_000, [b"\0" * 1024])
    assert status == 408 and took < BODY_TIMEOUT_S + 3, (body, took)
    assert body["detail"].startswith(f"request body incomplete: nothing received for {BODY_TIMEOUT_S:g} s (")
    assert body["detail"].endswith(" bytes received)")
    assert request(f"{cli_server.url}/healthz")[0] == 200


def test_a_trickling_body_gets_408_at_the_request_time_limit(live_server, recognizer):
    """Slow loris: a byte every 0.3 s never trips the pause limit; the request limit ends it.
    (0.3 s, not a divisor of the 2 s limit: a byte sent just as the server answers and closes
    would reset the connection before the answer is read.)"""
    s = live_server(create_app(recognizer, request_timeout_s=2.0, body_timeout_s=1.0))
    port = int(s.url.rsplit(":", 1)[1])
    status, body, took = raw_post(port, 100_000, [b"\0"] * 100, pause_s=0.3)
    assert status == 408 and 1.8 < took < 4, (body, took)
    assert body["detail"].startswith("request body incomplete: not complete within the request time limit (2 s)")


# ---------------------------------------------------------------------- the request time limit

def test_a_prediction_past_the_time_limit_gets_504_and_is_stopped(live_server, recognizer, tone):
    """The model thread is freed: the overrunning call is interrupted, waiting ones are dropped,
    and the next request is answered at once."""
    ticks = []

    class Stuck:
        labels, cfg, metadata, backend, sample_rate = (recognizer.labels, recognizer.cfg, recognizer.metadata,
                                                       recognizer.backend, recognizer.sample_rate)

        def predict(self, source):
            if Path(source).suffix == ".flac":
                for _ in range(600):                          # 30 s unless stopped
                    ticks.append(time.time())
                    time.sleep(0.05)
            return recognizer.predict(source)

    s = live_server(create_app(Stuck(), request_timeout_s=2.0))
    flac = io.BytesIO()
    sf.write(flac, sf.read(tone)[0], 16000, format="FLAC")
    t0 = time.time()
    with ThreadPoolExecutor(3) as pool:
        stuck = list(pool.map(lambda i: upload(s.url, f"stuck{i}.flac", flac.getvalue()), range(3)))
    assert [code for code, _ in stuck] == [504] * 3 and time.time() - t0 < 5, stuck
    assert stuck[0][1]["detail"].endswith("not finished within the request time limit (2 s); "
                                          "retry later or send shorter audio")
    time.sleep(0.3)                                           # a stop lands within a tick (0.05 s)
    ran = len(ticks)
    assert ran < 2 * 2.0 / 0.05                               # queued calls dropped, the running one stopped
    t1 = time.time()
    status, body = upload(s.url, "tone.wav", tone.read_bytes())
    assert status == 200 and time.time() - t1 < 2.0, body     # the model thread is free at once
    assert len(ticks) == ran                                  # and nothing stuck ran on


# ---------------------------------------------------------------------- fields

def test_missing_or_renamed_fields_get_one_line_422(cli_server, tone):
    hint = "file: missing (send the audio as the multipart/form-data field 'file')"
    for field in ("audio", "File", "upload"):
        status, body = upload(cli_server.url, "tone.wav", tone.read_bytes(), field=field)
        assert (status, body) == (422, {"detail": hint}), field
    status, body = request(f"{cli_server.url}/v1/predict", data=b'{"file": "tone.wav"}',
                           headers={"Content-Type": "application/json"}, method="POST")
    assert (status, body) == (422, {"detail": hint})


# ---------------------------------------------------------------------- all at once

def test_fifty_concurrent_requests_good_and_bad(cli_server, bombs, tone):
    """Every answer is in time, 2xx/4xx with a one-line detail; the good uploads all succeed;
    memory stays bounded."""
    kinds = {   # name → (bytes, field, expected status)
        "good.wav": (tone.read_bytes(), "file", 200),
        "1hz.wav": (bombs["1hz.wav"], "file", 422),
        "30min.flac": (bombs["30min.flac"], "file", 413),
        "big.wav": (b"\1" * (3 << 19), "file", 413),                 # 1.5 MB > 1 MB
        "notes.wav": (b"not audio " * 100, "file", 415),
        "empty.wav": (b"", "file", 400),
        "renamed.wav": (tone.read_bytes(), "audio", 422),
    }
    plan = [name for _ in range(8) for name in kinds][:50]
    plan = ["good.wav"] * (50 - len(plan)) + plan
    idle_kb = vm_kb(cli_server.proc.pid, "VmRSS")

    def one(name):
        data, field, _ = kinds[name]
        t0 = time.time()
        status, body = upload(cli_server.url, name, data, field=field)
        return name, status, body, time.time() - t0

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, plan))
    assert len(results) == 50 and plan.count("good.wav") >= 8
    for name, status, body, took in results:
        assert status == kinds[name][2], (name, status, body)
        assert took < 60, (name, took)
        assert status == 200 and body["path"] == name or one_line(body), (name, body)
    assert (vm_kb(cli_server.proc.pid, "VmRSS") - idle_kb) / 1024 < RSS_BOUND_MB
    assert request(f"{cli_server.url}/healthz")[0] == 200
