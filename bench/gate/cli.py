"""`python -m bench check`: a CI gate on gradient variance, and a timing report.

For every registered estimator x {toy, bernoulli_vae, categorical_vae}, at a
fixed model state and fixed sampling seeds, the gate measures the variance of
the gradient estimator (the ``grad_var`` metric: variance across m independent
estimates, averaged over the encoder parameters -- over the logits on the toy
problem) in R independent groups, and compares the R values with the R values
committed under ``results/baselines/grad_variance.json``.

The decision, per (task, estimator) pair, is a one-sided exact Mann-Whitney
(Wilcoxon rank-sum) test of H0 "variance ratio current/baseline <= tolerance"
on the log group variances, at level alpha / n (Bonferroni over the n pairs
compared). The R groups of a run are i.i.d. and independent of the baseline's
(other seeds), so on an unchanged tree the values are exchangeable and the
exact rank test bounds the chance that a check run fails anywhere by alpha,
whatever the distribution of the gradient (see docs/ci_gate.md).

Timing -- seconds per estimate (estimator call + backward) on a fixed batch --
is measured by the pytest-benchmark suite in ``benchmarks/``; it goes to
pytest-benchmark's JSON and a compare table that is printed, never enforced.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import itertools
import json
import math
import os
import sys
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import yaml

import estimators
import tasks
from estimators.base import EstimatorOutput
from tasks import datasets

from ..paths import CONF_DIR, REPO_DIR

SCHEMA = 1
BASELINE_DIR = REPO_DIR / "results" / "baselines"
VARIANCE_FILE = "grad_variance.json"
TIMING_FILE = "timing.json"
BENCH_DIR = REPO_DIR / "benchmarks"
DEFAULT_OUT = REPO_DIR / ".benchmarks" / "check"
TASKS = ("toy", "bernoulli_vae", "categorical_vae")
UPDATE_SEED = 0  # sampling seed of `--update`
CHECK_SEED = 1  # sampling seed of a check: independent of the baseline's
ZERO_VAR = 1e-30  # a group variance at or below this counts as exactly zero


class CheckError(RuntimeError):
    """The check cannot be made (bad option, missing or incompatible baseline)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that fixes what is measured; a baseline applies only to a
    measurement with the same settings (and the same model fingerprint)."""

    groups: int = 10  # R independent groups per pair
    m: tuple = (("toy", 256), ("bernoulli_vae", 16), ("categorical_vae", 16))
    batch: int = 16  # fixed minibatch: the first rows of digits' training split
    model_seed: int = 0  # initialises the VAEs and the estimators' own parameters
    # ((task, ((key, value), ...)), ...) applied on conf/task/*.yaml: smaller MLPs
    # than the paper's keep the gate fast; the latent spaces stay as configured
    task_overrides: tuple = tuple(
        (t, (("encoder_hidden", (128, 64)), ("decoder_hidden", (64, 128))))
        for t in ("bernoulli_vae", "categorical_vae"))
    toy_logits: tuple = (-1.0, -0.25, 0.5, 1.5)  # a_i: z_i ~ Bernoulli(sigmoid(a_i))
    toy_target: float = 0.499
    timing_batch: int = 100  # batch for the time per estimate (a training step)

    def m_for(self, task: str) -> int:
        return dict(self.m)[task]

    def overrides_for(self, task: str) -> dict:
        return dict(dict(self.task_overrides).get(task, ()))

    def to_json(self) -> dict:
        return json.loads(json.dumps({
            "groups": self.groups,
            "m": dict(self.m),
            "batch": self.batch,
            "model_seed": self.model_seed,
            "task_overrides": {t: dict(kv) for t, kv in self.task_overrides},
            "toy_logits": list(self.toy_logits),
            "toy_target": self.toy_target,
            "timing_batch": self.timing_batch,
        }))


# --- estimators --------------------------------------------------------------

def estimator_config(name: str) -> dict:
    """The estimator's options as in conf/estimator/NAME.yaml (defaults if none)."""
    return json.loads(_estimator_config(name))


