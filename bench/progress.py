"""Live progress of a run and of a grid: a bar on a terminal (tqdm), a log line at
least every ``progress.every_s`` seconds otherwise, an ETA that counts the
evaluations still to come (their cost measured on the evaluations so far, the
final test_nll pass from the measured cost of one test pass), progress inside
long evaluations (tasks report through ``tasks.base.report_progress``), and the
summary table at the end of a grid."""

from __future__ import annotations

import logging
import os
import sys
import time

log = logging.getLogger("bench")


def fmt_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def use_bar(stream=None) -> bool:
    """A bar only on an interactive terminal (never in CI logs, files or pipes)."""
    stream = stream or sys.stderr
    if os.environ.get("BENCH_PROGRESS", "").lower() in ("log", "lines", "0", "off"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _terminal_columns() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


class Progress:
    """Where one run is: training steps, evaluations (and inside them), the ETA."""

    def __init__(self, steps: int, every_s: float, unit: str = "steps/s", eval_cfg=None,
                 bar: bool | None = None):
        ev = eval_cfg or {}
        self.steps, self.every_s, self.unit = steps, float(every_s), unit
        self.every = max(1, int(ev.get("every", steps) or steps))
        self.nll_m = int(ev.get("nll_samples", 0) or 0)
        self.nll_each = bool(ev.get("nll_every_eval", False))
        self.label = ""
        self.step, self.train_time = 0, 0.0
        self.eval_times: list[float] = []     # seconds of each evaluation so far
        self.pass_times: dict[str, float] = {}  # seconds of the last pass of each kind
        self.final_eval_time = None
        self.in_eval = None                   # (step, t0, final) during an evaluation
        self.current = None                   # (what, done, total, t0) inside a pass
        self.last_line = time.perf_counter()
        self.want_bar = use_bar() if bar is None else bar
        self.bar = None
        self._bar_t = 0.0
        self._redirect = None

    # --- the ETA -----------------------------------------------------------------
    def evals_left(self, step: int, include_current: bool = False) -> tuple[int, bool]:
        """Evaluations after ``step``: regular ones, and whether the final one is."""
        regular = (self.steps - 1) // self.every - step // self.every
        if include_current and step % self.every == 0 and step < self.steps:
            regular += 1
        final = step < self.steps or (include_current and step == self.steps)
        return max(0, regular), final

    def eval_estimate(self, final: bool) -> float:
        regular = (sum(self.eval_times) / len(self.eval_times)) if self.eval_times else 0.0
        if not final or self.nll_each or self.nll_m <= 0:
            return regular
        # the final evaluation adds test_nll: m samples per test image, so about m
        # times one single-sample pass over the test split (measured in each evaluation)
        return regular + self.nll_m * self.pass_times.get("test_neg_elbo", 0.0)

    def eta(self) -> float:
        rate = self.step / self.train_time if self.train_time > 0 and self.step else 0.0
        train_left = (self.steps - self.step) / rate if rate else 0.0
        if self.in_eval is not None:
            step, t0, final = self.in_eval
            now = time.perf_counter() - t0
            left_here = max(0.0, self.eval_estimate(final) - now)
            if self.current is not None:  # inside a pass: its own rate
                what, done, total, p0 = self.current
                if done:
                    pass_left = (time.perf_counter() - p0) / done * (total - done)
                    left_here = max(left_here if what != "test_nll" else 0.0, pass_left)
            regular, fin = self.evals_left(step)
            return (train_left + left_here + regular * self.eval_estimate(False)
                    + (self.eval_estimate(True) if fin and not final else 0.0))
        regular, fin = self.evals_left(self.step)
        return (train_left + regular * self.eval_estimate(False)
                + (self.eval_estimate(True) if fin else 0.0))

    # --- events ------------------------------------------------------------------
    def trained(self, step: int, train_time: float, label: str) -> None:
        self.step, self.train_time, self.label = step, train_time, label
        self._show()

    def eval_start(self, step: int, label: str) -> None:
        self.label = label
        self.in_eval = (step, time.perf_counter(), step == self.steps)
        self._show(force=False)

    def eval_tick(self, done: int, total: int, what: str) -> None:
        """Called by a task inside its evaluation (tasks.base.report_progress)."""
        now = time.perf_counter()
        if self.current is None or self.current[0] != what or done == 0:
            if self.current is not None and self.current[0] != what:
                self.pass_times[self.current[0]] = now - self.current[3]
            self.current = (what, done, total, now)
        else:
            self.current = (what, done, total, self.current[3])
        if done >= total:
            self.pass_times[what] = now - self.current[3]
        self._show()

    def eval_end(self, step: int) -> None:
        if self.in_eval is None:
            return
        _, t0, final = self.in_eval
        seconds = time.perf_counter() - t0
        if final:
            self.final_eval_time = seconds
        else:
            self.eval_times.append(seconds)
        self.in_eval = self.current = None
        self.last_line = time.perf_counter()
        self._show()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None

    # --- display -----------------------------------------------------------------
    def status(self) -> str:
        rate = self.step / self.train_time if self.train_time > 0 else 0.0
        where = ""
        if self.in_eval is not None:
            where = f"evaluating at step {self.in_eval[0]}"
            if self.current is not None:
                what, done, total, _ = self.current
                where += f": {what} {100 * done / max(1, total):.0f}% ({done}/{total})"
            where += ", "
        return f"{where}{rate:.1f} {self.unit}, ETA {fmt_duration(self.eta())}"

    def _show(self, force: bool = False) -> None:
        if self.want_bar:
            self._show_bar()
            return
        now = time.perf_counter()
        if force or now - self.last_line >= self.every_s:
            log.info(f"[{self.label}] step {self.step}/{self.steps} "
                     f"({100 * self.step / self.steps:.0f}%) {self.status()}")
            self.last_line = now

    def _show_bar(self) -> None:
        now = time.perf_counter()
        if self.bar is not None and now - self._bar_t < 0.25 and self.step < self.steps:
            return
        self._bar_t = now
        if self.bar is None:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._redirect = logging_redirect_tqdm(loggers=[logging.root])
            self._redirect.__enter__()  # log lines print above the bar
            sized = _terminal_columns() > 0  # a terminal that reports no width gets 100
            self.bar = tqdm(total=self.steps, desc=self.label, unit="step", dynamic_ncols=sized,
                            ncols=None if sized else 100, mininterval=0.5, file=sys.stderr,
                            bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                       "[{elapsed}, {postfix}]")
        if self.bar.n != self.step:
            self.bar.n = self.step
        self.bar.set_postfix_str(self.status(), refresh=False)
        self.bar.update(0)
