"""TensorBoard on the shared smoke sweep: the event files read back with TensorBoard's own event
reader, and a real ``qlora-sweep tensorboard`` server queried over its HTTP data API."""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import pytest
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams import metadata as hp_metadata

from .conftest import SMOKE_LR, cli, served_url, start_cli, stop

CURVES = {"train/loss", "train/learning_rate", "train/grad_norm", "train/tokens_per_second",
          "eval/loss", "eval/perplexity", "eval/mean_token_accuracy", "system/peak_memory_mb",
          "best/eval/loss"}


def _trial_ids(sweep) -> set[str]:
    return {t["trial_id"] for t in json.loads((sweep / "status.json").read_text())["trials"]}


def test_event_files_have_every_trial_its_curves_and_hparams(smoke_sweep):
    sweep = smoke_sweep.path
    mux = EventMultiplexer()
    mux.AddRunsFromDirectory(str(sweep))
    mux.Reload()
    runs = mux.Runs()
    trials = _trial_ids(sweep)
    assert set(runs) == {f"trial_{t}" for t in trials} | {"baseline"}

    # The base model: eval curves as flat lines from step 0 to max_steps.
    base = json.loads((sweep / "baseline.json").read_text())
    assert set(runs["baseline"]["scalars"]) == {"eval/loss", "eval/perplexity",
                                                "eval/mean_token_accuracy"}
    flat = mux.Scalars("baseline", "eval/loss")
    assert [e.step for e in flat] == [0, 30]
    assert all(e.value == pytest.approx(base["eval_loss"]) for e in flat)

    # The experiment: every searched setting with its domain, the best and final metric.
    content = mux.PluginRunToTagToContent(hp_metadata.PLUGIN_NAME)
    experiment = hp_metadata.parse_experiment_plugin_data(
        content["baseline"][hp_metadata.EXPERIMENT_TAG])
    infos = {h.name: h for h in experiment.hparam_infos}
    assert set(infos) == {"training.learning_rate", "lora.target_modules", "lora.alpha"}
    assert infos["training.learning_rate"].display_name == "lr"
    assert set(infos["lora.target_modules"].domain_discrete.values[i].string_value
               for i in range(2)) == {"attention", "q_proj+v_proj"}
    assert {m.name.tag for m in experiment.metric_infos} == {"best/eval/loss", "eval/loss"}

    for trial in trials:
        run = f"trial_{trial}"
        start = hp_metadata.parse_session_start_info_plugin_data(
            content[run][hp_metadata.SESSION_START_INFO_TAG])
        hparams = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
                   for k, v in start.hparams.items()}
        assert isinstance(hparams["training.learning_rate"], float)
        assert hparams["lora.target_modules"] in ("attention", "q_proj+v_proj")
        assert hparams["lora.alpha"] == 32.0  # alpha_ratio 2 x r 16: a number, not dropped
        assert hp_metadata.SESSION_END_INFO_TAG in content[run]  # every trial has ended

    # A trial that trained to the end: every curve, at the training step, so trials line up.
    status = json.loads((sweep / "status.json").read_text())
    good = f"trial_{next(t['trial_id'] for t in status['trials'] if t['status'] == 'completed')}"
    assert set(runs[good]["scalars"]) == CURVES
    assert [e.step for e in mux.Scalars(good, "eval/loss")] == [10, 20, 30]
    best = mux.Scalars(good, "best/eval/loss")
    assert best[-1].value == min(e.value for e in mux.Scalars(good, "eval/loss"))
    assert all(e.value > 0 for e in mux.Scalars(good, "system/peak_memory_mb"))


def _get(url: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


def test_tensorboard_server_serves_runs_scalars_and_hparams(smoke_sweep):
    sweep = smoke_sweep.path
    trials = _trial_ids(sweep)
    board = start_cli("tensorboard", str(sweep), "--port", "0")
    try:
        deadline = time.monotonic() + 120
        url = served_url(board, deadline)
        runs = []
        while set(runs) != {f"trial_{t}" for t in trials} | {"baseline"}:
            assert time.monotonic() < deadline, runs
            time.sleep(1)
            runs = _get(url + "data/runs")

        tags = _get(url + "data/plugin/scalars/tags")
        assert set(tags["baseline"]) == {"eval/loss", "eval/perplexity",
                                         "eval/mean_token_accuracy"}
        assert all({"eval/loss", "train/loss"} <= set(tags[f"trial_{t}"]) for t in trials
                   if f"trial_{t}" in tags)

        experiment = _get(url + "data/plugin/hparams/experiment", {"experimentName": ""})
        names = {h["name"]: h for h in experiment["hparamInfos"]}
        assert names["lora.alpha"]["type"] == "DATA_TYPE_FLOAT64"
        assert names["lora.target_modules"]["type"] == "DATA_TYPE_STRING"
        groups = _get(url + "data/plugin/hparams/session_groups", {
            "experimentName": "", "startIndex": 0, "sliceSize": 100,
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                "STATUS_RUNNING"]})["sessionGroups"]
        assert {g["sessions"][0]["name"] for g in groups} == {f"trial_{t}" for t in trials}
        lrs = {g["hparams"]["training.learning_rate"] for g in groups}
        assert lrs == set(SMOKE_LR.values())
        good = next(g for g in groups if g["hparams"]["training.learning_rate"] == SMOKE_LR["good"])
        assert good["hparams"]["lora.target_modules"] == "q_proj+v_proj"
        metrics = {m["name"]["tag"]: m["value"] for m in good["metricValues"]}
        assert metrics["best/eval/loss"] <= metrics["eval/loss"]
    finally:
        stop(board)


def test_tensorboard_bad_input(smoke_sweep, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = cli("tensorboard", str(smoke_sweep.path), "--port", str(port), timeout=120)
    not_a_sweep = cli("tensorboard", str(tmp_path), timeout=120)
    for proc, words in ((busy, f"--port {port}: already in use"),
                        (not_a_sweep, "not a sweep dir")):
        assert proc.returncode != 0
        assert words in proc.stderr and "Fix:" in proc.stderr
        assert "Traceback" not in proc.stderr
