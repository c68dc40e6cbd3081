"""Importing one Open Bandit Dataset campaign into the logged-data Parquet format.

``python -m recsys_exp.offline.obd CAMPAIGN_DIR OUT_DIR`` reads an OBD campaign folder (e.g.
``.../obd/random/all/`` with ``all.csv`` and ``item_context.csv``; Saito et al., "Open Bandit
Dataset and Pipeline", NeurIPS 2021 D&B) and writes ``OUT_DIR/part-00000.parquet, ...`` plus
``manifest.json`` in the format of :mod:`recsys_exp.offline.schema` (the same writer as
:mod:`recsys_exp.offline.jsonl`).

The input (as shipped in obp 0.5.7's sdist; N items: all 80, men 34, women 46):

* ``<campaign>.csv`` (``all.csv``, ``men.csv``, ``women.csv``; the only other ``*.csv`` of the
  folder when the folder has another name): an optional leading unnamed index column, ``timestamp``
  (optional, not used), ``item_id`` (0..N-1), ``position`` (1, 2, 3), ``click`` (0/1),
  ``propensity_score`` (the logging policy's probability of this item *at this position*),
  ``user_feature_0..3`` (hashed categorical strings), ``user-item_affinity_0..N-1`` (numbers).
* ``item_context.csv``: an optional leading index, ``item_id`` (every one of 0..N-1 once),
  ``item_feature_0`` (a number), ``item_feature_1..3`` (hashed categorical strings). Each log
  folder's own file is used (OBP issues #162/#164: they differ between ``random/`` and ``bts/``).

The mapping (one CSV row = one impression: one item shown at one of 3 positions):

* **One-step sessions, K = 1.** Row r (file order, not re-sorted by ``timestamp``; the OBP sample
  files are already in timestamp order) becomes ``episode_id`` r, ``step`` 0, ``terminated`` true,
  ``truncated`` false, with the slate ``[item_id]``. The sample does not let one rebuild the three
  items shown together, so a row is an (context, position, item, click, propensity) record, not
  a 3-item slate.
* **Outcome.** ``click`` 0 (slot 0 clicked) if clicked else -1; ``reward`` = the click (0/1).
* **Propensity.** ``propensity`` = ``propensity_score`` and ``slot_propensity`` =
  ``[propensity_score]``: mu(item | x, position), exactly what OBP's estimators divide by.
* **User features** (U = sum of the 4 categorical cardinalities + 3): ``[one-hot(user_feature_0) |
  ... | one-hot(user_feature_3) | one-hot(position)]``. Categories are the distinct values seen in
  this file, in sorted (string) order; the position one-hot is [position == 1, 2, 3]. The position
  is part of the context because the logging policy conditioned on it (OBP's estimators weight a
  row by pi(item | x, position) / mu(item | x, position)). OBP's own loader uses
  ``pd.get_dummies(..., drop_first=True)`` and keeps the position apart; here no category is
  dropped, and the position sits in the user vector at ``position_offset`` (metadata).
* **Candidates** (N = the campaign's items, index = ``item_id``) with D = 1 + C1 + C2 + C3 + 1
  features: ``[item_feature_0 | one-hot(item_feature_1) | one-hot(item_feature_2) |
  one-hot(item_feature_3) | user-item_affinity_<item_id> of this row]``. The categories are
  sorted values of ``item_context.csv`` (OBP label-encodes them instead). The affinity differs
  per row, so ``docs`` is stored per row (Parquet compresses the repeated item part well; in
  memory, part files are built ``rows_per_file`` rows at a time).
* **Metadata** (the ``recsys_exp`` key): ``source: "obd"``, ``campaign``, ``behaviour_policy``
  (``random``/``bts`` when the parent folder is so named, else null), ``algo`` (``obd/<policy>``),
  the two file paths, ``user_features`` (per column: name, start, values), ``position_offset``,
  ``num_positions`` (3), ``position_values`` ([1, 2, 3]) and ``doc_features`` (per block: name,
  start, width, values for the categorical ones). A policy or estimator recovers the position of
  row r as ``position_values[argmax(user[r, position_offset:position_offset + num_positions])]``.

Validation is done on both files before anything is written: a missing file or column, an
unknown column, an empty or non-numeric value, ``item_id`` out of range, ``position`` not in
1..3, ``click`` not 0/1, ``propensity_score`` not in (0, 1], a non-finite number stop the import
with one line ``<file>: row <r>, column <name>: <problem> (allowed: ...)``; rows count from 1
after the header (row r is line r + 1 of the file). The CLI prints it as ``recsys_exp: <message>``
and exits with status 2; the output directory is left without new files (part files are written
atomically and removed again if a later step fails; ``manifest.json`` is written last).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from recsys_exp.offline.jsonl import (
    LogImportError,
    _check_out_dir,
    _Layout,
    _undo_on_error,
    _write_parts,
)

ITEM_CONTEXT = "item_context.csv"
POSITIONS = (1, 2, 3)
NUM_USER_FEATURES = 4
NUM_ITEM_CATEGORICALS = 3  # item_feature_1..3
POLICIES = ("random", "bts")
ROWS_PER_FILE = 10_000  # OBD docs are N x D floats per row (80 x 42 in 'all'): ~13 kB a row in memory
_INDEX_NAMES = ("", "Unnamed: 0")


class OBDImportError(LogImportError):
    """An OBD folder that cannot be imported: one line naming file, row and column; ``row`` (0 for
    file-level problems) lets the first bad row of the file be the one reported."""

    def __init__(self, message: str, row: int = 0):
        super().__init__(message)
        self.row = row


def _fail(path: Path, row: int | None, column: str | None, problem: str) -> OBDImportError:
    where = str(path)
    if row is not None:
        where += f": row {row}"
    if column is not None:
        where += f", column {column}" if row is not None else f": column {column}"
    return OBDImportError(f"{where}: {problem}", row or 0)


# --- reading a CSV as strings ---------------------------------------------------------------------
def _read_csv(path: Path, what: str) -> dict[str, np.ndarray]:
    """Every column of ``path`` as a numpy array of str (the leading unnamed index column dropped)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if not path.is_file():
        raise LogImportError(f"{path}: missing ({what})")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError) as e:
        raise LogImportError(f"{path}: cannot read it: {e}") from None
    if not header:
        raise LogImportError(f"{path}: empty (no header line)")
    names = list(header)
    index = names[0] in _INDEX_NAMES
    if index:
        names[0] = "__index__"
    unnamed = [i for i, n in enumerate(names) if n == ""]
    if unnamed:
        raise _fail(path, None, f"{unnamed[0] + 1}", "has no name; only the first column (the index) may be unnamed")
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise _fail(path, None, dup, "appears twice in the header")
    try:
        table = pacsv.read_csv(
            path, read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, encoding="utf8"),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False))
    except (pa.ArrowInvalid, UnicodeDecodeError) as e:
        raise LogImportError(f"{path}: not a well-formed CSV file ({str(e).splitlines()[0]})") from None
    return {n: table.column(n).to_numpy(zero_copy_only=False).astype(str) for n in names if n != "__index__"}


