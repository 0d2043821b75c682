"""Training data: load a local file or a Hub dataset, recognise its format, shape it for TRL.

Three row formats are recognised, and each is turned into TRL's prompt/completion form so the
loss covers only the completion:

* ``prompt_completion``: ``prompt`` and ``completion`` columns (text, or lists of messages);
* ``messages``: a ``messages`` list of ``{role, content}``; the last (assistant) message is the
  completion and the ones before it the prompt, rendered with the tokenizer's chat template;
* ``instruction``: ``instruction``, optional ``input``, ``output`` (Alpaca style).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

FORMAT_COLUMNS = {
    "prompt_completion": ("prompt", "completion"),
    "messages": ("messages",),
    "instruction": ("instruction", "output"),
}
# The columns ``data.columns`` may map a file's own column names to.
MAPPABLE_COLUMNS = ("prompt", "completion", "messages", "instruction", "input", "output")
_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


class DataError(ValueError):
    """The data cannot be used as configured; the message says why and what was expected."""


def _quiet_datasets() -> None:
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    # The JSON builder logs pyarrow's "Failed to load JSON ... in row N" (0-based) before it
    # raises; load_source reports the bad line itself, numbered as an editor shows it.
    logging.getLogger("datasets.packaged_modules.json.json").setLevel(logging.CRITICAL)


def _has_no_rows(path: Path) -> bool:
    """Empty text files (a CSV with only its header) make ``datasets`` fail obscurely."""
    if path.suffix.lower() not in (".jsonl", ".csv", ".json"):
        return path.stat().st_size == 0
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    if path.suffix.lower() == ".csv":
        return len(lines) <= 1
    if path.suffix.lower() == ".json":
        return not lines or "".join(lines).strip() in ("[]", "{}")
    return not lines


def _first_bad_json_line(path: Path) -> str | None:
    """``line N: <why>`` for the first line of a JSON-lines file that is not a JSON object."""
    import json

    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as err:
                return f"line {number} is not valid JSON ({err.msg} at column {err.colno})"
            if not isinstance(row, dict):
                return f"line {number} is a JSON {type(row).__name__}, not an object"
    return None


def _check_text(ds, columns: tuple[str, ...], where: str) -> None:
    """Every row has a non-empty string in each of ``columns``; else the first bad row, named."""
    for column in columns:
        for idx, value in enumerate(ds[column]):
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{where}, row {idx + 1}: '{column}' is {value!r}, not a "
                                f"non-empty text. Fix: fill it in or remove the row.")


def load_source(source: dict[str, Any]):
    """Load one data source: ``{"path", "split", "subset", "local"}`` -> ``datasets.Dataset``."""
    from datasets import load_dataset

    _quiet_datasets()
    path = source["path"]
    if source.get("local", True):
        p = Path(path)
        if not p.is_file():
            raise DataError(f"the data file {path} does not exist. Fix: check the path (relative "
                            f"paths are read from the config file's folder).")
        if _has_no_rows(p):
            raise DataError(f"the data file {path} has no rows. Fix: point it at a file with at "
                            f"least one example.")
        builder = _BUILDERS.get(p.suffix.lower())
        if builder is None:
            raise DataError(f"the data file {path} has suffix '{p.suffix}'; supported: "
                            f"{', '.join(_BUILDERS)}. Fix: convert it to JSONL, one JSON object per "
                            f"line.")
        try:
            ds = load_dataset(builder, data_files=str(p), split="train")
        except Exception as err:  # datasets raises many types for a malformed file
            bad = _first_bad_json_line(p) if p.suffix.lower() == ".jsonl" else None
            if bad:
                raise DataError(f"the data file {path} could not be read: {bad}. Fix: repair "
                                f"or remove that line (one JSON object per line).") from None
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DataError(f"the data file {path} could not be read as {builder}: {first}. Fix: "
                            f"check that it is a valid {p.suffix.lstrip('.')} file.") from None
    else:
        try:
            ds = load_dataset(path, source.get("subset"), split=source.get("split", "train"))
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DataError(f"the Hub dataset {path!r} could not be loaded: {first}. Fix: check "
                            f"the id, your network and token, or use a local file.") from None
    if len(ds) == 0:
        raise DataError(f"the data source {path} has no rows. Fix: point it at a file with "
                        f"at least one example.")
    return rename_columns(ds, source.get("columns") or {}, where=path)


def rename_columns(ds, columns: dict[str, str], *, where: str):
    """The file's own columns under the format's names (``data.columns``: format -> file).

    Raises:
        DataError: a mapped column is not in the file, or its format name is already taken.
    """
    if not columns:
        return ds
    import difflib

    missing = []
    for fmt, own in columns.items():
        if own not in ds.column_names:
            close = difflib.get_close_matches(own, ds.column_names, n=1)
            missing.append(f"{fmt}: {own}" + (f" (did you mean {close[0]}?)" if close else ""))
    if missing:
        raise DataError(f"{where} has columns {', '.join(ds.column_names)}, but data.columns "
                        f"maps {', '.join(missing)}, which it does not have. Fix: name the "
                        f"file's columns on the right of data.columns.")
    taken = [fmt for fmt, own in columns.items()
             if fmt != own and fmt in ds.column_names and fmt not in columns.values()]
    if taken:
        ds = ds.remove_columns(taken)  # the mapped column replaces the file's own of that name
    return ds.rename_columns({own: fmt for fmt, own in columns.items() if own != fmt})


def detect_format(columns: list[str], requested: str = "auto", *, where: str = "data") -> str:
    """The row format of a dataset with these columns.

    Raises:
        DataError: no recognised column set (the message names what was found and expected).
    """
    expected = "; ".join(f"{fmt}: {', '.join(cols)}" for fmt, cols in FORMAT_COLUMNS.items())
    if requested != "auto":
        missing = [c for c in FORMAT_COLUMNS[requested] if c not in columns]
        if missing:
            raise DataError(f"{where} has columns {', '.join(columns)} but format "
                            f"'{requested}' needs {', '.join(FORMAT_COLUMNS[requested])} "
                            f"(missing: {', '.join(missing)}). Fix: rename the columns or set "
                            f"data.format to match.")
        return requested
    for fmt, cols in FORMAT_COLUMNS.items():
        if all(c in columns for c in cols):
            return fmt
    raise DataError(f"{where} has columns {', '.join(columns) or '(none)'}, which match no "
                    f"known format. Expected one of: {expected}. Fix: rename the columns or "
                    f"convert the file.")


def instruction_prompt(instruction: str, input_text: str | None = None) -> str:
    """The Alpaca-style prompt used for instruction data (also by ``generate``)."""
    if input_text:
        return (f"### Instruction:\n{instruction}\n\n### Input:\n{input_text}\n\n"
                f"### Response:\n")
    return f"### Instruction:\n{instruction}\n\n### Response:\n"


def check_rows(ds, fmt: str, *, where: str = "data") -> None:
    """Every row can be trained on; else a DataError naming the first bad row (1-based)."""
    if fmt == "prompt_completion":
        _check_text(ds, ("prompt", "completion"), where)
    elif fmt == "instruction":
        _check_text(ds, ("instruction", "output"), where)
    elif fmt == "messages":
        for idx, msgs in enumerate(ds["messages"]):
            if not isinstance(msgs, list) or not msgs:
                raise DataError(f"{where}, row {idx + 1}: 'messages' is {msgs!r}, not a list "
                                f"of messages. Fix: fill it in or remove the row.")
            if msgs[-1].get("role") != "assistant":
                raise DataError(f"{where}, row {idx + 1}: the last message must be the "
                                f"assistant's reply (the completion to learn), got role "
                                f"{msgs[-1].get('role')!r}.")


def to_prompt_completion(ds, fmt: str):
    """Reshape rows into TRL's prompt/completion columns (completion-only loss)."""
    check_rows(ds, fmt)
    if fmt == "prompt_completion":
        extra = [c for c in ds.column_names if c not in ("prompt", "completion")]
        return ds.remove_columns(extra)
    if fmt == "instruction":
        return ds.map(
            lambda row: {"prompt": instruction_prompt(row["instruction"], row.get("input")),
                         "completion": row["output"]},
            remove_columns=ds.column_names,
        )

    def split_messages(row):
        msgs = row["messages"]
        return {"prompt": msgs[:-1], "completion": msgs[-1:]}

    return ds.map(split_messages, remove_columns=ds.column_names)