@lru_cache(maxsize=None)
def _estimator_config(name: str) -> str:
    path = CONF_DIR / "estimator" / f"{name}.yaml"
    cfg = dict(yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    cfg.pop("name", None)
    return json.dumps(cfg)


def make_estimator(name: str, seed: int = 0) -> estimators.Estimator:
    """A fresh estimator as configured; its own parameters (if any) from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return estimators.get(name, **estimator_config(name))


class DoubledNoise(estimators.Estimator):
    """A planted regression for self-tests: the wrapped estimator with its gradient
    noise variance doubled and its expectation unchanged,

        g' = g1 + (g2 - g3) / sqrt(2),   g1, g2, g3 independent estimates,

    so E g' = E g and Var g' = (1 + 1/2 + 1/2) Var g = 2 Var g, per parameter.
    An estimator that computes its own KL term (the relaxed Concrete KL) has it
    treated alike, each KL from its own estimate's sample, so the noise of the
    whole objective the estimator is responsible for is doubled."""

    def __init__(self, inner: estimators.Estimator):
        super().__init__()
        self.inner = inner
        self.name = inner.name
        for attr in ("unbiased", "relaxed", "hard_forward", "binary_only", "kl"):
            setattr(self, attr, getattr(inner, attr))
        self._last = None

    def __call__(self, logits, f):
        o1, o2, o3 = (self.inner(logits, f) for _ in range(3))
        surrogate = o1.surrogate + (o2.surrogate - o3.surrogate) / math.sqrt(2.0)
        out = EstimatorOutput(loss=o1.loss, surrogate=surrogate, sample=o1.sample,
                              log_sample=o1.log_sample)
        self._last = (out, o1, o2, o3)
        return out

    def relaxed_kl(self, out, logits, prior_logits=None):
        last, o1, o2, o3 = self._last
        if out is not last:
            raise RuntimeError("DoubledNoise.relaxed_kl: not the output of the last call")
        k1, k2, k3 = (self.inner.relaxed_kl(o, logits, prior_logits) for o in (o1, o2, o3))
        return k1 + (k2 - k3) / math.sqrt(2.0)

    def check_latents(self, n, k):
        self.inner.check_latents(n, k)

    def set_step(self, step):
        self.inner.set_step(step)

    def frozen(self):
        return self.inner.frozen()

    def extra_parameters(self):
        return self.inner.extra_parameters()


# --- the fixed problems ------------------------------------------------------

def _fingerprint(tensors) -> dict:
    ts = [t.detach().double().cpu() for t in tensors]
    return {"numel": int(sum(t.numel() for t in ts)),
            "sum": float(sum(t.sum() for t in ts)),
            "sumsq": float(sum(t.pow(2).sum() for t in ts))}


def _same_fingerprint(a: dict, b: dict) -> bool:
    return (a.get("numel") == b.get("numel")
            and all(math.isclose(a.get(k, math.nan), b.get(k, math.nan), rel_tol=1e-6,
                                 abs_tol=1e-9) for k in ("sum", "sumsq")))


def fresh_estimator(factory, logits, f, seed: int):
    """A new estimator whose lazily created state (e.g. a control-variate network
    built on first use) is initialised from ``seed``, not from the sampling
    stream: one frozen warm-up call under that seed. Every group then starts
    from the same estimator state, so the groups are identically distributed."""
    est = factory()
    with torch.random.fork_rng(devices=[logits.device] if logits.is_cuda else []):
        torch.manual_seed(seed)
        with est.frozen():
            est(logits.detach(), f)
    return est


def _seed(*parts) -> int:
    """A sampling seed for one group: independent streams for distinct parts."""
    words = [p if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0] >> 1)


class ToyProblem:
    """Minimise E_{z~q}[sum_i (z_i - t)^2], z_i ~ Bernoulli(sigmoid(a_i)),
    t = 0.499 (the toy problem of Tucker et al. 2017, REBAR, and Grathwohl et al.
    2018, RELAX), with N = len(a) variables and logits (0, a_i) (K = 2), B = 1.
    The gradient is taken w.r.t. the logits; it is known exactly by enumeration,
    so the estimator's bias is reported too."""

    name = "toy"

    def __init__(self, settings: Settings, device="cpu"):
        a = torch.tensor(settings.toy_logits, dtype=torch.float64, device=device)
        self.logits = torch.stack([torch.zeros_like(a), a], -1)[None]  # (1, N, 2)
        self.t = float(settings.toy_target)
        self.m = settings.m_for("toy")
        self.model_seed = settings.model_seed
        self.timing_batch = settings.timing_batch
        self.exact = self.exact_gradient()

    @property
    def latent_shape(self):
        return tuple(self.logits.shape[1:])

    def f(self, z):
        return ((z[..., 1] - self.t) ** 2).sum(-1)

    def exact_gradient(self) -> torch.Tensor:
        """d/dlogits of sum_s q(s) f(s), enumerating all 2^N states."""
        lg = self.logits.detach().clone().requires_grad_(True)
        n = lg.shape[1]
        p = torch.softmax(lg, -1)[0]  # (N, 2)
        total = lg.new_zeros(())
        for s in itertools.product((0, 1), repeat=n):
            prob = torch.stack([p[i, si] for i, si in enumerate(s)]).prod()
            total = total + prob * sum((si - self.t) ** 2 for si in s)
        (g,) = torch.autograd.grad(total, lg)
        return g[0]

    def fingerprint(self) -> dict:
        return _fingerprint([self.logits]) | {"target": self.t}

    def estimates(self, est, m: int) -> torch.Tensor:
        """m independent gradient estimates w.r.t. the logits, (m, N, K): one
        call on m stacked copies (each copy's surrogate is its own term)."""
        rep = self.logits.repeat(m, 1, 1).requires_grad_(True)
        with est.frozen():
            out = est(rep, self.f)
        (g,) = torch.autograd.grad(out.surrogate * m, rep)
        return g

    def measure(self, est_factory, seed: int, groups: int) -> dict:
        vs, gs = [], []
        for r in range(groups):
            est = fresh_estimator(est_factory, self.logits, self.f, self.model_seed)
            torch.manual_seed(_seed(seed, "toy", est.name, r))
            g = self.estimates(est, self.m).detach()
            vs.append(float(g.var(0).mean()))
            gs.append(g)
        g = torch.cat(gs).flatten(1)
        exact = self.exact.flatten()
        bias = g.mean(0) - exact
        se = g.std(0) / math.sqrt(g.shape[0])
        z = torch.where(se > 0, bias.abs() / se.clamp_min(1e-300),
                        torch.where(bias.abs() > 1e-12 * (1 + exact.abs()), math.inf, 0.0))
        return {"groups": vs, "bias_rms": float(bias.pow(2).mean().sqrt()),
                "bias_z": float(z.max()), "exact_rms": float(exact.pow(2).mean().sqrt())}

    def timed_step(self, est):
        """One estimate on a batch of ``timing_batch`` copies, with its backward."""
        logits = self.logits.repeat(self.timing_batch, 1, 1)

        def step():
            lg = logits.detach().requires_grad_(True)
            est(lg, self.f).surrogate.backward()
        return step


@lru_cache(maxsize=4)
def _digits(device: str):
    return datasets.load({"name": "digits", "threshold": 8.0}, None, device)


class VAEProblem:
    """A VAE task (conf/task/NAME.yaml) on the digits data, initialised from
    ``model_seed``, untrained; the fixed minibatch is the first ``batch`` rows of
    the training split. The variance is the task's own ``grad_variance``."""

    def __init__(self, name: str, settings: Settings, device="cpu"):
        self.name = name
        path = CONF_DIR / "task" / f"{name}.yaml"
        if not path.exists():
            raise CheckError(f"task {name!r} has no config at {path}")
        cfg = dict(yaml.safe_load(path.read_text()) or {})
        cfg.update(settings.overrides_for(name))
        self.config = cfg
        data = _digits(str(device))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.model_seed)
            self.task = tasks.build(cfg, data, device)
        self.x = data.eval_split("train")[: settings.batch]
        self.x_time = data.eval_split("train")[: settings.timing_batch]
        self.m = settings.m_for(name)
        self.model_seed = settings.model_seed

    @property
    def latent_shape(self):
        return tuple(self.task.latent_shape)

    def fingerprint(self) -> dict:
        return _fingerprint([*self.task.parameters(), self.x])

    def measure(self, est_factory, seed: int, groups: int) -> dict:
        vs = []
        with torch.no_grad():
            logits = self.task.logits(self.x)
        for r in range(groups):
            est = fresh_estimator(est_factory, logits, lambda z: self.task.recon(self.x, z),
                                  self.model_seed)
            torch.manual_seed(_seed(seed, self.name, est.name, r))
            vs.append(float(self.task.grad_variance(self.x, est, self.m)))
        return {"groups": vs}

    def timed_step(self, est):
        """The gradient of a training step: the task's loss on ``timing_batch``
        examples, backward to every parameter (no optimiser step)."""
        task, x = self.task, self.x_time

        def step():
            task.zero_grad(set_to_none=True)
            obj, _ = task.loss(x, est)
            obj.backward()
        return step


