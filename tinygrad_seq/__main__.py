"""``python -m tinygrad_seq``: the same command line as ``tinygrad-seq``."""

from .cli import main

raise SystemExit(main())
