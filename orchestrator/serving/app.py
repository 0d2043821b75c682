"""The Ray Serve deployment of ``qlora-sweep serve``: a FastAPI app with OpenAI's routes, in
front of one :class:`~.engine.Engine`. Concurrent requests, whatever adapter they name, are
gathered by ``@serve.batch`` and answered by one ``generate``; the model runs in a thread so
the next batch gathers meanwhile.

Every error, the app's own and FastAPI's (an unknown route, a wrong method), is answered in
OpenAI's shape (:class:`~.protocol.APIError`); a bad request never stops the server.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the routes' annotations
# (``request: Request``) at run time, and Serve's ingress wrapper hides the module's names.
import asyncio
import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from .engine import Engine, Job, Served
from .protocol import (DEFAULT_MAX_TOKENS, APIError, ChatRequest, CompletionRequest,
                       chat_response, completion_response, models_response, parse)

log = logging.getLogger(__name__)

MAX_BATCH_SIZE = 8
BATCH_WAIT_S = 0.05  # how long the first request of a batch waits for others
# Response headers that say how a request was batched: how many requests its batch held and
# which models they asked for (tests/test_serve.py checks mixed-adapter batches with them).
BATCH_HEADER = "x-qlora-sweep-batch"
BATCH_MODELS_HEADER = "x-qlora-sweep-batch-models"

app = FastAPI(title="qlora-sweep serve", docs_url=None, redoc_url=None, openapi_url=None)


def _error(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


@app.exception_handler(APIError)
async def _api_error(_request: Request, err: APIError) -> JSONResponse:
    return _error(err)


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
    message = (f"no route {request.method} {request.url.path}: this server answers GET "
               f"/v1/models, POST /v1/completions and POST /v1/chat/completions"
               if err.status_code in (404, 405) else str(err.detail))
    return _error(APIError(err.status_code, message, code=code))


@app.exception_handler(RequestValidationError)
async def _invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
    return _error(APIError(400, f"invalid request: {err.errors()[0].get('msg')}"))


@serve.deployment(max_ongoing_requests=64)
@serve.ingress(app)
class OpenAIServer:
    """The served models on one base model, behind OpenAI's routes."""

    def __init__(self, model_settings: dict[str, Any], served: "list[Served]", *,
                 max_tokens_limit: int):
        from trainables.compat.ray_private import serve_grpc_on_loopback

        serve_grpc_on_loopback()  # a local Ray listens on loopback only, this replica too
        self.engine = Engine(model_settings, served)
        self.served = served
        self.limit = max_tokens_limit
        self.created = int(time.time())
        self.root = model_settings["name_or_path"]

    @app.get("/v1/models")
    async def models(self) -> JSONResponse:
        base = next(s.name for s in self.served if s.adapter_dir is None)
        return JSONResponse(models_response(
            [{"id": s.name, "root": self.root if s.adapter_dir is None else s.source,
              "parent": None if s.adapter_dir is None else base} for s in self.served],
            self.created))

    @app.post("/v1/completions")
    async def completions(self, request: Request) -> JSONResponse:
        req = parse(CompletionRequest, await request.body())
        self._check_model(req.model)
        prompt = req.text()
        ids = self.engine.completion_ids(req.model, prompt)
        return await self._answer(req, ids, "prompt", completion_response)

    @app.post("/v1/chat/completions")
    async def chat(self, request: Request) -> JSONResponse:
        req = parse(ChatRequest, await request.body())
        self._check_model(req.model)
        try:
            ids = self.engine.chat_ids(req.conversation())
        except ValueError as err:
            raise APIError(400, str(err), param="messages") from None
        return await self._answer(req, ids, "messages", chat_response)

    def _check_model(self, model: str) -> None:
        if model not in self.engine.served:
            names = ", ".join(s.name for s in self.served)
            raise APIError(404, f"the model '{model}' is not served here; served: {names}",
                           param="model", code="model_not_found")

    async def _answer(self, req, ids: "list[int]", what: str, respond) -> JSONResponse:
        if req.max_tokens is not None and req.max_tokens > self.limit:
            raise APIError(400, f"max_tokens is {req.max_tokens}, above this server's limit "
                                f"of {self.limit} (serve --max-tokens-limit)",
                           param="max_tokens", code="invalid_value")
        room = self.engine.context - len(ids)
        max_tokens = req.max_tokens or min(DEFAULT_MAX_TOKENS, self.limit, max(room, 1))
        if len(ids) + max_tokens > self.engine.context:
            raise APIError(400, f"This model's maximum context length is "
                                f"{self.engine.context} tokens. However, you requested "
                                f"{len(ids) + max_tokens} tokens ({len(ids)} in the {what}, "
                                f"{max_tokens} in the completion). Please reduce the length "
                                f"of the {what} or completion.",
                           param=what, code="context_length_exceeded")
        job = Job(model=req.model, prompt_ids=ids, max_tokens=max_tokens,
                  temperature=req.temperature or 0.0, top_p=req.top_p or 1.0, stop=req.stops())
        answer = await self._batch(job)
        response = JSONResponse(respond(req.model, answer.text, answer.finish_reason, len(ids),
                                        answer.completion_tokens))
        response.headers[BATCH_HEADER] = str(len(answer.batch))
        response.headers[BATCH_MODELS_HEADER] = ",".join(answer.batch)
        return response

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def _batch(self, jobs: "list[Job]"):
        return await asyncio.to_thread(self.engine.generate, jobs)
