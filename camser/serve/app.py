"""``camser serve``: an HTTP service over an :class:`~camser.inference.recognizer.EmotionRecognizer`.

Endpoints (the OpenAPI schema is at ``/openapi.json``, interactive docs at ``/docs``):

* ``POST /v1/predict`` — multipart upload, form field ``file`` (any format libsndfile reads:
  wav, flac, ogg/opus, mp3, …) → the JSON of :meth:`Prediction.to_dict
  <camser.inference.results.Prediction.to_dict>` with ``path`` = the uploaded file name.
  Errors carry a one-line ``detail``: 413 upload over the size limit, 400 empty upload,
  415 not audio libsndfile can read, 422 audio it can't use (silent, too short, …) or a
  request without the ``file`` field, 503 too many requests waiting.
* ``GET /healthz`` — ``{"status": "ok", ...}`` once the model is loaded.
* ``GET /v1/model`` — labels, inputs, backend, the feature/model configuration, the SSL
  encoder reference, versions.
* ``GET /`` — a small page (``camser/serve/static/``) to upload a file or record from the
  microphone, with the probabilities as bars and the segment timeline as a chart.

The model runs in a single worker thread (an executor of one: the recognizer is not
thread-safe, and one model call at a time uses the CPU best), so the event loop never blocks:
health checks and uploads go on while a prediction runs, and concurrent predictions queue,
at most ``max_queue`` of them (then 503). Upload size is enforced while the body streams in
(``Content-Length`` first, then a running count), so an oversized upload is refused without
being kept in memory or spooled to disk.
"""
from __future__ import annotations

import asyncio
import io
import json
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Optional

from fastapi import FastAPI, File, HTTPException, UploadFile
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from ..errors import AudioError, CamserError

STATIC = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD_BYTES = 25 * 1024 * 1024
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
    max_upload_bytes: int


_ERRORS = {
    400: {"model": ErrorOut, "description": "empty upload"},
    413: {"model": ErrorOut, "description": "upload larger than the limit"},
    415: {"model": ErrorOut, "description": "not an audio format the server can read"},
    422: {"description": "audio that can't be used (silent, too short, …), or no `file` field"},
    503: {"model": ErrorOut, "description": "too many requests waiting for the model"},
}


# ---------------------------------------------------------------------- the app

def create_app(recognizer, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, max_queue: int = 64) -> FastAPI:
    """The FastAPI application serving ``recognizer`` (an ``EmotionRecognizer``, torch or ONNX
    backend). ``max_upload_bytes``: the largest accepted file; ``max_queue``: predictions
    waiting or running at once before new ones get 503."""
    from .. import __version__

    if max_upload_bytes < 1:
        raise CamserError(f"max_upload_bytes: must be positive, got {max_upload_bytes}")
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="camser-model")
    state = {"pending": 0}
    backend_name = "onnx" if type(recognizer.backend).__name__ == "OnnxBackend" else "torch"

    @asynccontextmanager
    async def lifespan(app):
        yield
        executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="camser", version=__version__, lifespan=lifespan,
                  description="Speech emotion recognition (CA-MSER) on uploaded audio.")
    app.state.recognizer = recognizer
    app.state.executor = executor
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes + _MULTIPART_SLACK,
                       message=_too_large(max_upload_bytes))

    @app.post("/v1/predict", response_model=PredictionOut, responses=_ERRORS,
              summary="Emotion of an uploaded recording")
    async def predict(file: UploadFile = File(..., description="an audio file: wav, flac, ogg/opus, mp3, …")):
        name = file.filename or "upload"
        data = await _read_limited(file, max_upload_bytes)
        if not data:
            raise HTTPException(400, f"{name}: empty upload (0 bytes)")
        if state["pending"] >= max_queue:
            raise HTTPException(503, f"busy: {state['pending']} requests are waiting for the model; retry later")
        state["pending"] += 1
        try:
            pred = await asyncio.get_running_loop().run_in_executor(executor, _predict, recognizer, data, name)
        except AudioError as e:
            reason = _clean_reason(e.reason)
            raise HTTPException(415 if reason.startswith("unreadable audio") else 422, f"{name}: {reason}")
        except CamserError as e:
            raise HTTPException(422, str(e))
        finally:
            state["pending"] -= 1
        out = pred.to_dict()
        out["path"] = name
        return out

    @app.get("/healthz", response_model=HealthOut, summary="Liveness: the model is loaded")
    async def healthz():
        return {"status": "ok", "backend": backend_name, "labels": list(recognizer.labels)}

    @app.get("/v1/model", response_model=ModelOut, summary="The model being served")
    async def model_info():
        return _model_info(recognizer, backend_name, __version__, max_upload_bytes)

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _predict(recognizer, data: bytes, name: str):
    source = io.BytesIO(data)
    source.name = name                   # what error messages call it
    return recognizer.predict(source)


