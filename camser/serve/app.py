"""``camser serve``: an HTTP service over an :class:`~camser.inference.recognizer.EmotionRecognizer`.

Endpoints (the OpenAPI schema is at ``/openapi.json``, interactive docs at ``/docs``):

* ``POST /v1/predict`` — multipart upload, form field ``file`` (any format libsndfile reads:
  wav, flac, ogg/opus, mp3, …) → the JSON of :meth:`Prediction.to_dict
  <camser.inference.results.Prediction.to_dict>` with ``path`` = the uploaded file name.
  Errors carry a one-line ``detail``: 400 empty upload, 408 body not received in time, 413
  upload over the size limit or audio longer than ``max_audio_s``, 415 not audio libsndfile
  can read, 422 audio it can't use (sample rate outside 1–384 kHz, silent, too short, …) or
  a request without the ``file`` field, 503 too many requests waiting, 504 not finished
  within the request time limit.
* ``GET /healthz`` — ``{"status": "ok", ...}`` once the model is loaded.
* ``GET /v1/model`` — labels, inputs, backend, the feature/model configuration, the SSL
  encoder reference, versions, the limits.
* ``GET /`` — a small page (``camser/serve/static/``) to upload a file or record from the
  microphone, with the probabilities as bars and the segment timeline as a chart.

Every request's work is bounded, whatever the upload declares:

* bytes: ``Content-Length`` first, then a running count while the body streams in, so an
  oversized upload is refused without being kept in memory or spooled to disk;
* time to send the body: nothing received for ``body_timeout_s``, or a body still incomplete
  at the request's time limit (a lying ``Content-Length``, a slow-loris client) → 408;
* decoded audio: the upload is saved to a temporary file and its header read before anything
  is decoded; more than ``max_audio_s`` seconds → 413, a sample rate outside
  :data:`~camser.audio.MIN_SAMPLE_RATE`–:data:`~camser.audio.MAX_SAMPLE_RATE` → 422. The file
  is then predicted as ``camser predict`` does it: long recordings stream window by window,
  so memory stays flat whatever the duration, sample rate or channel count;
* model time: the model runs in a single worker thread (an executor of one: the recognizer is
  not thread-safe, and one model call at a time uses the CPU best), so the event loop never
  blocks; at most ``max_queue`` predictions wait or run (then 503), and a request not
  answered ``request_timeout_s`` after it arrived gets 504: a prediction still waiting is
  dropped, a running one is stopped (see :class:`_ModelWorker`).
"""
from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import re
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Optional

from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ..audio import AudioTooLong, audio_info
from ..errors import AudioError, CamserError

STATIC = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD_BYTES = 25 * 1024 * 1024
DEFAULT_MAX_AUDIO_S = 600.0
DEFAULT_REQUEST_TIMEOUT_S = 120.0     # 600 s of audio takes ~90 s on a CPU with wav2vec2-base
DEFAULT_BODY_TIMEOUT_S = 10.0
_MULTIPART_SLACK = 64 * 1024          # boundaries and part headers around the file in the body
_CHUNK = 1 << 20


# ---------------------------------------------------------------------- response models

class SegmentOut(BaseModel):
    start_s: float = Field(description="start of the segment, seconds from the start of the recording")
    end_s: float = Field(description="end of the segment (the last one stops at the end of the audio)")
    label: str
    probabilities: dict[str, float]


class PredictionOut(BaseModel):
    path: Optional[str] = Field(description="the uploaded file's name")
    label: str = Field(description="the utterance's emotion: the argmax of probabilities")
    probabilities: dict[str, float] = Field(description="label → probability (sums to 1): the softmax "
                                                        "of the mean of the segments' log-probabilities")
    segments: list[SegmentOut] = Field(description="the per-segment timeline")


class ErrorOut(BaseModel):
    detail: str


class HealthOut(BaseModel):
    status: str
    backend: str
    labels: list[str]


