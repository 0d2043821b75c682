"""``search.budget``: parsing and its errors, the sizing of num_trials under ASHA, the search
algorithms that launch no trial once it is spent (and keep their count across a resume), and
one real sweep that the budget stops."""

from __future__ import annotations

import json
import tempfile

import pytest

from orchestrator.config.budget import expected_steps, parse_budget, plan_budget
from orchestrator.config.loading import load_config
from orchestrator.errors import UserError

from .conftest import cli, write_config


def _config(tmp_path, *overrides, **sections):
    """``write_config``'s small config; search.num_trials only where ``search`` gives it."""
    import yaml

    path = write_config(tmp_path / "sweep.yaml", **sections)
    data = yaml.safe_load(path.read_text())
    if "num_trials" not in sections.get("search", {}):
        del data["search"]["num_trials"]
    path.write_text(yaml.safe_dump(data))
    return load_config(path, list(overrides))


@pytest.mark.fast
@pytest.mark.parametrize("value, steps", [(2880, 2880), ("2880 steps", 2880), ("2,880", 2880),
                                          ("1 step", 1), (" 500  Steps ", 500), (100.0, 100)])
def test_a_budget_is_a_number_of_training_steps(value, steps):
    assert parse_budget(value) == steps


@pytest.mark.fast
def test_a_bad_budget_is_refused_with_the_rule_the_value_and_a_fix_beside_other_problems(
        tmp_path):
    with pytest.raises(UserError) as err:
        _config(tmp_path, "search.budget=2h", "training.max_steps=0")
    problems = err.value.problems
    assert len(problems) == 2, problems  # every problem together
    wall = next(p for p in problems if "search.budget" in p)
    assert wall.startswith("command line (search.budget=2h): search.budget = '2h': ")
    assert "wall-time budget is not supported" in wall and "Fix:" in wall
    assert "2880 steps" in wall

    for bad, rule in (("0", "more than 0"), ("-3", "more than 0"), ("lots", "not a number"),
                      ("12.5", "not a number"), ("true", "not a number"),
                      ("'90 epochs'", "not a number")):
        with pytest.raises(UserError) as err:
            _config(tmp_path, f"search.budget={bad}")
        (problem,) = err.value.problems
        assert problem.startswith(f"command line (search.budget={bad}): search.budget = ")
        assert rule in problem and "Fix:" in problem, problem


@pytest.mark.fast
def test_expected_steps_per_trial_follow_ashas_rungs():
    # rungs 60, 120; max_t 240: 60 + 60/2 + 120/4
    assert expected_steps(max_t=240, grace=60, reduction_factor=2) == 120
    # rungs 20, 60, 180; max_t 240, factor 3: 20 + 40/3 + 120/9 + 60/27
    assert expected_steps(max_t=240, grace=20, reduction_factor=3) == pytest.approx(
        20 + 40 / 3 + 120 / 9 + 60 / 27)
    # a last rung at max_t itself is not a stopping rung: 10 + 10/2
    assert expected_steps(max_t=20, grace=10, reduction_factor=2) == 15
    assert expected_steps(max_t=240) == 240  # no scheduler: every trial to max_t
    assert expected_steps(max_t=240, grace=240, reduction_factor=2) == 240  # no rung before it


