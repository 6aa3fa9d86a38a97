"""Debian's package index as a human-tagged corpus: posts JSONL for `cltk pretrain --method cdtom`.

`apt-cache dumpavail` (after `apt-get update`) prints, per package, a one-line `Description:`
and for about half of them a `Tag:` field of debtags (`admin::monitoring, use::monitor`).
Each tagged package becomes a post `{"id": package, "text": description, "tags": [...]}`.
Packages are split by a hash of their *source* package (`Source:`, else the package's own
name): 10% test, 10% validation, the rest training, so the binary packages of one source
(`librte-net-*`, `foo` / `foo-dev` / `foo-doc`, whose descriptions are near-identical) never
sit on both sides. The vocabulary is every tag used at least `--min-count` times in the
training split. `info.json` counts the test posts that have a near-duplicate in training (the
same description after lower-casing, or word-set Jaccard >= 0.8) under this split and under
the earlier split by binary package name.

    python benchmarks/debtags.py --out benchmarks/data/debtags
    -> debtags/train.jsonl, debtags/valid.jsonl, debtags/test.jsonl, debtags/tags.txt, debtags/info.json

`--sample N` instead writes N test-split posts and their tags (data_samples/posts.jsonl).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import re
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


def posts(text: str) -> tuple[list[dict], dict[str, str]]:
    """Posts sorted by id, and each post's source package."""
    seen, out, source = set(), [], {}
    for st in stanzas(text):
        name, desc, tags = st.get("Package"), st.get("Description"), st.get("Tag")
        if not (name and desc and tags) or name in seen:
            continue
        seen.add(name)
        tag_list = [t.strip() for t in tags.split(",") if t.strip()]
        out.append({"id": name, "text": desc, "tags": list(dict.fromkeys(tag_list))})
        source[name] = (st.get("Source") or name).split()[0]
    return sorted(out, key=lambda p: p["id"]), source


def bucket(name: str) -> int:
    return int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) % 10


def near_duplicates(test: list[dict], train: list[dict], jaccard: float = 0.8, chunk: int = 256) -> dict:
    """How many test posts have a training post with the same lower-cased description, or a
    word-set Jaccard similarity of at least ``jaccard``."""
    import numpy as np
    from scipy import sparse

    words = lambda t: set(re.findall(r"[a-z0-9]+", t.lower()))  # noqa: E731
    vocab: dict[str, int] = {}

    def matrix(rows: list[dict]):
        ind, ptr = [], [0]
        for p in rows:
            ind += sorted({vocab.setdefault(w, len(vocab)) for w in words(p["text"])})
            ptr.append(len(ind))
        return ind, ptr

    (ti, tp), (ri, rp) = matrix(test), matrix(train)
    t = sparse.csr_matrix((np.ones(len(ti), np.float32), ti, tp), shape=(len(test), len(vocab)))
    r = sparse.csr_matrix((np.ones(len(ri), np.float32), ri, rp), shape=(len(train), len(vocab)))
    tn, rn = np.diff(tp), np.diff(rp)
    exact_texts = {p["text"].strip().lower() for p in train}
    exact = sum(p["text"].strip().lower() in exact_texts for p in test)
    near = 0
    for i in range(0, len(test), chunk):
        inter = (t[i:i + chunk] @ r.T).toarray()
        sim = inter / np.maximum(tn[i:i + chunk, None] + rn[None, :] - inter, 1)
        near += int((sim.max(1) >= jaccard).sum())
    return {"test_posts": len(test), "same_description": exact, f"jaccard>={jaccard}": near}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/data/debtags")
    ap.add_argument("--min-count", type=int, default=5)
    ap.add_argument("--sample", type=int, default=0, help="write only N test posts + their tags")
    args = ap.parse_args()
    text = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True).stdout
    allp, source = posts(text)
    if not allp:
        sys.exit("no tagged packages: run apt-get update first")
    split = {p["id"]: bucket(source[p["id"]]) for p in allp}
    train = [p for p in allp if split[p["id"]] > 1]
    valid = [p for p in allp if split[p["id"]] == 1]
    test = [p for p in allp if split[p["id"]] == 0]
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
    _write(out / "valid.jsonl", valid)
    _write(out / "test.jsonl", test)
    (out / "tags.txt").write_text("\n".join(vocab) + "\n")
    by_name = [bucket(p["id"]) == 0 for p in allp]                 # the split before: binary package name
    info = {"packages_tagged": len(allp), "source_packages": len(set(source.values())), "split": "source package",
            "train": len(train), "valid": len(valid), "test": len(test), "vocabulary": len(vocab),
            "min_count": args.min_count, "tags_per_post": round(sum(len(p["tags"]) for p in allp) / len(allp), 2),
            "near_duplicates_in_training": {
                "by_source_package": near_duplicates(test, train + valid),
                "by_package_name": near_duplicates([p for p, t in zip(allp, by_name) if t],
                                                   [p for p, t in zip(allp, by_name) if not t])}}
    (out / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info))


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


if __name__ == "__main__":
    main()
