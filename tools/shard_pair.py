"""One sample of a build as image files: KEY_lr.png and KEY_hr.png (and KEY_prompt.txt) in OUT_DIR, for
`promptsr compare` on a sample that `promptsr eval` scored (make small-cpu's compare image).

    python tools/shard_pair.py demo_out/photo_shards/report mate_LadyBird_jpg_c0 demo_out/small
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

from sr_degrade.shards import open_shards


def main() -> int:
    if len(sys.argv) != 4:
        print("usage: python tools/shard_pair.py SHARDS KEY OUT_DIR", file=sys.stderr)
        return 2
    shards, key, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    for s in open_shards(shards, mode="eval"):
        if s.key == key:
            out.mkdir(parents=True, exist_ok=True)
            Image.fromarray(s.lr).save(out / f"{key}_lr.png")
            Image.fromarray(s.hr).save(out / f"{key}_hr.png")
            (out / f"{key}_prompt.txt").write_text(s.prompt + "\n")
            print(f"wrote {out / key}_lr.png, _hr.png, _prompt.txt ({s.prompt})")
            return 0
    print(f"error: no sample {key!r} in {shards}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