def _check_columns(path: Path, cols: dict[str, np.ndarray], required: list[str], optional: tuple[str, ...] = ()) -> None:
    for name in required:
        if name not in cols:
            raise _fail(path, None, name, f"missing (required columns: {_summary(required)})")
    for name in cols:
        if name not in required and name not in optional:
            allowed = _summary(required + list(optional))
            raise _fail(path, None, name, f"unknown column (allowed: {allowed}, and a leading unnamed index)")


def _summary(names: list[str]) -> str:
    """Column names for messages, runs like user-item_affinity_0..79 shortened."""
    out, i = [], 0
    while i < len(names):
        stem, _, num = names[i].rpartition("_")
        j = i
        while (num.isdigit() and j + 1 < len(names) and names[j + 1] == f"{stem}_{int(num) + j + 1 - i}"):
            j += 1
        out.append(names[i] if j - i < 2 else f"{names[i]}..{names[j].rpartition('_')[2]}")
        i = j + 1
    return ", ".join(out)


# --- checking values --------------------------------------------------------------------------------
def _numbers(path: Path, name: str, values: np.ndarray, allowed: str) -> np.ndarray:
    """``values`` (str) as float64; the first empty, non-numeric or non-finite value is an error."""
    try:
        out = values.astype(np.float64)
    except ValueError:
        out = None
    if out is None or not np.isfinite(out).all():
        for r, v in enumerate(values.tolist(), 1):
            try:
                ok = np.isfinite(float(v))
            except ValueError:
                ok = False
            if not ok:
                what = "empty" if not v.strip() else f"{v!r} is not a finite number"
                raise _fail(path, r, name, f"{what} (allowed: {allowed})")
    return out