def build_problem(name: str, settings: Settings, device="cpu"):
    if name == "toy":
        return ToyProblem(settings, device)
    if name in ("bernoulli_vae", "categorical_vae"):
        return VAEProblem(name, settings, device)
    raise CheckError(f"--tasks: unknown task {name!r}; allowed: {', '.join(TASKS)}")


def refusal(problem, est) -> str | None:
    """Why the estimator cannot run on this problem (e.g. binary-only on K = 10)."""
    try:
        est.check_latents(*problem.latent_shape)
    except estimators.EstimatorConfigError as e:
        return str(e)
    return None


# --- measuring ----------------------------------------------------------------

def measure(settings: Settings, pairs, seed: int, device="cpu", factories=None,
            progress=None) -> dict:
    """Measure the given (task, estimator) pairs. ``factories`` may map an
    estimator name to a callable returning a (fresh) estimator, e.g. a planted
    regression; by default the configured estimator from ``model_seed``.

    Returns {"seed", "settings", "fingerprints": {task: ...}, "pairs": {key: entry}},
    where an entry has ``status`` measured / skipped / error."""
    factories = factories or {}
    out = {"seed": seed, "settings": settings.to_json(), "fingerprints": {}, "pairs": {}}
    problems = {}
    for task, name in pairs:
        key = f"{task}/{name}"
        if task not in problems:
            problems[task] = build_problem(task, settings, device)
            out["fingerprints"][task] = problems[task].fingerprint()
        problem = problems[task]
        factory = factories.get(name) or (lambda n=name: make_estimator(n, settings.model_seed))
        entry = {"task": task, "estimator": name, "m": problem.m,
                 "estimator_config": estimator_config(name)}
        try:
            est = factory()
            why = refusal(problem, est)
            if why:
                entry.update(status="skipped", reason=why)
            else:
                with torch.random.fork_rng(devices=[]):
                    entry.update(problem.measure(factory, seed, settings.groups))
                v = float(np.mean(entry["groups"]))
                entry.update(status="measured", grad_var=v,
                             log10_grad_var=math.log10(v) if v > 0 else None)  # JSON-safe
        except Exception as e:  # a broken estimator is reported, not a traceback
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            entry.update(status="error", reason=f"{type(e).__name__}: {msg}"[:300])
        out["pairs"][key] = entry
        if progress:
            progress(entry)
    return out


