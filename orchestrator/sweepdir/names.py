"""The names of the files in a sweep dir, in one place (the contract is
docs/reference/sweep-dir.md). Trials' own files (``trial_<id>/``) are named by Ray and the
Trainer."""

SWEEP_YAML = "sweep.yaml"  # the resolved config
SPEC = "spec.json"  # what pre-flight found (the trial spec): promote needs no data paths
STATUS = "status.json"  # the live state, rewritten after trial events
BASELINE = "baseline.json"  # the base model's metrics
LEADERBOARD = "leaderboard.csv"  # one row per trial, written when the sweep ends
BEST = "best.json"  # the winner, written when the sweep ends
JOURNAL = "optuna.journal"  # the Optuna study (or studies, after a space change)
PROMOTIONS = "promotions.jsonl"  # one line per promote attempt
PROMOTED = "promoted"  # the bundle promote writes
REPORT = "report"  # report.html and its PNGs
TOKENIZED = "tokenized"  # the data as TRL tokenized it, for every trial and for resume
BASELINE_RUN = "baseline"  # the base model's TensorBoard run
TUNER_STATE = "tuner.pkl"  # Ray Tune's pickled Tuner (read by resume only)
PROGRESS = "progress.csv"  # in trial_<id>/: every report of the trial (Ray's CSV logger)
