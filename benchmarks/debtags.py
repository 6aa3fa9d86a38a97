"""Debian's package index as a human-tagged corpus: posts JSONL for `cltk pretrain --method cdtom`.

`apt-cache dumpavail` (after `apt-get update`) prints, per package, a one-line `Description:`
and for about half of them a `Tag:` field of debtags (`admin::monitoring, use::monitor`).
Each tagged package becomes a post `{"id": package, "text": description, "tags": [...]}`;
packages are split by a hash of their name (10% test); the vocabulary is every tag used at
least `--min-count` times in the training split.

    python benchmarks/debtags.py --out benchmarks/data/debtags
    -> debtags/train.jsonl, debtags/test.jsonl, debtags/tags.txt, debtags/info.json

`--sample N` instead writes N test-split posts and their tags (data_samples/posts.jsonl).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import subprocess
import sys
from pathlib import Path


def stanzas(text: str):
    """Yield dicts of the fields of each package stanza (continuation lines joined)."""
    cur: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if not line.strip():
            if cur:
                yield cur
            cur, key = {}, None
        elif line[0] in " \t" and key:
            cur[key] += " " + line.strip()
        elif ":" in line:
            key, _, val = line.partition(":")
            cur[key] = val.strip()
    if cur:
        yield cur


def posts(text: str) -> list[dict]:
    seen, out = set(), []
    for st in stanzas(text):
        name, desc, tags = st.get("Package"), st.get("Description"), st.get("Tag")
        if not (name and desc and tags) or name in seen:
            continue
        seen.add(name)
        tag_list = [t.strip() for t in tags.split(",") if t.strip()]
        out.append({"id": name, "text": desc, "tags": list(dict.fromkeys(tag_list))})
    return sorted(out, key=lambda p: p["id"])


def is_test(name: str) -> bool:
    return int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) % 10 == 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/data/debtags")
    ap.add_argument("--min-count", type=int, default=5)
    ap.add_argument("--sample", type=int, default=0, help="write only N test posts + their tags")
    args = ap.parse_args()
    text = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True).stdout
    allp = posts(text)
    if not allp:
        sys.exit("no tagged packages: run apt-get update first")
    train = [p for p in allp if not is_test(p["id"])]
    test = [p for p in allp if is_test(p["id"])]
    counts = collections.Counter(t for p in train for t in p["tags"])
    vocab = sorted(t for t, c in counts.items() if c >= args.min_count)
    keep = set(vocab)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.sample:
        sample = [p for p in test if any(t in keep for t in p["tags"])][:: max(1, len(test) // args.sample)]
        sample = sample[: args.sample]
        used = sorted({t for p in sample for t in p["tags"] if t in keep})
        _write(out / "posts.jsonl", [{**p, "tags": [t for t in p["tags"] if t in keep]} for p in sample])
        (out / "tags.txt").write_text("\n".join(used) + "\n")
        print(json.dumps({"posts": len(sample), "tags": len(used)}))
        return
    _write(out / "train.jsonl", train)
    _write(out / "test.jsonl", test)
    (out / "tags.txt").write_text("\n".join(vocab) + "\n")
    info = {"packages_tagged": len(allp), "train": len(train), "test": len(test), "vocabulary": len(vocab),
            "min_count": args.min_count, "tags_per_post": round(sum(len(p["tags"]) for p in allp) / len(allp), 2)}
    (out / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info))


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


if __name__ == "__main__":
    main()
