"""Build golf/demo_data/wiki_demo.jsonl.xz: the Wikipedia documents at the start of the shared corpus's
first train shard, up to a byte budget. Blog documents are skipped (their licence is non-commercial).

    python scripts/make_demo_corpus.py ../shared/corpus/train_000.jsonl.xz golf/demo_data/wiki_demo.jsonl.xz
"""

from __future__ import annotations

import json
import lzma
import sys

BUDGET_BYTES = 6_000_000


def main(src: str, dst: str) -> None:
    total = 0
    docs = 0
    with lzma.open(src, "rt", encoding="utf-8") as f_in, \
            lzma.open(dst, "wt", encoding="utf-8", preset=9 | lzma.PRESET_EXTREME) as f_out:
        for line in f_in:
            doc = json.loads(line)
            if doc.get("src") != "wiki":
                continue
            f_out.write(json.dumps({"text": doc["text"], "src": "wiki"}, ensure_ascii=False) + "\n")
            total += len(doc["text"].encode("utf-8"))
            docs += 1
            if total >= BUDGET_BYTES:
                break
    print(f"{docs} docs, {total} UTF-8 bytes -> {dst}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
