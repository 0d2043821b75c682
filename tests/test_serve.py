"""``qlora-sweep serve``: the shared smoke sweep's winner and a runner-up's checkpoint on one
builtin base model, behind the OpenAI-compatible API, asked with the real ``openai`` client:
both endpoints, a mixed batch with no answer crossing to the wrong model (each equal to
``generate``'s), every bad request answered in OpenAI's shape while the server keeps serving,
loopback only, a clean stop by SIGTERM; and sources refused before anything starts."""

from __future__ import annotations

import ipaddress
import json
import shutil
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .conftest import EXAMPLES, cli, stop
from .serving import generate_answers, start_server

LIMIT = 24  # serve --max-tokens-limit
MAX_TOKENS = 12  # as the demo's evaluation.max_new_tokens: a whole "Price is $..." answer
PROMPTS = [json.loads(line)["prompt"]
           for line in (EXAMPLES / "data/pricing_eval.jsonl").read_text().splitlines()[:3]]


def _runner_up_checkpoint(sweep: Path) -> Path:
    """The best checkpoint of the best trial with other settings than the winner's (Optuna may
    repeat the winner's settings, and the same settings train the same adapter)."""
    best = json.loads((sweep / "best.json").read_text())
    status = json.loads((sweep / "status.json").read_text())
    others = [t for t in status["trials"]
              if t["config"] != best["config"] and t["best_value"] is not None]
    sign = 1 if status.get("mode", "min") == "min" else -1
    for trial in sorted(others, key=lambda t: sign * t["best_value"]):
        found = sorted((sweep / f"trial_{trial['trial_id']}").glob(
            "checkpoint_*/adapter_config.json"))
        if found:
            return found[-1].parent
    raise AssertionError(f"the smoke sweep has no runner-up with a checkpoint: {status}")


@pytest.fixture(scope="module")
def served(smoke_sweep):
    """The server (champion: the sweep dir, i.e. its winner; challenger: a runner-up's
    checkpoint folder), and generate's answers of both adapters to PROMPTS."""
    challenger = _runner_up_checkpoint(smoke_sweep.path)
    server = start_server(str(smoke_sweep.path), "--name", "champion",
                          "--adapter", f"challenger={challenger}",
                          "--max-tokens-limit", str(LIMIT))
    try:
        expected = {"champion": generate_answers(cli, str(smoke_sweep.path), PROMPTS,
                                                 MAX_TOKENS),
                    "challenger": generate_answers(cli, str(challenger), PROMPTS, MAX_TOKENS)}
        yield server, expected
    finally:
        stop(server.proc)


@pytest.fixture
def client(served):
    from openai import OpenAI

    return OpenAI(base_url=served[0].url, api_key="unused", max_retries=0, timeout=300)


def test_models_are_listed(served, client):
    server, _ = served
    assert server.models == ["base", "champion", "challenger"]
    models = client.models.list().data
    assert [m.id for m in models] == server.models
    assert all(m.object == "model" for m in models)


def test_a_mixed_batch_answers_each_request_with_its_own_model(served, client):
    """Nine concurrent requests, three per model: batched together (the server says which
    models each batch held), each adapter's answer equal to ``generate``'s, each model's the
    same as when it is asked alone, and the three models answering differently."""
    _, expected = served

    def ask(model_prompt):
        model, prompt = model_prompt
        raw = client.completions.with_raw_response.create(
            model=model, prompt=prompt, max_tokens=MAX_TOKENS)
        return raw.parse(), raw.headers["x-qlora-sweep-batch-models"].split(",")

    asks = [(model, prompt) for prompt in PROMPTS for model in ("base", "champion", "challenger")]
    with ThreadPoolExecutor(len(asks)) as pool:
        results = list(pool.map(ask, asks))
    answers = {ask: result.choices[0].text for ask, (result, _) in zip(asks, results)}
    batches = [models for _, models in results]
    assert max(len(set(models)) for models in batches) == 3, batches  # one batch, all models
    for (model, prompt), (result, _) in zip(asks, results):
        assert result.model == model and result.object == "text_completion"
        assert result.choices[0].finish_reason in ("stop", "length")
        assert result.usage.completion_tokens <= MAX_TOKENS
    for model in ("champion", "challenger"):
        assert [answers[(model, p)] for p in PROMPTS] == expected[model], model
    for model in ("base", "champion", "challenger"):  # alone: a batch of one
        alone = client.completions.create(model=model, prompt=PROMPTS[0], max_tokens=MAX_TOKENS)
        assert alone.choices[0].text == answers[(model, PROMPTS[0])], model
    by_model = {m: tuple(answers[(m, p)] for p in PROMPTS) for m in ("base", "champion",
                                                                      "challenger")}
    assert len(set(by_model.values())) == 3, by_model  # so a crossed answer would show


