"""`train.py` / `promptsr train`: arguments and config are checked before torch loads, so a bad one is
refused in a fraction of a second; then `promptsr.trainer.train` runs.

    accelerate launch packages/promptsr-model/train.py --config configs/promptsr_x4.yaml [key=value ...]
"""

from __future__ import annotations

import sys

from sr_degrade.errors import SrDegradeError

from .config import load_train_config


def main(argv: list[str] | None = None) -> int:
    """`train.py --config FILE [key=value ...]`: one clear line and exit 2 for what a user can fix."""
    import argparse

    ap = argparse.ArgumentParser(prog="train.py", description="Train PromptSR (launch with accelerate launch).")
    ap.add_argument("--config", "-c", help="YAML config (configs/promptsr_x4.yaml, configs/tiny_cpu.yaml)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=1e-4 run.output_dir=runs/a")
    args = ap.parse_args(argv)
    try:
        from sr_degrade.shards import read_build_info, shard_files
        from sr_degrade.storage import is_url

        cfg = load_train_config(args.config, args.overrides)
        for pattern in (None if cfg.data.photos else cfg.data.train, cfg.data.val):
            if pattern:
                shard_files(pattern)  # no shards: refused now, not after the model is built
                if is_url(pattern):
                    read_build_info(pattern)  # shards at a URL without their build.json: refused now too
        if cfg.data.photos:
            from sr_degrade.sources import open_source

            open_source(cfg.data.photos)  # a missing folder or list file: refused now too
        from .trainer import train  # torch, accelerate and diffusers load here

        result = train(cfg)
    except SrDegradeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; the last state is saved (resume: auto continues it)", file=sys.stderr)
        return 130
    print(f"training {result['status']} at step {result['step']}")
    return 0