def all_pairs(task_names, est_names):
    return [(t, e) for t in task_names for e in est_names]


# --- the statistical gate ---------------------------------------------------------

def _logs(values) -> np.ndarray:
    return np.log(np.maximum(np.asarray(values, dtype=float), 1e-300))


def min_p_value(groups: int) -> float:
    """The smallest one-sided p-value the exact rank test can give with R vs R."""
    return 1.0 / math.comb(2 * groups, groups)


def rank_test(current, baseline, tolerance: float) -> tuple[float, float, float]:
    """(p_up, p_down, ratio): exact one-sided Mann-Whitney p-values of
    H0 "current/baseline <= tolerance" (p_up) and "current/baseline >= 1/tolerance"
    (p_down) on log group variances, and the Hodges-Lehmann estimate of the ratio."""
    from scipy.stats import mannwhitneyu

    c, b = _logs(current), _logs(baseline)
    shift = math.log(tolerance)
    method = "exact" if len(np.unique(np.concatenate([c - shift, b]))) == len(c) + len(b) \
        else "asymptotic"
    p_up = float(mannwhitneyu(c - shift, b, alternative="greater", method=method).pvalue)
    method = "exact" if len(np.unique(np.concatenate([c + shift, b]))) == len(c) + len(b) \
        else "asymptotic"
    p_down = float(mannwhitneyu(c + shift, b, alternative="less", method=method).pvalue)
    ratio = float(np.exp(np.median(c[:, None] - b[None, :])))
    return p_up, p_down, ratio


@dataclasses.dataclass
class Row:
    task: str
    estimator: str
    status: str  # ok | REGRESSION | improved | new | skipped | ERROR | gone
    base_var: float = math.nan
    cur_var: float = math.nan
    ratio: float = math.nan
    p_value: float = math.nan
    note: str = ""

    @property
    def fails(self) -> bool:
        return self.status in ("REGRESSION", "ERROR")