@pytest.mark.fast
def test_the_budget_sizes_num_trials_when_it_is_not_given(tmp_path):
    # write_config's search section sets num_trials; these leave it out
    asha = {"type": "asha", "grace_period": 60, "reduction_factor": 2}
    training = {"max_steps": 240, "eval_steps": 20}
    cfg, plan = _config(tmp_path, search={"budget": "2880 steps"}, scheduler=asha,
                        training=training)
    assert cfg.search.num_trials == 24 and plan.budget.trials == 24 and plan.budget.sized
    assert cfg.search.budget == 2880
    assert plan.budget.describe() == (
        "budget 2880 steps: ~24 trials of expected 120 steps each under ASHA (rungs 60, 120, "
        "reduction factor 2, max_t 240) (search.num_trials sized to it)")

    cfg, plan = _config(tmp_path, search={"budget": 2880}, scheduler={"type": "none"},
                        training=training)
    assert cfg.search.num_trials == 12
    assert "~12 trials of expected 240 steps each (no early stopping" in plan.budget.describe()

    # fewer steps than one trial: still one trial
    cfg, plan = _config(tmp_path, search={"budget": 50}, scheduler=asha, training=training)
    assert cfg.search.num_trials == 1

    # both given: num_trials caps the trials, the budget the compute
    cfg, plan = _config(tmp_path, search={"budget": 2880, "num_trials": 6}, scheduler=asha,
                        training=training)
    assert cfg.search.num_trials == 6 and not plan.budget.sized
    assert plan.budget.describe().endswith(
        "search.num_trials = 6 caps the trials, the budget the compute")

    # grid: the grid decides the trials; the budget caps its compute
    cfg, plan = _config(tmp_path, search={"budget": 100, "algorithm": "grid"})
    assert "caps the grid's compute" in plan.budget.describe()

    # no budget: num_trials' default, no plan
    cfg, plan = _config(tmp_path, search={})
    assert cfg.search.num_trials == 8 and plan.budget is None and plan_budget(cfg) is None


@pytest.mark.fast
def test_a_sized_config_survives_its_own_sweep_yaml(tmp_path):
    """sweep.yaml records the sized num_trials: loading it again (resume) sizes nothing."""
    import yaml

    cfg, _ = _config(tmp_path, search={"budget": 100})
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    again, plan = load_config(resolved, existing=True)
    assert again.search.num_trials == cfg.search.num_trials and not plan.budget.sized


def _experiment(num_samples: int):
    from ray import tune
    from ray.tune.experiment import Experiment

    def trainable(config):
        pass

    return Experiment("budget", trainable, config={"lr": tune.choice([1e-4, 3e-4, 1e-3])},
                      num_samples=num_samples, storage_path=tempfile.mkdtemp())


def _optuna(tmp_path):
    """Optuna's searcher as a sweep has it, behind Ray's SearchGenerator as Tune runs it."""
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch
    from ray.tune.search.search_generator import SearchGenerator

    from orchestrator.run.budget import with_budget
    from orchestrator.run.tuner import optuna_storage

    searcher = ConcurrencyLimiter(OptunaSearch(storage=optuna_storage(str(tmp_path)),
                                               study_name="s", seed=0), max_concurrent=2)
    alg = SearchGenerator(with_budget(searcher, budget=25))
    exp = _experiment(6)
    alg.set_search_properties("eval_loss", "min", exp.spec["config"])
    alg.add_configurations([exp])
    return alg


def _random(tmp_path):
    from ray.tune.search import BasicVariantGenerator

    from orchestrator.run.budget import with_budget

    alg = with_budget(BasicVariantGenerator(max_concurrent=2, random_state=0), budget=25)
    alg.add_configurations([_experiment(6)])
    return alg