class ModelOut(BaseModel):
    labels: list[str]
    inputs: list[str] = Field(description="what the backend reads: mfcc, spec, ssl or audio")
    backend: str = Field(description="torch or onnx")
    onnx: Optional[dict] = Field(None, description="the ONNX file and how it was exported (onnx backend)")
    sample_rate: int
    segment_s: float
    encoder: Optional[dict] = Field(description="the SSL encoder reference (hub id or folder) and its output shape")
    configuration: dict = Field(description="the model section and the audio, segments and features settings")
    version: str = Field(description="the camser version serving")
    model_versions: dict = Field(description="package versions the model was trained with")
    created: Optional[str] = None
    training: Optional[dict] = None
    normalization: Optional[dict] = Field(None, description="features.normalize: the mode, and whose "
                                                            "statistics standardise the inputs (the "
                                                            "training speakers', or serve --adapt-from's)")
    test_time_copies: list[str] = Field(description="copies of each recording's audio it is also scored on, "
                                        "their probabilities averaged (features.augment.test_time): each "
                                        "costs another pass of feature extraction")
    max_upload_bytes: int
    max_audio_s: float = Field(description="the longest accepted recording (seconds, from its header)")
    request_timeout_s: float = Field(description="time limit of a request, from its arrival to its answer")


_ERRORS = {
    400: {"model": ErrorOut, "description": "empty upload"},
    408: {"model": ErrorOut, "description": "the body did not arrive in time"},
    413: {"model": ErrorOut, "description": "upload larger than the limit, or audio longer than the limit"},
    415: {"model": ErrorOut, "description": "not an audio format the server can read"},
    422: {"model": ErrorOut, "description": "audio that can't be used (sample rate, silent, too short, …), "
                                            "or no `file` field"},
    503: {"model": ErrorOut, "description": "too many requests waiting for the model"},
    504: {"model": ErrorOut, "description": "not finished within the request time limit"},
}
log = logging.getLogger("camser.serve")


# ---------------------------------------------------------------------- the app