def test_chat_goes_through_the_chat_template(served, client):
    from transformers import AutoTokenizer

    messages = [{"role": "user", "content": PROMPTS[0].strip()}]
    reply = client.chat.completions.create(model="champion", messages=messages,
                                           max_tokens=MAX_TOKENS, stop=["\n\n"])
    assert reply.object == "chat.completion" and reply.model == "champion"
    assert reply.choices[0].message.role == "assistant"
    assert isinstance(reply.choices[0].message.content, str)
    assert reply.choices[0].finish_reason in ("stop", "length")
    from trainables import tiny_llama

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama.ensure_built())
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|assistant|>\n")  # the builtin model's template
    assert reply.usage.prompt_tokens == len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _raw(url: str, body: bytes, method: str = "POST") -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body if method == "POST" else None, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _openai_error(call) -> tuple[int, dict]:
    import openai

    with pytest.raises(openai.APIStatusError) as caught:
        call()
    return caught.value.status_code, caught.value.body


def test_bad_requests_are_openai_errors_and_the_server_keeps_serving(served, client):
    server, _ = served
    long_prompt = "What is the price of " + "a steel cabinet and " * 200
    cases = {
        "malformed JSON": lambda: _raw(f"{server.url}/completions", b'{"model": "base",'),
        "unknown model": lambda: _openai_error(lambda: client.completions.create(
            model="gpt-4", prompt=PROMPTS[0])),
        "empty prompt": lambda: _openai_error(lambda: client.completions.create(
            model="champion", prompt="")),
        "empty messages": lambda: _openai_error(lambda: client.chat.completions.create(
            model="champion", messages=[])),
        "max_tokens above the limit": lambda: _openai_error(lambda: client.completions.create(
            model="base", prompt=PROMPTS[0], max_tokens=LIMIT + 1)),
        "prompt longer than the context": lambda: _openai_error(
            lambda: client.completions.create(model="base", prompt=long_prompt, max_tokens=4)),
        "streaming": lambda: _openai_error(lambda: client.completions.create(
            model="base", prompt=PROMPTS[0], stream=True)),
        "unknown route": lambda: _raw(f"{server.url}/embeddings", b"{}"),
    }
    expected = {  # status, param, code
        "malformed JSON": (400, None, None), "unknown model": (404, "model", "model_not_found"),
        "empty prompt": (400, "prompt", None), "empty messages": (400, "messages", None),
        "max_tokens above the limit": (400, "max_tokens", "invalid_value"),
        "prompt longer than the context": (400, "prompt", "context_length_exceeded"),
        "streaming": (400, "stream", None), "unknown route": (404, None, "not_found"),
    }
    for name, call in cases.items():
        status, body = call()
        error = body.get("error", body)  # the openai client hands over the "error" object
        assert set(error) == {"message", "type", "param", "code"}, (name, body)
        assert (status, error["param"], error["code"]) == expected[name], (name, body)
        assert error["type"] == "invalid_request_error" and error["message"], (name, body)
        if name == "unknown model":
            assert "base, champion, challenger" in error["message"], error
        if name == "max_tokens above the limit":
            assert str(LIMIT) in error["message"], error
    assert client.completions.create(model="base", prompt=PROMPTS[0], max_tokens=2).choices
    assert server.proc.poll() is None


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    if getattr(address, "ipv4_mapped", None) is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def test_it_listens_on_loopback_only(served):
    server, _ = served
    seen = {(ip, port): name for ip, port, name in server.listening}
    assert any(port == server.port for _, port in seen), seen  # the HTTP proxy was seen
    assert {"gcs_server", "raylet"} <= set(seen.values()), seen
    exposed = {f"{ip}:{port}": name for (ip, port), name in seen.items() if not _loopback(ip)}
    assert not exposed, f"listening beyond loopback: {exposed}"


def test_sigterm_stops_serve_and_its_ray(served):
    """Last in the module: the server stops on SIGTERM with exit code 0, no traceback, and the
    Ray it started (GCS, raylet, the Serve actors) is gone."""
    import psutil

    server, _ = served
    server.proc.terminate()
    out, err = server.proc.communicate(timeout=120)
    assert server.proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err and "SIGTERM received" not in err, err[-3000:]
    assert out == "", out  # its one line was read at start; nothing after it
    def alive(proc) -> bool:
        try:
            return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    assert server.children  # Ray's processes were seen, so the check is not vacuous
    deadline = time.monotonic() + 60
    while any(alive(p) for p in server.children):
        assert time.monotonic() < deadline, [p for p in server.children if alive(p)]
        time.sleep(0.5)


def test_sources_that_are_not_adapters_are_refused_at_start(smoke_sweep, tmp_path):
    pickled = tmp_path / "pickled"
    shutil.copytree(_runner_up_checkpoint(smoke_sweep.path), pickled)
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    for args, words in (
            ([str(tmp_path)], "not an adapter"),
            ([str(pickled)], "stored only as adapter_model.bin, a pickle"),
            ([str(smoke_sweep.path), "--adapter", "champion"], "expected NAME=SOURCE"),
            ([str(smoke_sweep.path), "--adapter", f"base={pickled}"], "used twice"),
            ([str(smoke_sweep.path), "--max-tokens-limit", "0"], "--max-tokens-limit 0")):
        proc = cli("serve", *args, "--port", "0", timeout=120)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert words in proc.stderr and "Fix:" in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stdout == ""