def prompt_lengths(ds, fmt: str, tokenizer, *, rows: int = 1000) -> list[int]:
    """Tokens in the prompt of each of the first ``rows`` rows, as the trainer renders it (a
    chat template for messages)."""
    sample = to_prompt_completion(ds.select(range(min(rows, len(ds)))), fmt)
    if fmt == "messages":
        return [len(tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True,
                                                  return_dict=True)["input_ids"])
                for p in list(sample["prompt"])]
    return [len(ids) for ids in tokenizer(list(sample["prompt"]))["input_ids"]]


def local_rows(data: dict[str, Any]) -> dict[str, Any]:
    """The rows of the local data files (``train``/``eval``) as Arrow tables, read here (the
    driver) for workers that may not see its paths; Hub datasets load where they are used."""
    return {split: to_table(load_source(data[split])) for split in ("train", "eval")
            if data.get(split) and data[split].get("local", True)}


def load_splits(data: dict[str, Any], *, seed: int, rows: dict[str, Any] | None = None):
    """Train and eval datasets in prompt/completion form, plus the detected format.

    ``data`` is the resolved data settings: ``train``/``eval`` sources, ``format``,
    ``eval_fraction``, ``max_eval_samples``; ``rows``: the sources' rows as the driver read
    them (:func:`local_rows`), used instead of their paths.
    """
    rows = rows or {}
    _quiet_datasets()  # also where no file is loaded: tokenizing the shipped rows

    def source(split: str):
        return from_table(rows[split]) if split in rows else load_source(data[split])

    train = source("train")
    fmt = detect_format(train.column_names, data.get("format", "auto"), where=data["train"]["path"])
    if data.get("eval"):
        evalset = source("eval")
        detect_format(evalset.column_names, fmt, where=data["eval"]["path"])
    else:
        if len(train) < 2:
            raise DataError(f"{data['train']['path']} has {len(train)} row; holding out an eval "
                            f"split needs at least 2. Fix: add rows or give data.eval.")
        parts = train.train_test_split(test_size=data.get("eval_fraction", 0.1), seed=seed)
        train, evalset = parts["train"], parts["test"]
    if data.get("max_eval_samples"):
        evalset = evalset.select(range(min(len(evalset), data["max_eval_samples"])))
    return to_prompt_completion(train, fmt), to_prompt_completion(evalset, fmt), fmt


def to_table(ds):
    """A dataset's rows as one in-memory Arrow table: what Ray ships to every trial (a dataset
    read from files would pickle as paths that other nodes do not have)."""
    return ds.flatten_indices().data.table.combine_chunks()


def from_table(table):
    """The dataset back from :func:`to_table`."""
    from datasets import Dataset
    from datasets.table import InMemoryTable

    return Dataset(InMemoryTable(table))
