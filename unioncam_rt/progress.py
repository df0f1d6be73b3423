"""Progress of long steps for a person: a tqdm bar on a terminal, plain lines elsewhere.

Without a terminal (a log file, CI, a pipe) a bar is invisible, and a first ``explain`` that
exports would print "exporting ... once" and then nothing for a while; `StepProgress` then
prints one line per finished step instead.
"""

from __future__ import annotations

import sys
import time


class StepProgress:
    """``total`` named steps of one task, shown as they finish.

    Args:
        total: number of steps.
        desc: what the task is (``export efficientnet-lite0``).
        enabled: show anything at all (default True).
        stream: where lines go (default stderr); a terminal gets a tqdm bar.
    """

    def __init__(self, total: int, desc: str, enabled: bool = True, stream=None):
        self.desc, self.total, self.done = desc, total, 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.bar = None
        self.started = time.perf_counter()
        if enabled and _is_terminal(self.stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="step", file=self.stream)

    def step(self, name: str, seconds: float) -> None:
        """Step ``name`` finished, having taken ``seconds``."""
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix_str(name)
            self.bar.update(1)
        elif self.enabled:
            print(f"{self.desc}: {name} done ({seconds:.1f} s, step {self.done}/{self.total})", file=self.stream,
                  flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