def create_app(recognizer, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, max_queue: int = 64,
               max_audio_s: float = DEFAULT_MAX_AUDIO_S, request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
               body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S) -> FastAPI:
    """The FastAPI application serving ``recognizer`` (an ``EmotionRecognizer``, torch or ONNX
    backend). ``max_upload_bytes``: the largest accepted file; ``max_queue``: predictions
    waiting or running at once before new ones get 503; ``max_audio_s``: the longest accepted
    recording; ``request_timeout_s``: time from a request's arrival to its answer (body,
    wait and model); ``body_timeout_s``: the longest pause while the body is sent."""
    from .. import __version__

    for name, value in (("max_upload_bytes", max_upload_bytes), ("max_audio_s", max_audio_s),
                        ("request_timeout_s", request_timeout_s), ("body_timeout_s", body_timeout_s)):
        if not value > 0:
            raise CamserError(f"{name}: must be positive, got {value}")
    worker = _ModelWorker()
    state = {"pending": 0}
    backend_name = "onnx" if type(recognizer.backend).__name__ == "OnnxBackend" else "torch"
    limits = {"max_upload_bytes": max_upload_bytes, "max_audio_s": max_audio_s,
              "request_timeout_s": request_timeout_s}

    @asynccontextmanager
    async def lifespan(app):
        yield
        worker.shutdown()

    app = FastAPI(title="camser", version=__version__, lifespan=lifespan,
                  description="Speech emotion recognition (CA-MSER) on uploaded audio.")
    app.state.recognizer = recognizer
    app.state.executor = worker.executor
    app.add_middleware(BodyGuard, max_bytes=max_upload_bytes + _MULTIPART_SLACK,
                       message=_too_large(max_upload_bytes), idle_s=body_timeout_s, total_s=request_timeout_s)
    app.add_exception_handler(RequestValidationError, _one_line_validation_error)

    @app.post("/v1/predict", response_model=PredictionOut, responses=_ERRORS,
              summary="Emotion of an uploaded recording")
    async def predict(request: Request,
                      file: UploadFile = File(..., description="an audio file: wav, flac, ogg/opus, mp3, …")):
        name = file.filename or "upload"
        deadline = request.scope.get(_DEADLINE) or asyncio.get_running_loop().time() + request_timeout_s
        path, size = await run_in_threadpool(_save_upload, file.file, max_upload_bytes, name)
        try:
            if not size:
                raise HTTPException(400, f"{name}: empty upload (0 bytes)")
            try:     # the header, before anything is decoded: duration and sample rate
                await run_in_threadpool(audio_info, path, max_audio_s)
            except AudioError as e:
                raise _audio_refusal(name, e) from None
            if state["pending"] >= max_queue:
                raise HTTPException(503, f"busy: {state['pending']} requests are waiting for the model; retry later")
            state["pending"] += 1
            try:
                pred = await worker.run(recognizer.predict, str(path),
                                        timeout=deadline - asyncio.get_running_loop().time())
            except asyncio.TimeoutError:
                raise HTTPException(504, f"{name}: not finished within the request time limit "
                                         f"({request_timeout_s:g} s); retry later or send shorter audio") from None
            except AudioError as e:
                raise _audio_refusal(name, e) from None
            except CamserError as e:
                raise HTTPException(422, str(e).replace(str(path), name)) from None
            except Exception as e:      # a bug or the runtime failing: logged, answered in one line
                log.exception("prediction of %s failed", name)
                raise HTTPException(500, f"{name}: prediction failed ({type(e).__name__})") from None
            finally:
                state["pending"] -= 1
        finally:
            path.unlink(missing_ok=True)
        out = pred.to_dict()
        out["path"] = name
        return out

    @app.get("/healthz", response_model=HealthOut, summary="Liveness: the model is loaded")
    async def healthz():
        return {"status": "ok", "backend": backend_name, "labels": list(recognizer.labels)}

    @app.get("/v1/model", response_model=ModelOut, summary="The model being served")
    async def model_info():
        return _model_info(recognizer, backend_name, __version__) | limits

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _save_upload(src, limit: int, name: str) -> tuple[Path, int]:
    """Copy the upload into a temporary file (a path is what the header check and the streaming
    reader need) → (path, bytes), refusing (413) as soon as there are more than ``limit``."""
    suffix = Path(name).suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,8}", Path(name).suffix) else ""
    fd, path = tempfile.mkstemp(prefix="camser-upload-", suffix=suffix)
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, _too_large(limit))
                out.write(chunk)
    except BaseException:
        os.unlink(path)
        raise
    return Path(path), size


def _audio_refusal(name: str, e: AudioError) -> HTTPException:
    """The answer to unusable audio: 413 longer than allowed, 415 not readable, 422 the rest
    (sample rate out of range, silent, too short, …)."""
    reason = _clean_reason(e.reason)
    status = 413 if isinstance(e, AudioTooLong) else 415 if reason.startswith("unreadable audio") else 422
    return HTTPException(status, f"{name}: {reason}")


