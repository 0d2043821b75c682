"""``qlora-sweep serve``'s request parsing (orchestrator/serving/protocol.py), without a server:
what is accepted, and each refusal as the OpenAI-shaped error it becomes. The running server is
tested in tests/test_serve.py."""

from __future__ import annotations

import json

import pytest

from orchestrator.serving.protocol import APIError, ChatRequest, CompletionRequest, parse

pytestmark = pytest.mark.fast


def _refused(model, body) -> APIError:
    with pytest.raises(APIError) as caught:
        request = parse(model, body if isinstance(body, bytes) else json.dumps(body).encode())
        if isinstance(request, CompletionRequest):
            request.text()
        else:
            request.conversation()
        request.stops()
    return caught.value


def test_a_completion_and_a_chat_request_are_read():
    req = parse(CompletionRequest, json.dumps({
        "model": "champion", "prompt": ["A steel desk?"], "max_tokens": 8, "stop": "\n",
        "user": "ignored", "presence_penalty": 0}).encode())
    assert (req.text(), req.max_tokens, req.stops(), req.temperature) == (
        "A steel desk?", 8, ["\n"], None)
    chat = parse(ChatRequest, json.dumps({"model": "base", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "A "}, {"type": "text",
                                                                     "text": "desk?"}]}]}).encode())
    assert chat.conversation() == [{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "A desk?"}]


@pytest.mark.parametrize("model, body, param, words", [
    (CompletionRequest, b'{"model": "base",', None, "not valid JSON"),
    (CompletionRequest, b"[1, 2]", None, "JSON object"),
    (CompletionRequest, {"prompt": "x"}, "model", "Field required"),
    (CompletionRequest, {"model": "base", "prompt": "  "}, "prompt", "empty"),
    (CompletionRequest, {"model": "base", "prompt": ["a", "b"]}, "prompt", "one string"),
    (CompletionRequest, {"model": "base", "prompt": "x", "max_tokens": 0}, "max_tokens",
     "greater than or equal to 1"),
    (CompletionRequest, {"model": "base", "prompt": "x", "temperature": 3}, "temperature",
     "less than or equal to 2"),
    (CompletionRequest, {"model": "base", "prompt": "x", "n": 2}, "n", "less than or equal"),
    (CompletionRequest, {"model": "base", "prompt": "x", "stream": True}, "stream",
     "streaming is not supported"),
    (CompletionRequest, {"model": "base", "prompt": "x", "stop": list("abcde")}, "stop",
     "up to 4"),
    (ChatRequest, {"model": "base", "messages": []}, "messages", "empty"),
    (ChatRequest, {"model": "base", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "x"}}]}]}, "messages", "only text"),
    (ChatRequest, {"model": "base", "messages": [{"role": "robot", "content": "x"}]},
     "messages.0.role", "Input should be"),
])
def test_bad_requests_are_400s_in_openais_shape(model, body, param, words):
    err = _refused(model, body)
    assert err.status == 400 and err.param == param and words in err.message, err.body()
    assert set(err.body()["error"]) == {"message", "type", "param", "code"}
    assert err.body()["error"]["type"] == "invalid_request_error"
