"""Progress of a training loop, for the command line and the examples: a tqdm bar for a person
watching, plain lines for logs and pipes.

tqdm is an optional extra (``pip install 'tinygrad_seq[cli]'``) that the library itself never needs:
without it, or when stderr (where a bar is drawn) is not a terminal, only the logged lines appear.
"""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """Call ``step(loss=...)`` after every step: it moves the bar and shows the latest values beside
    it. ``log(text)`` prints a line that stays (above the bar), stamped with the seconds since the
    start. Use it as a context manager (or call ``close``) so the bar is cleared at the end."""

    def __init__(self, total: int, desc: str = "", unit: str = "step") -> None:
        self.start = time.perf_counter()
        self._bar = _tqdm_bar(total, desc, unit)

    def step(self, **latest: float) -> None:
        if self._bar is not None:
            self._bar.set_postfix(latest, refresh=False)
            self._bar.update(1)

    def log(self, text: str) -> None:
        line = f"{text}  ({time.perf_counter() - self.start:.1f}s)"
        if self._bar is None:
            print(line, flush=True)
        else:
            self._bar.write(line)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _tqdm_bar(total: int, desc: str, unit: str) -> Any:
    """A tqdm bar when stderr is a terminal and tqdm is installed, else None."""
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc or None, unit=unit, leave=False, dynamic_ncols=True)