def _first_bad(path: Path, name: str, bad: np.ndarray, values: np.ndarray, problem: str, allowed: str) -> None:
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise _fail(path, r + 1, name, f"{str(values[r])!r} {problem} (allowed: {allowed})")


def _integers(path: Path, name: str, values: np.ndarray, lo: int, hi: int, allowed: str) -> np.ndarray:
    x = _numbers(path, name, values, allowed)
    _first_bad(path, name, x != np.round(x), values, "is not an integer", allowed)
    _first_bad(path, name, (x < lo) | (x > hi), values, "is out of range", allowed)
    return x.astype(np.int64)


def _categories(path: Path, name: str, values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(sorted distinct values, code of each row); an empty value is an error."""
    _first_bad(path, name, np.char.str_len(np.char.strip(values)) == 0, values, "is empty",
               "a category (hashed string)")
    cats, codes = np.unique(values, return_inverse=True)
    return cats.tolist(), codes.reshape(-1)


def _one_hot(codes: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((len(codes), width), dtype=np.float32)
    out[np.arange(len(codes)), codes] = 1.0
    return out


# --- the two files --------------------------------------------------------------------------------
def _items(path: Path) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Item features (N, D-1) in item_id order (without the affinity) and their block layout."""
    cols = _read_csv(path, "the campaign's item features")
    names = ["item_id"] + [f"item_feature_{i}" for i in range(NUM_ITEM_CATEGORICALS + 1)]
    _check_columns(path, cols, names)
    n = len(cols["item_id"])
    if n == 0:
        raise LogImportError(f"{path}: no items (only a header)")
    ids = _integers(path, "item_id", cols["item_id"], 0, n - 1, f"integers 0..{n - 1}, each item once")
    seen = np.zeros(n, dtype=np.int64)
    for r, i in enumerate(ids.tolist()):
        if seen[i]:
            raise _fail(path, r + 1, "item_id", f"{i} repeats row {seen[i]} (allowed: integers 0..{n - 1}, "
                                                f"each item once)")
        seen[i] = r + 1
    order = np.argsort(ids)
    blocks = [{"name": "item_feature_0", "start": 0, "width": 1}]
    parts = [_numbers(path, "item_feature_0", cols["item_feature_0"], "a number")[order, None].astype(np.float32)]
    start = 1
    for i in range(1, NUM_ITEM_CATEGORICALS + 1):
        name = f"item_feature_{i}"
        cats, codes = _categories(path, name, cols[name])
        parts.append(_one_hot(codes[order], len(cats)))
        blocks.append({"name": name, "start": start, "width": len(cats), "values": cats})
        start += len(cats)
    return np.concatenate(parts, axis=1), blocks


def _log(path: Path, num_items: int) -> dict[str, Any]:
    """The validated columns of the campaign log."""
    cols = _read_csv(path, "the campaign's log")
    affinity = [f"user-item_affinity_{i}" for i in range(num_items)]
    users = [f"user_feature_{i}" for i in range(NUM_USER_FEATURES)]
    _check_columns(path, cols, ["item_id", "position", "click", "propensity_score", *users, *affinity],
                   optional=("timestamp",))
    n = len(cols["item_id"])
    if n == 0:
        raise LogImportError(f"{path}: no rows (only a header)")
    # Row by row in file order: the first row with any problem is reported (columns in file order).
    checks = {
        "item_id": lambda v: _integers(path, "item_id", v, 0, num_items - 1,
                                       f"integers 0..{num_items - 1}, the items of item_context.csv"),
        "position": lambda v: _integers(path, "position", v, 1, len(POSITIONS), "1, 2, 3"),
        "click": lambda v: _integers(path, "click", v, 0, 1, "0, 1"),
        "propensity_score": lambda v: _propensity(path, v),
        **{name: (lambda v, name=name: _categories(path, name, v)) for name in users},
        **{name: (lambda v, name=name: _numbers(path, name, v, "a finite number")) for name in affinity},
    }
    out: dict[str, Any] = {}
    errors: list[tuple[int, int, OBDImportError]] = []
    for position, name in enumerate(cols):
        if name not in checks:
            continue
        try:
            out[name] = checks[name](cols[name])
        except OBDImportError as e:
            errors.append((e.row, position, e))
    if errors:
        raise min(errors, key=lambda t: (t[0], t[1]))[2]
    out["affinity"] = np.stack([out.pop(name) for name in affinity], axis=1).astype(np.float32)
    return out


def _propensity(path: Path, values: np.ndarray) -> np.ndarray:
    allowed = "a probability in (0, 1]"
    p = _numbers(path, "propensity_score", values, allowed)
    _first_bad(path, "propensity_score", ~((p > 0) & (p <= 1)), values, "is not in (0, 1]", allowed)
    return p


class _Docs:
    """The ``docs`` column (n, N, D) built on slicing: the items' static features plus each row's
    user-item affinities as the last feature (only ``rows_per_file`` rows are ever in memory)."""

    def __init__(self, static: np.ndarray, affinity: np.ndarray):
        self.static, self.affinity = static, affinity

    def __len__(self) -> int:
        return len(self.affinity)

    def __getitem__(self, rows: slice) -> np.ndarray:
        a = self.affinity[rows]
        out = np.empty((len(a), *self.static.shape[:1], self.static.shape[1] + 1), dtype=np.float32)
        out[..., :-1] = self.static
        out[..., -1] = a
        return out


def _log_file(campaign_dir: Path) -> Path:
    own = campaign_dir / f"{campaign_dir.name}.csv"
    if own.is_file():
        return own
    others = sorted(p for p in campaign_dir.glob("*.csv") if p.name != ITEM_CONTEXT)
    if len(others) == 1:
        return others[0]
    found = ", ".join(p.name for p in others) or "none"
    raise LogImportError(f"{own}: missing (an OBD campaign folder holds <campaign>.csv, e.g. all.csv, and "
                         f"{ITEM_CONTEXT}; other CSV files there: {found})")


# --- public API ----------------------------------------------------------------------------------
def read_obd(campaign_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, int]]:
    """Validate a campaign folder; ``(arrays, meta, sizes)`` ready for the Parquet writer."""
    campaign_dir = Path(campaign_dir)
    if campaign_dir.is_dir():
        campaign_dir = campaign_dir.resolve()  # "." names its campaign too
    else:
        raise LogImportError(f"{campaign_dir}: not a directory (an OBD campaign folder such as .../obd/random/all "
                             f"holding all.csv and {ITEM_CONTEXT})")
    log_path, item_path = _log_file(campaign_dir), campaign_dir / ITEM_CONTEXT
    static, doc_blocks = _items(item_path)
    num_items = len(static)
    log = _log(log_path, num_items)
    n = len(log["item_id"])
    user_parts, user_blocks, start = [], [], 0
    for i in range(NUM_USER_FEATURES):
        name = f"user_feature_{i}"
        cats, codes = log[name]
        user_parts.append(_one_hot(codes, len(cats)))
        user_blocks.append({"name": name, "start": start, "width": len(cats), "values": cats})
        start += len(cats)
    position_offset = start
    user_parts.append(_one_hot(log["position"] - 1, len(POSITIONS)))
    doc_blocks.append({"name": "user-item_affinity_<item_id>", "start": static.shape[1], "width": 1})
    policy = campaign_dir.parent.name if campaign_dir.parent.name in POLICIES else None
    clicked = log["click"] == 1
    arrays = {
        "episode_id": np.arange(n, dtype=np.int64), "step": np.zeros(n, dtype=np.int64),
        "user": np.concatenate(user_parts, axis=1), "docs": _Docs(static, log["affinity"]),
        "slate": log["item_id"][:, None], "click": np.where(clicked, 0, -1).astype(np.int64), "responses": {},
        "reward": clicked.astype(np.float64), "terminated": np.ones(n, dtype=bool),
        "truncated": np.zeros(n, dtype=bool), "propensity": log["propensity_score"],
        "slot_propensity": log["propensity_score"][:, None].copy(),
    }
    meta = {"source": "obd", "campaign": campaign_dir.name, "behaviour_policy": policy,
            "algo": f"obd/{policy or 'unknown'}", "file": str(log_path), "item_context": str(item_path),
            "user_features": user_blocks, "position_offset": position_offset, "num_positions": len(POSITIONS),
            "position_values": list(POSITIONS), "doc_features": doc_blocks}
    sizes = {"N": num_items, "K": 1, "U": position_offset + len(POSITIONS), "D": static.shape[1] + 1}
    return arrays, meta, sizes