async def _read_limited(file: UploadFile, limit: int) -> bytes:
    """The upload's bytes, refusing (413) as soon as there are more than ``limit``."""
    parts, size = [], 0
    while chunk := await file.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, _too_large(limit))
        parts.append(chunk)
    return b"".join(parts)


def _too_large(limit: int) -> str:
    return f"upload too large: the limit is {limit / 1024 / 1024:g} MB ({limit} bytes)"


def _clean_reason(reason: str) -> str:
    """libsndfile names an in-memory file ``<_io.BytesIO object at 0x…>``; the detail already
    names the upload."""
    return re.sub(r"Error opening <[^>]*>: ?", "", reason).strip()


def _model_info(recognizer, backend_name: str, version: str, max_upload_bytes: int) -> dict:
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
        "training": meta.get("training"), "max_upload_bytes": max_upload_bytes,
    }


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 with a JSON ``detail``.

    A ``Content-Length`` over the limit is refused before the application sees the request;
    otherwise bytes are counted as they stream in, and once over the limit the application's
    read fails and whatever it would have answered is replaced by the 413. Nothing of the
    excess is kept: the rest of the body is read and discarded (up to ``drain_bytes``) before
    answering, because a server that answers and closes while the client is still sending
    makes the client see a connection reset instead of the 413. A client that asked
    ``Expect: 100-continue`` (curl, for large bodies) has sent nothing yet and is answered at once."""

    def __init__(self, app, max_bytes: int, message: str, drain_bytes: int | None = None):
        self.app, self.max_bytes, self.message = app, max_bytes, message
        self.drain_bytes = drain_bytes if drain_bytes is not None else max(4 * max_bytes, 64 << 20)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            if headers.get(b"expect", b"").lower() != b"100-continue":
                await self._drain(receive)
            return await self._refuse(send)
        seen = 0
        over = False
        started = False

        async def counted():
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    over = True
                    if message.get("more_body"):
                        await self._drain(receive)
                    raise _BodyTooLarge()
            return message

        async def guarded(message):
            nonlocal started
            if over:                      # the app's own answer to the failed read: replace it
                if not started and message["type"] == "http.response.start":
                    started = True
                    await self._refuse(send)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except _BodyTooLarge:
            if not started:
                await self._refuse(send)

    async def _drain(self, receive) -> None:
        """Read and drop the rest of the body (at most ``drain_bytes``)."""
        dropped = 0
        while dropped <= self.drain_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return
            dropped += len(message.get("body", b""))
            if not message.get("more_body"):
                return

    async def _refuse(self, send):
        body = json.dumps({"detail": self.message}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass


# ---------------------------------------------------------------------- running it

def serve(recognizer, host: str = "127.0.0.1", port: int = 8000,
          max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, log_level: str = "info") -> None:
    """Run the service with uvicorn until interrupted."""
    import uvicorn

    app = create_app(recognizer, max_upload_bytes=max_upload_bytes)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


__all__ = ["create_app", "serve", "PredictionOut", "ModelOut", "HealthOut", "ErrorOut", "SegmentOut"]
