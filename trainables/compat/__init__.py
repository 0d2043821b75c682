"""The private APIs of other libraries that qlora-sweep still touches, one module per library,
each use with the version it was checked on; ``tests/test_compat.py`` fails when one changes.

- Ray: :mod:`trainables.compat.ray_private`
- datasets: :mod:`trainables.compat.datasets_private`
- TRL: :mod:`trainables.deferred_metrics` (a ``SFTTrainer`` subclass; it falls back to TRL's
  own loss where TRL lacks the state it relies on)
- Optuna: none (the public storage API)
"""