async def _one_line_validation_error(request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI answers a missing field with a list of error objects; the API promises one line."""
    parts = []
    for error in exc.errors():
        field = ".".join(str(x) for x in error.get("loc", ()) if x != "body") or "body"
        if error.get("type") == "missing":
            parts.append(f"{field}: missing (send the audio as the multipart/form-data field 'file')")
        else:
            parts.append(f"{field}: {error.get('msg', 'invalid')}")
    return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)


class _Overrun(BaseException):
    """Raised inside the model thread to stop a prediction past its time limit (a
    BaseException, so no ``except Exception`` on the way swallows it)."""


class _ModelWorker:
    """The one thread the model runs in, with a time limit per call.

    Python cannot kill a thread, so a call that overruns is stopped by raising
    :class:`_Overrun` in it (``PyThreadState_SetAsyncExc``): it takes effect at the next
    Python bytecode the thread runs, i.e. between two torch ops or two reads of the audio,
    not inside one long C call. Without it, one request over the limit would keep the model
    busy (and every request queued behind it waiting) for as long as it takes. A call still
    waiting for the thread when its time is up is dropped without starting."""

    def __init__(self):
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="camser-model")

    async def run(self, fn, *args, timeout: float):
        """``fn(*args)`` in the model thread; asyncio.TimeoutError after ``timeout`` seconds."""
        job = _Job(fn, args)
        future = asyncio.get_running_loop().run_in_executor(self.executor, job)
        try:
            return await asyncio.wait_for(future, max(timeout, 0.0))   # cancels the job if not started
        except asyncio.TimeoutError:
            job.stop()
            raise

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class _Job:
    """One call in the model thread that :meth:`stop` can interrupt. The stop is only ever
    raised while ``fn`` runs, and one that races the end is caught or cleared here, so it
    never reaches the executor's own loop (which would lose its only thread)."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args
        self.lock = threading.Lock()
        self.thread: int | None = None
        self.stopped = False

    def __call__(self):
        try:
            with self.lock:
                if self.stopped:
                    return None
                self.thread = threading.get_ident()
            try:
                return self.fn(*self.args)
            finally:
                with self.lock:
                    self.thread = None
                _set_async_exc(threading.get_ident(), None)    # a stop raised just as fn returned
        except _Overrun:
            return None

    def stop(self) -> None:
        with self.lock:
            if not self.stopped and self.thread is not None:
                _set_async_exc(self.thread, _Overrun)
            self.stopped = True


def _set_async_exc(thread: int, exc) -> None:
    """Raise ``exc`` (a class) in ``thread`` at its next bytecode; ``None`` clears a pending one."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread),
                                               ctypes.py_object(exc) if exc is not None else None)


def _too_large(limit: int) -> str:
    return f"upload too large: the limit is {limit / 1024 / 1024:g} MB ({limit} bytes)"


def _clean_reason(reason: str) -> str:
    """libsndfile names the file it failed to open (the temporary copy, or an in-memory
    ``<_io.BytesIO object at 0x…>``); the detail already names the upload."""
    return re.sub(r"Error opening (<[^>]*>|'[^']*'): ?", "", reason).strip()


def _model_info(recognizer, backend_name: str, version: str) -> dict:
    from ..inference.model_dir import feature_section

    meta = recognizer.metadata
    cfg = recognizer.cfg
    onnx = None
    if backend_name == "onnx":
        b = recognizer.backend
        onnx = {"file": b.path.name, "source": b.source, "quantize": b.quantize,
                "exporter": b.metadata.get("camser.exporter")}
    return {
        "labels": list(recognizer.labels), "inputs": list(recognizer.backend.inputs), "backend": backend_name,
        "onnx": onnx, "sample_rate": recognizer.sample_rate, "segment_s": cfg.segments.length_s,
        "encoder": meta.get("encoder"),
        "configuration": {"model": dict(cfg.model), **feature_section(cfg)},
        "version": version, "model_versions": meta.get("versions") or {}, "created": meta.get("created"),
        "training": meta.get("training"), "test_time_copies": recognizer.test_time_copies,
        # features.normalize: whose statistics standardise the inputs (serve --adapt-from)
        "normalization": None if recognizer.normalization is None else {
            "mode": meta.get("normalize"), "statistics": recognizer.normalization.source},
    }


_DEADLINE = "camser.deadline"          # scope key: event-loop time by which the request must be answered


class BodyGuard:
    """ASGI middleware bounding what receiving a request body may cost: its size and its time.

    Size: a body over ``max_bytes`` gets 413 with ``message``. A ``Content-Length`` over the
    limit is refused before the application sees the request; otherwise bytes are counted as
    they stream in, and once over the limit the application's read fails and whatever it would
    have answered is replaced by the 413. Nothing of the excess is kept: the rest of the body is
    read and discarded (up to ``drain_bytes``, while it keeps coming) before answering, because a
    server that answers and closes while the client is still sending makes the client see a
    connection reset instead of the 413. A client that asked ``Expect: 100-continue`` (curl, for
    large bodies) has sent nothing yet and is answered at once.

    Time: the request must be answered ``total_s`` after it arrived (the deadline is left in
    the scope under ``_DEADLINE`` for the application), and the body may pause at most
    ``idle_s``. A body that stalls (a ``Content-Length`` larger than what is sent) or trickles
    in past the deadline (slow loris) gets 408, the same way as the 413."""

    def __init__(self, app, max_bytes: int, message: str, idle_s: float, total_s: float,
                 drain_bytes: int | None = None):
        self.app, self.max_bytes, self.message = app, max_bytes, message
        self.idle_s, self.total_s = idle_s, total_s
        self.drain_bytes = drain_bytes if drain_bytes is not None else max(4 * max_bytes, 64 << 20)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        deadline = scope[_DEADLINE] = loop.time() + self.total_s

        async def timed():
            """The next body message, or _Refused(408) when it is late."""
            wait = min(self.idle_s, deadline - loop.time())
            try:
                return await asyncio.wait_for(receive(), max(wait, 0.0))
            except asyncio.TimeoutError:
                why = (f"nothing received for {self.idle_s:g} s" if wait == self.idle_s
                       else f"not complete within the request time limit ({self.total_s:g} s)")
                raise _Refused(408, f"request body incomplete: {why} ({seen} bytes received)") from None

        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        seen = 0
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            if headers.get(b"expect", b"").lower() != b"100-continue":
                await self._drain(timed)
            return await _answer(send, 413, self.message)
        refusal: _Refused | None = None
        done = started = False

        async def guarded_receive():
            nonlocal seen, refusal, done
            if done:                      # the body is in: later reads (disconnect) wait untimed
                return await receive()
            try:
                message = await timed()
            except _Refused as r:
                refusal = r
                raise
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                done = not message.get("more_body")
                if seen > self.max_bytes:
                    refusal = _Refused(413, self.message)
                    if not done:
                        await self._drain(timed)
                    raise refusal
            return message

        async def guarded_send(message):
            nonlocal started
            if refusal is not None:       # the app's own answer to the failed read: replace it
                if not started and message["type"] == "http.response.start":
                    started = True
                    await _answer(send, refusal.status, refusal.detail)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except _Refused as r:
            if not started:
                await _answer(send, r.status, r.detail)

    async def _drain(self, timed) -> None:
        """Read and drop the rest of the body (at most ``drain_bytes``, until it stalls)."""
        dropped = 0
        while dropped <= self.drain_bytes:
            try:
                message = await timed()
            except _Refused:
                return
            if message["type"] != "http.request":
                return
            dropped += len(message.get("body", b""))
            if not message.get("more_body"):
                return


class _Refused(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


async def _answer(send, status: int, detail: str) -> None:
    """A JSON ``{"detail": …}`` answer that closes the connection (the body may be unread)."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------- running it

def serve(recognizer, host: str = "127.0.0.1", port: int = 8000,
          max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, log_level: str = "info",
          max_audio_s: float = DEFAULT_MAX_AUDIO_S, request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
          body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S) -> None:
    """Run the service with uvicorn until interrupted."""
    import uvicorn

    app = create_app(recognizer, max_upload_bytes=max_upload_bytes, max_audio_s=max_audio_s,
                     request_timeout_s=request_timeout_s, body_timeout_s=body_timeout_s)
    # an idle kept-alive connection is closed after the body timeout too
    uvicorn.run(app, host=host, port=port, log_level=log_level,
                timeout_keep_alive=max(1, int(body_timeout_s)))


__all__ = ["create_app", "serve", "PredictionOut", "ModelOut", "HealthOut", "ErrorOut", "SegmentOut"]
