"""The OpenAI-compatible API's requests, responses and errors, in one place (as vLLM keeps its
``protocol.py``): what ``qlora-sweep serve`` accepts and answers on ``/v1/models``,
``/v1/completions`` and ``/v1/chat/completions``.

Only what the server does is accepted: one choice per request (``n`` 1), no streaming, no
log-probabilities. Other fields OpenAI's clients may send (``user``, ``presence_penalty``, ...)
are ignored, as other OpenAI-compatible servers do.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# When a request names no max_tokens: as ``qlora-sweep generate`` (its --max-new-tokens).
DEFAULT_MAX_TOKENS = 64


class APIError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = (
            status, message, param, code, type)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(description="a served model: the base model or an adapter's name")
    max_tokens: int | None = Field(None, ge=1, description="the most tokens to generate")
    temperature: float | None = Field(None, ge=0.0, le=2.0,
                                      description="0 or absent: greedy; above 0: sampling")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="nucleus sampling")
    stop: str | list[str] | None = Field(None, description="up to 4 strings that end the answer")
    n: int | None = Field(None, ge=1, le=1, description="one choice per request")
    stream: bool | None = Field(None, description="not supported: leave it out or false")
    logprobs: Any = Field(None, description="not supported")

    def stops(self) -> list[str]:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stop) > 4 or any(not s for s in stop):
            raise APIError(400, "'stop' takes up to 4 non-empty strings", param="stop")
        return stop


class CompletionRequest(_Sampling):
    """``POST /v1/completions``: one prompt (a string, or a list holding one string)."""

    prompt: str | list[str] = Field(description="the prompt, as a user would write it; the "
                                                "adapter's training prompt format is applied")
    echo: bool | None = Field(None, description="not supported")

    def text(self) -> str:
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        if len(prompts) != 1:
            raise APIError(400, f"'prompt' must be one string (got a list of {len(prompts)}); "
                                f"send one request per prompt: concurrent requests are "
                                f"batched together", param="prompt")
        if not prompts[0].strip():
            raise APIError(400, "'prompt' is empty", param="prompt")
        if self.echo:
            raise APIError(400, "'echo' is not supported", param="echo")
        return prompts[0]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str | list[dict[str, Any]]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        parts = [p.get("text") for p in self.content]
        if any(p.get("type") != "text" or not isinstance(t, str)
               for p, t in zip(self.content, parts)):
            raise APIError(400, "only text content parts are supported", param="messages")
        return "".join(parts)


class ChatRequest(_Sampling):
    """``POST /v1/chat/completions``: the conversation goes through the model's chat template."""

    messages: list[ChatMessage] = Field(description="the conversation so far")

    def conversation(self) -> list[dict[str, str]]:
        chat = [{"role": m.role, "content": m.text()} for m in self.messages]
        if not chat or not any(m["content"].strip() for m in chat):
            raise APIError(400, "'messages' is empty: give at least one message with content",
                           param="messages")
        return chat


def parse(model: type[BaseModel], body: bytes):
    """The request, validated; malformed JSON and invalid fields are 400s in OpenAI's shape."""
    import json

    try:
        data = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise APIError(400, f"the request body is not valid JSON ({getattr(err, 'msg', err)}); "
                            f"send one JSON object") from None
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        request = model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise APIError(400, f"{param}: {first['msg']}" if param else first["msg"],
                       param=param) from None
    if request.stream:
        raise APIError(400, "streaming is not supported by this server: leave 'stream' out",
                       param="stream")
    if request.logprobs:
        raise APIError(400, "'logprobs' is not supported", param="logprobs")
    return request


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_response(model: str, text: str, finish_reason: str, prompt_tokens: int,
                        completion_tokens: int) -> dict[str, Any]:
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None,
                         "finish_reason": finish_reason}],
            "usage": _usage(prompt_tokens, completion_tokens)}


def chat_response(model: str, text: str, finish_reason: str, prompt_tokens: int,
                  completion_tokens: int) -> dict[str, Any]:
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": finish_reason}],
            "usage": _usage(prompt_tokens, completion_tokens)}


def models_response(models: list[dict[str, str]], created: int) -> dict[str, Any]:
    """``GET /v1/models``: each served name, with what it is (``root``) and, for an adapter,
    the base model it runs on (``parent``)."""
    return {"object": "list",
            "data": [{"id": m["id"], "object": "model", "created": created,
                      "owned_by": "qlora-sweep", "root": m["root"], "parent": m.get("parent")}
                     for m in models]}
