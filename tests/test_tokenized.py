"""tokenized/: the sweep's tokenized data, written by run and read back by resume."""

from __future__ import annotations

import pyarrow as pa
import pytest

from orchestrator.sweepdir.names import TOKENIZED
from orchestrator.sweepdir.tokenized import Unreadable, load, save

pytestmark = pytest.mark.fast


def _prepared(seed: int = 7) -> dict:
    table = pa.table({"input_ids": [[1, 2, 3], [4, 5]], "completion_mask": [[0, 1, 1], [0, 1]]})
    return {"train": table, "eval": table.slice(0, 1), "seed": seed}


def test_what_run_saves_resume_reads_back(tmp_path):
    assert load(tmp_path) is None  # a sweep without the folder: its trials tokenize
    save(tmp_path, _prepared(seed=7))
    back = load(tmp_path)
    assert back["seed"] == 7
    assert back["train"].column("input_ids").to_pylist() == [[1, 2, 3], [4, 5]]
    assert back["eval"].num_rows == 1


def test_a_damaged_file_is_named_not_a_traceback(tmp_path):
    save(tmp_path, _prepared())
    damaged = tmp_path / TOKENIZED / "eval.parquet"
    damaged.write_bytes(damaged.read_bytes()[:20])  # cut short
    with pytest.raises(Unreadable, match="eval.parquet"):
        load(tmp_path)


def test_resume_tokenizes_again_when_the_saved_data_is_damaged(tmp_path, caplog):
    from orchestrator.run.resume import saved_data

    caplog.set_level("INFO", logger="orchestrator")
    save(tmp_path, _prepared(seed=3))
    assert saved_data(tmp_path)["seed"] == 3 and caplog.messages == []
    (tmp_path / TOKENIZED / "train.parquet").write_bytes(b"not parquet")
    assert saved_data(tmp_path) is None
    lines = caplog.messages
    assert len(lines) == 1 and "train.parquet" in lines[0] and "tokenizing it again" in lines[0]