@pytest.mark.parametrize("make", [_optuna, _random], ids=["optuna", "random"])
def test_no_trial_is_launched_once_the_budget_is_spent_and_the_count_survives_a_resume(
        make, tmp_path):
    """Ray's own search algorithms, driven as Tune's controller drives them (next_trial, the
    trials' results, their end), and saved and restored as it saves and restores them."""
    from orchestrator.run.budget import count_of

    alg = make(tmp_path)
    first, second = alg.next_trial(), alg.next_trial()
    assert first and second and alg.next_trial() is None  # two at a time
    alg.on_trial_result(first.trial_id, {"step": 10, "eval_loss": 2.0, "training_iteration": 1})
    alg.on_trial_complete(first.trial_id, {"step": 20, "eval_loss": 1.5, "training_iteration": 2})  # ASHA's last word
    third = alg.next_trial()  # 20 of 25 spent: one more
    assert third is not None and not alg.is_finished()
    alg.on_trial_result(second.trial_id, {"step": 10, "eval_loss": 1.8,
                                            "training_iteration": 1})
    wrapped = count_of(getattr(alg, "searcher", alg))
    assert wrapped.spent == 30 and wrapped.steps[first.trial_id] == 20
    alg.on_trial_complete(second.trial_id, {"step": 10, "eval_loss": 1.8,
                                              "training_iteration": 1})
    assert alg.next_trial() is None and alg.is_finished()  # spent: no fourth trial
    # the running third trial goes on, and is counted
    alg.on_trial_result(third.trial_id, {"step": 10, "eval_loss": 1.9,
                                           "training_iteration": 1})
    assert wrapped.spent == 40

    saved = tmp_path / "experiment"
    saved.mkdir()
    alg.save_to_dir(str(saved), session_str="s")
    again = make(tmp_path)  # the same sweep dir, as a resume has it
    restored = count_of(getattr(again, "searcher", again))
    restored.merge({third.trial_id: 20, "lost": 5})  # the sweep dir's records, before Ray's
    again.restore_from_dir(str(saved))
    assert restored.steps == {first.trial_id: 20, second.trial_id: 10, third.trial_id: 20,
                              "lost": 5}
    assert again.next_trial() is None and again.is_finished()


def test_the_budget_stops_a_real_sweep(tiny_model_dir, tmp_path, capsys):
    """Optuna + ASHA, one trial at a time, 8 trials planned, a budget of 30 steps (a trial
    trains 10 or 20): trials stop being launched once 30 are spent; the sweep is finished, not
    interrupted, and validate, the run, status and the report say what it plans and spent."""
    from orchestrator.cli import main
    from orchestrator.observe.report import render_html
    from orchestrator.observe.status import render, summary
    from orchestrator.sweepdir.folder import open_sweep

    budget, max_steps = 30, 20
    config = write_config(
        tmp_path / "sweep.yaml", data={"max_eval_samples": 20},
        training={"max_steps": max_steps, "eval_steps": 10},
        search_space={"training.learning_rate": {"loguniform": [1e-4, 3e-3]}},
        search={"num_trials": 8, "budget": f"{budget} steps", "max_concurrent": 1},
        scheduler={"type": "asha", "grace_period": 10, "reduction_factor": 2},
        storage={"path": str(tmp_path / "sweeps"), "name": "budget"})
    assert main(["validate", str(config)]) == 0
    assert ("budget 30 steps: pays for ~2 trials of expected 15 steps each under ASHA (rungs "
            "10, reduction factor 2, max_t 20); search.num_trials = 8 caps the trials"
            in capsys.readouterr().out)

    proc = cli("run", str(config), timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    sweep = tmp_path / "sweeps" / "budget"
    status = json.loads((sweep / "status.json").read_text())
    trials = status["trials"]
    spent = sum(t["steps_run"] for t in trials)
    assert 2 <= len(trials) < 8, trials  # fewer trials than planned, more than one
    assert status["budget"] == {"steps": budget, "spent": spent}
    # overshoot: at most the one running trial's remaining steps
    assert budget <= spent < budget + max_steps
    # the trials before the last one had not spent it: each was launched under budget
    assert sum(t["steps_run"] for t in trials[:-1]) < budget
    assert status["state"] == "finished" and status["planned_trials"] == 8

    line = f"spent {spent} of {budget} steps ({100 * spent / budget:.0f} %)"
    assert "search.budget: spent " in proc.stdout and "no new trials" in proc.stdout
    assert f"budget: {line}" in proc.stdout  # the end-of-run summary
    opened = open_sweep(sweep)
    data = summary(opened)
    assert data["budget"] == {"steps": budget, "spent": spent, "line": line}
    assert f"budget: {line}" in render(opened, data, "table")
    assert line in render_html(opened, data, [], tmp_path, "journal")

    # trials added on resume would never start: refused before anything runs
    capsys.readouterr()
    assert main(["resume", str(sweep), "search.num_trials=12"]) == 2
    assert (f"the sweep's search.budget is spent ({spent} of {budget} steps)"
            in capsys.readouterr().err)
