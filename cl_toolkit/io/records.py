"""The one JSONL record reader: every bad line gives ``FILE:LINE: field 'F': what is wrong``."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from .errors import InputError


def read_jsonl(path: str | os.PathLike, required: Iterable[str] = ("id",)) -> list[dict]:
    """Read a JSONL file (``-`` is stdin) into a list of dicts, validating every line:
    valid JSON, an object, the ``required`` fields present, ``id`` a non-empty unique string.
    Blank lines are skipped. Raises InputError naming file, line and field."""
    name = "<stdin>" if str(path) == "-" else str(path)
    if str(path) == "-":
        lines: Iterable[str] = sys.stdin
    else:
        p = Path(path)
        if not p.is_file():
            raise InputError("no such file", name)
        lines = p.open(encoding="utf-8")
    records, seen = [], {}
    try:
        for n, text in enumerate(lines, 1):
            if not text.strip():
                continue
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as e:
                raise InputError(f"malformed JSON ({e.msg} at column {e.colno})", name, n) from None
            if not isinstance(rec, dict):
                raise InputError("expected a JSON object", name, n)
            for f in required:
                if f not in rec or rec[f] is None or rec[f] == "":
                    raise InputError("missing", name, n, f)
            if "id" in rec:
                if not isinstance(rec["id"], (str, int)) or isinstance(rec["id"], bool):
                    raise InputError("must be a string", name, n, "id")
                rec["id"] = str(rec["id"])
                if rec["id"] in seen:
                    raise InputError(f"duplicate id {rec['id']!r} (first on line {seen[rec['id']]})",
                                     name, n, "id")
                seen[rec["id"]] = n
            rec["_line"] = n
            records.append(rec)
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", name) from None
    finally:
        if str(path) != "-":
            lines.close()  # type: ignore[union-attr]
    if not records:
        raise InputError("no records (empty data set)", name)
    return records


def public(rec: dict) -> dict:
    """A record without the reader's private bookkeeping fields (those starting with '_')."""
    return {k: v for k, v in rec.items() if not k.startswith("_")}


def write_jsonl(f, records: Iterable[dict]) -> None:
    for r in records:
        f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