def import_obd(campaign_dir: str | Path, out_dir: str | Path, rows_per_file: int = ROWS_PER_FILE) -> dict[str, Any]:
    """Convert the OBD campaign folder ``campaign_dir`` into ``out_dir/part-*.parquet`` and
    ``manifest.json`` (module docstring: the mapping). Returns the summary saved as
    ``manifest.json``: rows, episodes, clicks, files, sizes, path and the source. Raises
    :class:`~recsys_exp.offline.jsonl.LogImportError` (nothing written) when the input or
    ``out_dir`` is unusable."""
    from recsys_exp.run_dir import atomic_write_json

    if not (type(rows_per_file) is int and rows_per_file > 0):
        raise ValueError(f"rows_per_file must be a positive integer, got {rows_per_file!r}")
    start = time.perf_counter()
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    arrays, meta, sizes = read_obd(campaign_dir)
    layout = _Layout(sizes=sizes, origin={}, responses={})
    rows = len(arrays["reward"])
    with _undo_on_error(out_dir) as created:
        files = _write_parts(arrays, layout, out_dir, meta, rows_per_file, created)
        summary = {"rows": rows, "episodes": rows, "clicks": int(arrays["reward"].sum()), "files": files,
                   "path": str(out_dir), "source": "obd", "campaign": meta["campaign"],
                   "behaviour_policy": meta["behaviour_policy"], "file": meta["file"],
                   "item_context": meta["item_context"], "num_candidates": sizes["N"], "slate_size": 1,
                   "user_dim": sizes["U"], "doc_dim": sizes["D"], "seconds": time.perf_counter() - start}
        manifest = out_dir / "manifest.json"
        if not manifest.exists():
            created.append(manifest)
        atomic_write_json(manifest, summary)  # last: its presence means the import is complete
    return summary


