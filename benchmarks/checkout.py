"""Import ``tinygrad_seq`` from the checkout these benchmarks live in.

The venv's editable install points at one worktree; run from another (``python benchmarks/...``
puts only ``benchmarks/`` on the path), a benchmark would silently time that other tree's code.
Importing this module first puts this checkout's root at the front of ``sys.path``.
"""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if sys.path[:1] != [ROOT]:
    sys.path.insert(0, ROOT)
