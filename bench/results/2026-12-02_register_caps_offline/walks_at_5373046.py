"""The chunk walks of golf/ssd_xy_kernel.py as they were at commit 5373046 (a program walking CHUNKS chunks in a
tl.range loop pipelined with num_stages STAGES; reverted in 047bc08), compiled as offline_regs.py beside this file
compiles the current kernels (a launch's specialization, sm_90a). Run from a checkout of 5373046, so that `golf` is
that commit's:

    git worktree add /tmp/w 5373046 && cd /tmp/w && env -u TRITON_INTERPRET TRITON_DEFAULT_FP_FUSION=1 \
        PYTHONPATH=. <this project's .venv>/bin/python <this folder>/walks_at_5373046.py
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from offline_regs import SHAPES, report

import golf.ssd_xy_kernel as xk  # 5373046's, from the checkout on PYTHONPATH

# (chunks a program walks, the walk's pipeline stages, warps)
WALKS = ((1, 1, 4), (2, 1, 4), (2, 2, 4), (4, 3, 4), (2, 2, 8), (4, 3, 8))

report([(f"{name} walk {chunks}", kernel,
         {**SHAPES, "N": 32, "BLOCK_N": 32, "HAS_D": True, "CHUNKS": chunks, "STAGES": stages}, [(warps, 1, None)])
        for name, kernel in (("dx", xk._chunk_dx_kernel), ("y", xk._chunk_y_kernel))
        for chunks, stages, warps in WALKS])
