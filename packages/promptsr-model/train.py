"""Train PromptSR.

    accelerate launch packages/promptsr-model/train.py --config configs/promptsr_x4.yaml [key=value ...]


A thin entry point; everything lives in promptsr.trainer (also reachable as `promptsr train`).
"""

import sys

from promptsr.train_cli import main

if __name__ == "__main__":
    sys.exit(main())