def main(argv: list[str] | None = None) -> int:
    """CLI: import one campaign, print a one-line summary; bad input -> ``recsys_exp: <message>``, exit 2."""
    parser = argparse.ArgumentParser(prog="python -m recsys_exp.offline.obd",
                                     description="Import one Open Bandit Dataset campaign folder as logged-data "
                                                 "Parquet (one-step sessions, slates of one item).")
    parser.add_argument("campaign_dir", help="e.g. .../obd/random/all (holding all.csv and item_context.csv)")
    parser.add_argument("out_dir", help="a new (or empty) directory for part-*.parquet and manifest.json")
    parser.add_argument("--rows-per-file", type=int, default=ROWS_PER_FILE, help="rows per Parquet part file")
    args = parser.parse_args(argv)
    try:
        s = import_obd(args.campaign_dir, args.out_dir, rows_per_file=args.rows_per_file)
    except LogImportError as e:
        print(f"recsys_exp: {e}", file=sys.stderr)
        return 2
    print(f"imported {s['rows']} rows ({s['clicks']} clicks, {s['num_candidates']} items, policy "
          f"{s['behaviour_policy']}) from {s['file']} into {s['path']} ({len(s['files'])} part "
          f"file{'s' if len(s['files']) != 1 else ''}, {s['seconds']:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
