"""The sweep's tokenized data, kept in the sweep dir (``tokenized/``).

``run`` tokenizes the data once (in the baseline evaluation) and hands it to every trial; it
also writes it here, so that ``resume`` hands the resumed and added trials exactly the rows
the first trials trained on, without loading the model to tokenize again, even if the source
files changed since.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .names import TOKENIZED

_SEED = b"qlora_sweep.seed"  # the seed that drew the train/eval split (schema metadata)
_SPLITS = ("train", "eval")


def save(sweep_dir: Path, prepared: dict[str, Any]) -> None:
    """Write the tokenized splits (``trainables.trial.prepare_data``'s tables) as Parquet."""
    import pyarrow.parquet as pq

    folder = Path(sweep_dir) / TOKENIZED
    folder.mkdir(exist_ok=True)
    for split in _SPLITS:
        table = prepared[split]
        metadata = {**(table.schema.metadata or {}), _SEED: str(prepared["seed"]).encode()}
        pq.write_table(table.replace_schema_metadata(metadata), folder / f"{split}.parquet")


class Unreadable(ValueError):
    """``tokenized/`` is there but cannot be read back (cut short, or edited)."""


def load(sweep_dir: Path) -> dict[str, Any] | None:
    """The tokenized splits as :func:`save` wrote them; None when the sweep has none (its
    trials each tokenize, as with a searched seed, or it predates this folder).

    Raises:
        Unreadable: naming the file and what is wrong with it.
    """
    import pyarrow
    import pyarrow.parquet as pq

    folder = Path(sweep_dir) / TOKENIZED
    paths = {split: folder / f"{split}.parquet" for split in _SPLITS}
    if not all(path.is_file() for path in paths.values()):
        return None
    tables = {}
    for split, path in paths.items():
        try:
            tables[split] = pq.read_table(path).combine_chunks()
            seed = int((tables[split].schema.metadata or {})[_SEED])
        except (OSError, pyarrow.ArrowException, KeyError, ValueError) as err:
            raise Unreadable(f"{path}: {type(err).__name__}: {err}") from None
    return {**tables, "seed": seed}