def compare(baseline: dict, current: dict, tolerance: float = 1.2,
            alpha: float = 1e-3) -> tuple[list[Row], dict]:
    """Verdict per measured pair; returns (rows, summary)."""
    if not tolerance >= 1.0:
        raise CheckError(f"--tolerance must be >= 1 (a ratio), got {tolerance}")
    if not 0.0 < alpha < 1.0:
        raise CheckError(f"--alpha must be in (0, 1), got {alpha}")
    bpairs = baseline.get("pairs", {})
    rows, compared = [], []
    for key, cur in current["pairs"].items():
        row = Row(cur["task"], cur["estimator"], "ok")
        base = bpairs.get(key)
        if cur["status"] == "skipped":
            row.status, row.note = "skipped", cur["reason"]
        elif cur["status"] == "error":
            row.status, row.note = "ERROR", cur["reason"]
        elif base is None or base.get("status") != "measured":
            row.status, row.cur_var = "new", cur["grad_var"]
            row.note = "no baseline yet: add it with --update-missing"
        elif (len(base["groups"]) != len(cur["groups"]) or base.get("m") != cur["m"]):
            row.status = "ERROR"
            row.note = (f"baseline measured with R={len(base['groups'])}, m={base.get('m')}; "
                        f"now R={len(cur['groups'])}, m={cur['m']}: "
                        f"run --update {cur['estimator']}")
        else:
            row.base_var, row.cur_var = float(np.mean(base["groups"])), cur["grad_var"]
            if base.get("estimator_config") != cur.get("estimator_config"):
                row.note = (f"config changed: {base.get('estimator_config')} -> "
                            f"{cur.get('estimator_config')}")
            compared.append((row, base, cur))
        rows.append(row)
    n = len(compared)
    per_pair = alpha / max(n, 1)
    for row, base, cur in compared:
        b, c = np.asarray(base["groups"]), np.asarray(cur["groups"])
        b_zero, c_zero = bool((b <= ZERO_VAR).all()), bool((c <= ZERO_VAR).all())
        if b_zero or c_zero:
            row.ratio = math.nan if b_zero and c_zero else (math.inf if b_zero else 0.0)
            row.status = ("ok" if c_zero and b_zero else "REGRESSION" if b_zero else "improved")
            row.note = _join(row.note, "zero variance" if b_zero and c_zero else
                             "baseline had zero variance" if b_zero else "now zero variance")
            continue
        p_up, p_down, row.ratio = rank_test(c, b, tolerance)
        row.p_value = p_up
        if p_up < per_pair:
            row.status = "REGRESSION"
        elif p_down < per_pair:
            row.status = "improved"
            row.note = _join(row.note, "lower variance: lock it in with --update "
                             f"{row.estimator}")
    seen = set(current["pairs"])
    tasks_now = {p["task"] for p in current["pairs"].values()}
    names_now = set(estimators.names())
    for key, base in bpairs.items():
        if key not in seen and base["task"] in tasks_now and base["estimator"] not in names_now:
            rows.append(Row(base["task"], base["estimator"], "gone",
                            note="in the baseline but no longer registered"))
    summary = {"compared": n, "alpha": alpha, "per_pair_alpha": per_pair,
               "tolerance": tolerance, "groups": len(compared[0][2]["groups"]) if n else None}
    if n and per_pair < min_p_value(summary["groups"]):
        raise CheckError(f"with R={summary['groups']} groups the exact test cannot reach "
                         f"alpha/n={per_pair:.2g}; raise --alpha or the number of groups")
    return rows, summary


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b


def check_compatible(baseline: dict, current: dict) -> None:
    """Refuse (CheckError) a baseline measured with other settings or model state."""
    if baseline.get("schema") != SCHEMA:
        raise CheckError(f"baseline schema {baseline.get('schema')!r} != {SCHEMA}; "
                         "rewrite it with --update")
    if baseline.get("settings") != current["settings"]:
        diff = sorted(k for k in set(baseline.get("settings", {})) | set(current["settings"])
                      if baseline.get("settings", {}).get(k) != current["settings"].get(k))
        raise CheckError(f"baseline measured with other settings ({', '.join(diff)}); "
                         "rewrite it with --update")
    for task, fp in current["fingerprints"].items():
        bfp = baseline.get("fingerprints", {}).get(task)
        if bfp is not None and not _same_fingerprint(bfp, fp):
            raise CheckError(f"the fixed {task} model/data differ from the baseline's "
                             f"(fingerprint {bfp} != {fp}): the task changed; if intended, "
                             "rewrite the baselines with --update")


# --- files ------------------------------------------------------------------------

def _git_sha() -> str:
    try:
        from ..train import git_sha
        return git_sha()
    except Exception:
        return "unknown"


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckError(f"no baseline at {path}; create it with `python -m bench check "
                         "--update`") from None
    except json.JSONDecodeError as e:
        raise CheckError(f"{path} is not valid JSON ({e})") from None


