"""`yolo-assets serve`: the HTTP detection service over the registry's live models.

  POST /v1/detect  one picture (multipart field `file`) -> detections; routed to champion or canary by
                   a hash of the X-Request-Key header (random when absent), at the rollout's share
  GET  /healthz    the process is up
  GET  /readyz     the champion (and canary) are loaded and warmed (503 until then)
  GET  /metrics    Prometheus: requests, errors, latency, detections per class, by model version and route

Bad input is a 4xx with a one-line reason (never a 500) and the service stays up.
"""

import os
import time
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from yolo_assets.detector.inference import DEFAULT_MAX_PIXELS, BadImage, decode_picture
from yolo_assets.serving.models import LoadedModel, ModelPool

REQUEST_KEY_HEADER = "x-request-key"
FILE_FIELD = "file"
REFRESH_VARIABLE = "YOLO_ASSETS_SERVE_REFRESH_S"


@dataclass(frozen=True)
class ServeLimits:
    max_bytes: int = 20 * 1024 * 1024
    """Largest request body; more is refused with 413 before it is read to the end."""
    max_pixels: int = DEFAULT_MAX_PIXELS
    conf: float = 0.25


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["model_version", "route"]
        self.requests = Counter("yolo_assets_serve_requests", "Detection requests answered", [*labels, "status"], registry=self.registry)
        self.errors = Counter("yolo_assets_serve_errors", "Detection requests refused or failed", [*labels, "reason"], registry=self.registry)
        self.latency = Histogram(
            "yolo_assets_serve_latency_seconds", "Detection latency, body read to answer", labels, registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.detections = Counter("yolo_assets_serve_detections", "Objects detected", [*labels, "class_name"], registry=self.registry)
        self.canary_percent = Gauge("yolo_assets_serve_canary_percent", "Share of requests routed to the canary", registry=self.registry)


class RequestError(Exception):
    def __init__(self, status: int, reason: str, code: str) -> None:
        super().__init__(reason)
        self.status, self.reason, self.code = status, reason, code


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused with 413 as soon as it exceeds `max_bytes` (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise RequestError(413, f"request body of {declared} bytes is over the {max_bytes}-byte limit", "body_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise RequestError(413, f"request body is over the {max_bytes}-byte limit", "body_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


async def uploaded_picture(request: Request, limits: ServeLimits) -> bytes:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise RequestError(415, f"send the picture as multipart/form-data field {FILE_FIELD!r}, not {content_type or 'no content type'}", "content_type")
    body = await read_body(request, limits.max_bytes)
    # Starlette parses the form from the body it has read, which the size check above has bounded.
    request._body = body
    try:
        form = await request.form(max_files=1, max_fields=10)
    except Exception as error:
        raise RequestError(400, f"malformed multipart body: {str(error)[:200]}", "multipart") from None
    upload = form.get(FILE_FIELD)
    if not isinstance(upload, UploadFile):
        raise RequestError(422, f"no file in multipart field {FILE_FIELD!r} (fields: {sorted(form.keys())})", "field")
    data = await upload.read()
    if not data:
        raise RequestError(400, "image_empty: zero-byte file", "image_empty")
    return data


def decode_and_detect(model: LoadedModel, data: bytes, limits: ServeLimits) -> tuple[Image.Image, list[dict[str, Any]]]:
    """One worker-thread hop per request: decoding and inference both release the event loop."""
    try:
        image = decode_picture(data, limits.max_pixels)
    except BadImage as error:
        raise RequestError(413 if error.too_large else 400, str(error), str(error).split(":")[0]) from None
    return image, model.detect(image, limits.conf)


def create_app(pool: ModelPool, model_name: str, limits: ServeLimits = ServeLimits()) -> FastAPI:
    app = FastAPI(title="yolo-assets detection service", docs_url=None, redoc_url=None)
    metrics = Metrics()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> Response:
        live = pool.live
        if live is None or "champion" not in live.models:
            reason = pool.last_error or ("no champion in the registry yet" if live else "models are loading")
            return JSONResponse({"ready": False, "reason": reason}, status_code=503)
        return JSONResponse({"ready": True, "rollout": {**{route: m.version for route, m in live.models.items()},
                                                          "canary_percent": live.state.canary_percent}})

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        live = pool.live
        metrics.canary_percent.set(live.state.canary_percent if live and "canary" in live.models else 0)
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/detect")
    async def detect_objects(request: Request) -> Response:
        started = time.perf_counter()
        live = pool.live  # this request's models, whatever a refresh swaps in meanwhile
        if live is None or "champion" not in live.models:
            return JSONResponse({"error": "no model is loaded yet"}, status_code=503)
        route, model = live.pick(request.headers.get(REQUEST_KEY_HEADER))
        labels = {"model_version": model.version, "route": route}
        try:
            data = await uploaded_picture(request, limits)
            image, found = await run_in_threadpool(decode_and_detect, model, data, limits)
        except RequestError as error:
            metrics.errors.labels(**labels, reason=error.code).inc()
            metrics.requests.labels(**labels, status=str(error.status)).inc()
            return JSONResponse({"error": error.reason}, status_code=error.status)
        elapsed = time.perf_counter() - started
        metrics.latency.labels(**labels).observe(elapsed)
        metrics.requests.labels(**labels, status="200").inc()
        for item in found:
            metrics.detections.labels(**labels, class_name=item["class_name"]).inc()
        answer: dict[str, Any] = {
            "model": model_name, "version": model.version, "route": route,
            "image": {"width": image.width, "height": image.height},
            "detections": found, "latency_ms": round(elapsed * 1000, 2),
        }
        return JSONResponse(answer)

    return app


def refresh_seconds() -> float:
    return float(os.environ.get(REFRESH_VARIABLE) or 10)
