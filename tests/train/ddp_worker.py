"""One DDP rank for test_ddp.py, run as a fresh interpreter (fork after autograd is unsafe)."""

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from conftest import make_data, make_hybrid, make_plain  # noqa: E402

from hybridize.train import finetune  # noqa: E402

if __name__ == "__main__":
    rank, world, port, out, opts = sys.argv[1:6]
    rank, world = int(rank), int(world)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE=str(world),
        RANK=str(rank), LOCAL_RANK=str(rank),
    )  # fmt: skip
    torch.set_num_threads(1)
    options = json.loads(opts)
    model = make_hybrid() if options.pop("_model", "plain") == "hybrid" else make_plain()
    finetune(model, make_data(options.pop("_n", 48)), out=out, **options)