def write_json(path: Path, obj: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def baseline_record(measured: dict, old: dict | None) -> dict:
    """The baseline file: measured pairs replace (or join) the old ones."""
    pairs = dict(old["pairs"]) if old else {}
    for key, entry in measured["pairs"].items():
        if entry["status"] == "measured":
            pairs[key] = entry
        elif entry["status"] == "skipped":
            pairs.pop(key, None)
    fps = dict(old.get("fingerprints", {})) if old else {}
    fps.update(measured["fingerprints"])
    return {"schema": SCHEMA,
            "note": "gradient-variance baselines for `python -m bench check`; "
                    "regenerate with `python -m bench check --update` (docs/ci_gate.md)",
            "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "git_sha": _git_sha(), "torch": torch.__version__,
            "seed": measured["seed"], "settings": measured["settings"], "fingerprints": fps,
            "pairs": dict(sorted(pairs.items()))}


# --- timing (pytest-benchmark) ---------------------------------------------------------

def run_timing(json_path: Path, task_names, est_names, device="cpu",
               plant: str | None = None, verbose=False) -> int:
    """Run the pytest-benchmark suite in benchmarks/ in this process; its JSON
    lands at ``json_path``. pytest's own output is shown with ``verbose`` or when
    the suite fails. Returns pytest's exit code."""
    import io

    import pytest

    if not BENCH_DIR.is_dir():
        raise CheckError(f"no benchmark suite at {BENCH_DIR} (run from a source checkout)")
    args = [str(BENCH_DIR), "-p", "no:cacheprovider", f"--benchmark-json={json_path}",
            "--benchmark-min-rounds=5", "--benchmark-max-time=0.1",
            "--benchmark-warmup=on", "--benchmark-warmup-iterations=1",
            "--benchmark-sort=name", f"--check-tasks={','.join(task_names)}",
            f"--check-estimators={','.join(est_names)}", f"--check-device={device}"]
    if plant:
        args.append(f"--check-plant={plant}")
    args += ["-q", "--benchmark-columns=median,iqr,rounds", "-p", "no:warnings"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = int(pytest.main(args))
    if verbose or code != 0:
        print(buf.getvalue())
    return code


def timing_table(current: dict, baseline: dict | None) -> list[str]:
    def medians(doc):
        return {(b["extra_info"].get("task"), b["extra_info"].get("estimator")):
                b["stats"]["median"] for b in (doc or {}).get("benchmarks", [])
                if "task" in b.get("extra_info", {})}

    def machine(doc):
        mi = (doc or {}).get("machine_info", {})
        cpu = mi.get("cpu", {}) if isinstance(mi.get("cpu"), dict) else {}
        return (f"{cpu.get('brand_raw') or mi.get('processor') or '?'}, "
                f"{cpu.get('count', '?')} cpus, python {mi.get('python_version', '?')}")

    now, base = medians(current), medians(baseline)
    lines = ["time per estimate (median; reported, never enforced)",
             f"  this run : {machine(current)}",
             f"  baseline : {machine(baseline) if baseline else '(none)'}",
             f"  {'task':16} {'estimator':20} {'baseline':>11} {'now':>11} {'ratio':>7}"]
    for key in sorted(now):
        b = base.get(key)
        ratio = f"{now[key] / b:7.2f}" if b else "    new"
        bs = f"{b * 1e3:9.3f}ms" if b else f"{'-':>11}"
        lines.append(f"  {key[0]:16} {key[1]:20} {bs} {now[key] * 1e3:9.3f}ms {ratio}")
    return lines


def add_variance(doc: dict, measured: dict) -> dict:
    """Put each pair's measured gradient variance into its benchmark's extra_info."""
    for b in doc.get("benchmarks", []):
        ei = b.setdefault("extra_info", {})
        entry = measured["pairs"].get(f"{ei.get('task')}/{ei.get('estimator')}")
        if entry and entry["status"] == "measured":
            ei.update({k: entry[k] for k in ("grad_var", "log10_grad_var", "m", "bias_rms",
                                             "bias_z") if k in entry})
    return doc


def merge_timing(new: dict, old: dict | None) -> dict:
    """Timing baseline: the new run's (task, estimator) entries replace the old ones."""
    if not old:
        return new

    def key(b):
        ei = b.get("extra_info", {})
        return ei.get("task"), ei.get("estimator")
    fresh = {key(b) for b in new.get("benchmarks", [])}
    keep = [b for b in old.get("benchmarks", []) if key(b) not in fresh]
    out = dict(new)
    out["benchmarks"] = sorted(keep + new.get("benchmarks", []), key=lambda b: b["name"])
    return out


# --- report -----------------------------------------------------------------------

def _fmt(v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3e}"


def variance_table(rows: list[Row], summary: dict, current: dict) -> list[str]:
    lines = [f"gradient-variance gate: {summary['compared']} pairs compared, R={summary['groups']} "
             f"groups each; fails if P(ratio <= {summary['tolerance']:g}) is rejected at "
             f"{summary['per_pair_alpha']:.2g} (alpha={summary['alpha']:g} over all pairs)",
             f"  {'task':16} {'estimator':20} {'baseline':>10} {'now':>10} {'ratio':>6} "
             f"{'p':>8}  verdict"]
    order = {"REGRESSION": 0, "ERROR": 1}
    for r in sorted(rows, key=lambda r: (order.get(r.status, 2), r.task, r.estimator)):
        ratio = "-" if math.isnan(r.ratio) else f"{r.ratio:6.2f}"
        p = "-" if math.isnan(r.p_value) else f"{r.p_value:8.1e}"
        extra = ""
        entry = current["pairs"].get(f"{r.task}/{r.estimator}", {})
        if "bias_rms" in entry:
            extra = f" [bias rms {entry['bias_rms']:.2e}, |z| {entry['bias_z']:.1f}]"
        note = f"  ({r.note})" if r.note else ""
        lines.append(f"  {r.task:16} {r.estimator:20} {_fmt(r.base_var):>10} "
                     f"{_fmt(r.cur_var):>10} {ratio:>6} {p:>8}  {r.status}{extra}{note}")
    return lines


# --- command line --------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench check",
        description="Gradient-variance regression gate (exit 1 on a regression) and a "
                    "timing report (never enforced). See docs/ci_gate.md.")
    up = p.add_mutually_exclusive_group()
    up.add_argument("--update", nargs="*", metavar="NAME", default=None,
                    help="rewrite the baselines on purpose: all of them, or only those "
                         "of the estimators NAME ...")
    up.add_argument("--update-missing", action="store_true",
                    help="add baselines for (task, estimator) pairs that have none")
    p.add_argument("--estimators", default=None, help="comma list (default: all registered)")
    p.add_argument("--tasks", default=",".join(TASKS),
                   help=f"comma list (default: {','.join(TASKS)})")
    p.add_argument("--seed", type=int, default=None,
                   help=f"sampling seed (default {CHECK_SEED} for a check, {UPDATE_SEED} "
                        "for --update)")
    p.add_argument("--tolerance", type=float, default=1.2,
                   help="variance ratio tolerated before the test (default 1.2)")
    p.add_argument("--alpha", type=float, default=1e-3,
                   help="false-alarm rate of a whole check run (default 0.001)")
    p.add_argument("--no-timing", action="store_true", help="skip the timing benchmarks")
    p.add_argument("--verbose", action="store_true", help="show the pytest-benchmark output")
    p.add_argument("--plant-noise", metavar="NAME", default=None,
                   help="self-test: double NAME's gradient noise; the gate must fail")
    p.add_argument("--device", default="cpu", help="device (default cpu)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: steadier timings on a busy machine)")
    p.add_argument("--baselines", default=str(BASELINE_DIR), help="baseline folder")
    p.add_argument("--out", default=str(DEFAULT_OUT),
                   help="where this run's JSON goes (default .benchmarks/check)")
    return p


def _names(arg: str | None, allowed: list[str], key: str) -> list[str]:
    if arg is None:
        return list(allowed)
    got = [s.strip() for s in arg.split(",") if s.strip()]
    bad = [g for g in got if g not in allowed]
    if bad or not got:
        raise CheckError(f"{key}: unknown {bad[0] if bad else '(empty)'!r}; "
                         f"allowed: {', '.join(allowed)}")
    return got


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        return _main(args)
    except CheckError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(args) -> int:
    settings = Settings()
    if args.threads < 1:
        raise CheckError(f"--threads must be >= 1, got {args.threads}")
    if not args.tolerance >= 1.0:
        raise CheckError(f"--tolerance must be >= 1 (a ratio), got {args.tolerance}")
    if not 0.0 < args.alpha < 1.0:
        raise CheckError(f"--alpha must be in (0, 1), got {args.alpha}")
    torch.set_num_threads(args.threads)
    names = estimators.names()
    est_names = _names(args.estimators, names, "--estimators")
    task_names = _names(args.tasks, list(TASKS), "--tasks")
    if args.plant_noise is not None and args.plant_noise not in names:
        raise CheckError(f"--plant-noise: unknown estimator {args.plant_noise!r}; "
                         f"allowed: {', '.join(names)}")
    updating = args.update is not None or args.update_missing
    if updating and args.plant_noise:
        raise CheckError("--plant-noise is a self-test; it cannot write baselines")
    if args.update:
        est_names = _names(",".join(args.update), names, "--update")
    seed = args.seed if args.seed is not None else (UPDATE_SEED if updating else CHECK_SEED)
    base_dir, out_dir = Path(args.baselines), Path(args.out)
    var_path, time_path = base_dir / VARIANCE_FILE, base_dir / TIMING_FILE
    full_update = args.update is not None and not args.update

    if updating:
        old = read_json(var_path) if var_path.exists() else None
    else:
        old = read_json(var_path)
    pairs = all_pairs(task_names, est_names)
    if args.update_missing and old is not None:
        have = {k for k, e in old.get("pairs", {}).items() if e.get("status") == "measured"}
        pairs = [p for p in pairs if f"{p[0]}/{p[1]}" not in have]
        if not pairs:
            print("every registered (task, estimator) pair has a baseline; nothing to add")
            return 0
        est_names = sorted({e for _, e in pairs})
        task_names = [t for t in task_names if any(p[0] == t for p in pairs)]

    factories = {}
    if args.plant_noise:
        factories[args.plant_noise] = lambda: DoubledNoise(
            make_estimator(args.plant_noise, settings.model_seed))

    def progress(entry):
        v = entry.get("grad_var")
        print(f"  measured {entry['task']}/{entry['estimator']}: {entry['status']}"
              + (f" grad_var={v:.3e}" if v is not None else ""), file=sys.stderr, flush=True)

    print(f"bench check: measuring {len(pairs)} pairs (seed {seed})", file=sys.stderr)
    current = measure(settings, pairs, seed, args.device, factories, progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "grad_variance.json", current)

    if updating:
        if old is not None:
            try:
                check_compatible(old, current)
            except CheckError as e:
                whole = set(task_names) == set(TASKS) and set(est_names) == set(names)
                if not (full_update and whole):
                    raise CheckError(f"{e} (a partial update cannot merge into it)") from None
                print(f"note: replacing the whole baseline: {e}", file=sys.stderr)
                old = None
        if old is not None and full_update:  # drop estimators no longer registered
            old = dict(old, pairs={k: v for k, v in old["pairs"].items()
                                   if v["estimator"] in names})
        errors = [k for k, e in current["pairs"].items() if e["status"] == "error"]
        for k in errors:
            print(f"error: {k}: {current['pairs'][k]['reason']}", file=sys.stderr)
        write_json(var_path, baseline_record(current, old))
        print(f"wrote {sum(e['status'] == 'measured' for e in current['pairs'].values())} "
              f"baselines to {var_path}")
        if not args.no_timing:
            code = run_timing(out_dir / "benchmark.json", task_names, est_names, args.device,
                              verbose=args.verbose)
            if code == 0:
                new = add_variance(json.loads((out_dir / "benchmark.json").read_text()), current)
                old_t = read_json(time_path) if time_path.exists() and old is not None else None
                write_json(time_path, merge_timing(new, old_t))
                print(f"wrote timings to {time_path}")
            else:
                print(f"error: the timing suite failed (pytest exit {code})", file=sys.stderr)
                return 1
        return 1 if errors else 0

    if old.get("seed") == seed:
        print(f"warning: sampling seed {seed} is the baseline's own; the test assumes "
              "independent seeds (use another --seed)", file=sys.stderr)
    check_compatible(old, current)
    rows, summary = compare(old, current, args.tolerance, args.alpha)
    report = variance_table(rows, summary, current)
    current["verdicts"] = [dataclasses.asdict(r) for r in rows]
    current["summary"] = summary
    write_json(out_dir / "grad_variance.json", current)
    code = 1 if any(r.fails for r in rows) else 0

    if not args.no_timing:
        bench_json = out_dir / "benchmark.json"
        tcode = run_timing(bench_json, task_names, est_names, args.device, args.plant_noise,
                               args.verbose)
        if tcode != 0:
            print(f"error: the timing suite failed (pytest exit {tcode})", file=sys.stderr)
            code = 1
        if bench_json.exists():
            doc = add_variance(json.loads(bench_json.read_text()), current)
            write_json(bench_json, doc)
            base_t = json.loads(time_path.read_text()) if time_path.exists() else None
            print()
            print("\n".join(timing_table(doc, base_t)))
    print()
    print("\n".join(report))
    failed = [r for r in rows if r.fails]
    new = [r for r in rows if r.status == "new"]
    if new:
        print(f"{len(new)} new pair(s) without a baseline (not failing): "
              "add them with `python -m bench check --update-missing`")
    print(f"results: {out_dir}")
    if failed:
        print(f"FAILED: {', '.join(f'{r.task}/{r.estimator} ({r.status})' for r in failed)}")
        print("if the change is intended, rewrite those baselines with "
              f"`python -m bench check --update {' '.join(sorted({r.estimator for r in failed}))}`")
    else:
        print("passed")
    return code
