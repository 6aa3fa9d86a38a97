"""Write the synthetic recommendation sample in data_samples/rec/ (deterministic).

60 users and 90 items in 6 genres; each user likes two genres and mostly interacts with their
items, in time order; items carry a title (words typical of the genre), a year, genres and a
price. The last 10 items have features but no interactions (cold items). Written as RecBole
atomic files (sample.inter / sample.item / sample.user) and as JSONL (interactions.jsonl /
items.jsonl), the same data in both formats.
"""

import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "data_samples" / "rec"
GENRES = ["action", "comedy", "drama", "horror", "romance", "scifi"]
WORDS = {
    "action": ["fist", "chase", "fury", "strike", "bullet"], "comedy": ["laugh", "silly", "party", "joke", "fun"],
    "drama": ["tears", "family", "storm", "letter", "river"], "horror": ["ghost", "blood", "night", "scream", "curse"],
    "romance": ["love", "kiss", "heart", "wedding", "paris"], "scifi": ["star", "robot", "planet", "alien", "orbit"],
}


def main() -> None:
    rng = np.random.default_rng(7)
    items = []
    for n in range(90):
        g = [GENRES[n % 6]] + ([GENRES[(n // 6) % 6]] if n % 3 == 0 and (n // 6) % 6 != n % 6 else [])
        title = " ".join(rng.choice(WORDS[g[0]], 2, replace=False).tolist()).title()
        items.append({"id": f"i{n:03d}", "title": title, "year": str(1990 + n % 20), "genres": g,
                      "price": round(float(rng.uniform(1, 20)), 2)})
    warm = items[:80]
    users, inters = [], []
    t = 1_000_000
    for u in range(60):
        likes = rng.choice(6, 2, replace=False)
        users.append({"id": f"u{u:02d}", "age": str(18 + u % 50), "gender": "FM"[u % 2]})
        pool = [it for it in warm if GENRES.index(it["genres"][0]) in likes]
        others = [it for it in warm if it not in pool]
        n = int(rng.integers(12, 30))
        chosen = []
        for _ in range(n):
            src = pool if rng.random() < 0.85 else others
            it = src[int(rng.integers(len(src)))]
            if it["id"] not in chosen:
                chosen.append(it["id"])
        for iid in chosen:
            t += int(rng.integers(1, 500))
            inters.append({"user": f"u{u:02d}", "item": iid, "rating": int(rng.integers(3, 6)), "ts": t})
    order = rng.permutation(len(inters))       # files are not sorted by time
    inters = [inters[i] for i in order]
    OUT.mkdir(parents=True, exist_ok=True)
    with (OUT / "sample.inter").open("w") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for r in inters:
            f.write(f"{r['user']}\t{r['item']}\t{r['rating']}\t{r['ts']}\n")
    with (OUT / "sample.item").open("w") as f:
        f.write("item_id:token\ttitle:token_seq\tyear:token\tgenres:token_seq\tprice:float\n")
        for it in items:
            f.write(f"{it['id']}\t{it['title']}\t{it['year']}\t{' '.join(it['genres'])}\t{it['price']}\n")
    with (OUT / "sample.user").open("w") as f:
        f.write("user_id:token\tage:token\tgender:token\n")
        for u in users:
            f.write(f"{u['id']}\t{u['age']}\t{u['gender']}\n")
    with (OUT / "interactions.jsonl").open("w") as f:
        for r in inters:
            f.write(json.dumps(r) + "\n")
    with (OUT / "items.jsonl").open("w") as f:
        for it in items:
            f.write(json.dumps(it) + "\n")


if __name__ == "__main__":
    main()
