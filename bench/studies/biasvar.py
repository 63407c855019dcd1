"""`python -m bench biasvar [OVERRIDES...]`: bias and variance of every estimator
on tasks whose exact gradient is known (conf/experiment/bias_variance.yaml,
block ``biasvar``; Hydra overrides such as ``biasvar.estimates=200`` apply).

For each task the parameters are fixed; each estimator draws M independent
estimates g_1..g_M of the gradient of the task's training objective with respect
to the encoder parameters (the logits' parameters on the toys), and with the
exact gradient g (closed form on the toys; the ``exact`` estimator enumerating
every latent state on the small VAEs) reports, P being the number of parameters
and Sigma the estimates' covariance:

* ``rel_bias``        |mean_m g_m - g| / |g|  (includes Monte Carlo noise);
* ``noise_floor``     sqrt(tr Sigma / M) / |g|: what ``rel_bias`` is for an unbiased
                      estimator (E|mean - g|^2 = tr Sigma / M);
* ``rel_bias_corr``   sqrt(max(0, |mean - g|^2 - tr Sigma / M)) / |g|: the bias with
                      the noise removed (about 0 when unbiased);
* ``bias_stat``       T = |mean - g|^2 / (tr Sigma / M), about 1 without bias;
  ``bias_dof``        d = (tr Sigma)^2 / tr Sigma^2, the effective dimension, and
  ``bias_detected``   whether T exceeds the (1 - alpha / R) quantile of its no-bias
                      law, about chi2_d / d: a family-wise error rate ``bias_alpha``
                      (0.1%) over the R rows of the whole study (Bonferroni). The
                      law is a Gaussian approximation; the estimators' declared
                      unbiasedness is checked exactly by the test suite.
* ``variance``        tr Sigma / P (the ``grad_var`` definition: mean over parameters);
* ``rel_std``         sqrt(tr Sigma) / |g|;
* ``mse``             mean_m |g_m - g|^2 / P, ``rel_rmse`` sqrt(mean_m |g_m - g|^2) / |g|;
* ``cosine``          mean_m cos(g_m, g): how well one estimate points the right way;
* ``ms_per_estimate`` median wall time of one training step's gradient (the task's
                      loss and its backward on the task's batch, control-variate
                      updates included), in milliseconds, ``threads`` threads;
                      ``ms_min`` the fastest of those steps (less sensitive to other
                      load on the machine; the figure shows it).
* ``f_evals``         evaluations of f for one estimate on the task's batch, counted
                      by the runner's counter (bench.counting) on a training call;
                      ``evals_per_example`` that over the batch size (REINFORCE: 1,
                      leave-one-out and VIMCO: S, exact: K^N);
* ``var_x_evals``     variance * evals_per_example, and ``rel_std_eq`` =
                      rel_std * sqrt(evals_per_example): the equal-evaluations view.
                      Averaging c independent estimates divides the variance by c, so
                      at a fixed budget of evaluations an estimator that costs c times
                      more has c times its variance relative to a one-evaluation
                      estimator; bias does not average away.

Estimators that learn from their calls (control variates) are first called
``warmup`` times in training mode at the same point (the model is not updated),
then measured frozen. Every estimator is compared on the same discrete
objective: relaxed estimators' relaxation error counts as bias.

Writes bias_variance.csv, bias_variance.md and bias_variance.{png,pdf} under
``out_dir``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from scipy.stats import chi2

import estimators
import tasks
from tasks import datasets

from ..counting import attach
from ..paths import CONF_DIR, REPO_DIR
from .biasvar_output import figure, markdown

COLUMNS = ["task", "estimator", "declared_unbiased", "estimates", "params", "grad_norm",
           "rel_bias", "noise_floor", "rel_bias_corr", "bias_stat", "bias_dof", "bias_detected",
           "variance", "rel_std", "mse", "rel_rmse", "cosine", "ms_per_estimate", "ms_min",
           "f_evals", "evals_per_example", "var_x_evals", "rel_std_eq"]


def load_settings(overrides: list[str]) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=bias_variance", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)["biasvar"]


# --- gradients ----------------------------------------------------------------

def vae_gradients(task, x, est, m: int) -> torch.Tensor:
    """m independent estimates of the encoder gradient of a VAE's objective,
    (m, P): one estimator call on m stacked copies of the batch, pulled back to
    the encoder by m batched vector-Jacobian products (as ``VAE.grad_variance``)."""
    logits = task.logits(x)
    rep = logits.detach().repeat(m, 1, 1).requires_grad_(True)
    x_rep = x.repeat(m, 1)
    with est.frozen():
        out = est(rep, lambda z: task.recon(x_rep, z))
        obj = out.surrogate + task.kl(est, out, rep).mean()
    (g,) = torch.autograd.grad(obj * m, rep)
    params = task.encoder_parameters()
    grads = torch.autograd.grad(logits, params, grad_outputs=g.view(m, *logits.shape),
                                is_grads_batched=True)
    return torch.cat([gp.reshape(m, -1) for gp in grads], 1)


def estimates(task, x, est, m: int) -> torch.Tensor:
    if hasattr(task, "estimator_gradients"):
        return task.estimator_gradients(x, est, m)
    return vae_gradients(task, x, est, m)


def exact_gradient(task, x) -> torch.Tensor:
    if hasattr(task, "exact_gradient"):
        return task.exact_gradient()
    est = estimators.get("exact")
    est.check_latents(*task.latent_shape)
    return vae_gradients(task, x, est, 1)[0]


ROUNDING = 1e-4  # a relative bias below this is float32 rounding, not a bias


def bias_found(stat: float, dof: float, rel_bias: float, alpha: float) -> bool:
    """T above the (1 - alpha) quantile of chi2_d / d, and a relative bias above
    float32 rounding (an estimator that is exact up to rounding, such as IndeCateR
    on a separable f, has a tiny variance that rounding errors dominate); with no
    variance (the reference), the rounding test alone."""
    if rel_bias <= ROUNDING:
        return False
    if math.isnan(stat):
        return True
    return stat > float(chi2.ppf(1 - alpha, dof)) / dof


def summarise(g_hat: torch.Tensor, g: torch.Tensor, alpha: float = 1e-3) -> dict[str, float]:
    g_hat, g = g_hat.double(), g.double()
    m, p = g_hat.shape
    norm = float(g.norm())
    mean = g_hat.mean(0)
    tr = float(g_hat.var(0).sum()) if m > 1 else 0.0
    bias2 = float((mean - g).pow(2).sum())
    err2 = (g_hat - g).pow(2).sum(1)
    cos = torch.nn.functional.cosine_similarity(g_hat, g.expand_as(g_hat), dim=1)
    # Is |mean - g|^2 more than noise? Under no bias, mean - g ~ N(0, Sigma / M), so
    # T = |mean - g|^2 / (tr Sigma / M) ~ sum_i l_i chi2_1 / sum_i l_i (l: eigenvalues of
    # Sigma), about chi2_d / d with d = (tr Sigma)^2 / tr Sigma^2 (Satterthwaite); tr Sigma^2
    # from the M x M Gram matrix of the centred estimates.
    if tr > 0:
        c = g_hat - mean
        gram = c @ c.T / (m - 1)
        d = tr ** 2 / float(gram.pow(2).sum())
        stat = bias2 / (tr / m)
    else:
        stat = d = math.nan
    return {
        "estimates": m, "params": p, "grad_norm": norm,
        "rel_bias": math.sqrt(bias2) / norm,
        "noise_floor": math.sqrt(tr / m) / norm,
        "rel_bias_corr": math.sqrt(max(0.0, bias2 - tr / m)) / norm,
        "bias_stat": stat, "bias_dof": d,
        "bias_detected": bias_found(stat, d, math.sqrt(bias2) / norm, alpha),
        "variance": tr / p,
        "rel_std": math.sqrt(tr) / norm,
        "mse": float(err2.mean()) / p,
        "rel_rmse": math.sqrt(float(err2.mean())) / norm,
        "cosine": float(cos.mean()),
    }


def step_ms(task, x, est, repeats: int) -> tuple[float, float]:
    params = list(task.parameters())
    times = []
    for _ in range(repeats + 2):
        t0 = time.perf_counter()
        obj, _ = task.loss(x, est)
        obj.backward()
        times.append(time.perf_counter() - t0)
        for p in params:
            p.grad = None
    return 1e3 * statistics.median(times[2:]), 1e3 * min(times[2:])


# --- tasks --------------------------------------------------------------------

def build_task(spec: dict, seed: int):
    """The task at its fixed point, and the batch the estimates are taken on."""
    torch.manual_seed(seed)
    ds = spec.get("dataset")
    data = datasets.load(ds, None, "cpu") if ds else None
    task = tasks.build(spec["task"], data, "cpu")
    x = None
    if data is not None:
        pre = spec.get("pretrain")
        if pre:
            est = estimators.get(pre["estimator"])
            opt = torch.optim.Adam(task.parameters(), lr=float(pre["lr"]))
            n = data.size("train")
            for step in range(int(pre["steps"])):
                est.set_step(step)
                idx = torch.randint(0, n, (min(int(pre["batch_size"]), n),))
                obj, _ = task.loss(data.train_batch(idx), est)
                opt.zero_grad(set_to_none=True)
                obj.backward()
                opt.step()
            opt.zero_grad(set_to_none=True)
        g = torch.Generator().manual_seed(seed)
        train = data.eval_split("train")
        x = train[torch.randperm(train.shape[0], generator=g)[: int(spec.get("batch", 16))]]
    return task, x


def applicable(name: str, task) -> bool:
    try:
        estimators.get(name).check_latents(*task.latent_shape)
    except estimators.EstimatorConfigError:
        return False
    return True


def run_study(settings: dict, log=print) -> list[dict]:
    torch.set_num_threads(int(settings.get("threads", 1)))
    names = settings.get("estimators", "all")
    names = estimators.names() if names == "all" else list(names)
    seed = int(settings.get("seed", 0))
    rows = []
    for spec in settings["tasks"]:
        label = spec["label"]
        task, x = build_task(spec, seed)
        for p in task.parameters():
            p.requires_grad_(True)
        g = exact_gradient(task, x).detach()
        m = int(spec.get("estimates", settings["estimates"]))
        log(f"[biasvar] {label}: |g| = {float(g.norm()):.3g}, {g.numel()} parameters, M = {m}")
        for name in names:
            if not applicable(name, task):
                log(f"[biasvar]   {name}: not applicable")
                continue
            torch.manual_seed(seed)
            est = estimators.get(name)
            counter = attach(est)  # one training-mode call, counted: it also builds
            task.loss(x, est)      # any control variate
            f_evals = counter.n
            if est.extra_parameters():
                for _ in range(int(settings.get("warmup", 0))):
                    task.loss(x, est)
            t0 = time.perf_counter()
            row = {"task": label, "estimator": name,
                   "declared_unbiased": bool(type(est).unbiased)}
            # the reference is deterministic: two draws show it (and its zero variance)
            row.update(summarise(estimates(task, x, est, 2 if name == "exact" else m).detach(), g))
            row["ms_per_estimate"], row["ms_min"] = step_ms(task, x, est,
                                                            int(settings["timing_repeats"]))
            batch = x.shape[0] if x is not None else int(getattr(task, "batch", 1))
            row["f_evals"] = f_evals
            row["evals_per_example"] = c = f_evals / batch
            row["var_x_evals"] = row["variance"] * c
            row["rel_std_eq"] = row["rel_std"] * math.sqrt(c)
            rows.append(row)
            log(f"[biasvar]   {name:18s} rel_bias {row['rel_bias']:.3g} "
                f"(floor {row['noise_floor']:.3g}) rel_std {row['rel_std']:.3g} "
                f"cos {row['cosine']:.3f} {row['ms_per_estimate']:.2f} ms "
                f"{row['evals_per_example']:g} evals/example "
                f"[{time.perf_counter() - t0:.1f}s]")
    alpha = float(settings.get("bias_alpha", 1e-3)) / max(1, len(rows))
    for row in rows:
        row["bias_detected"] = bias_found(row["bias_stat"], row["bias_dof"], row["rel_bias"],
                                          alpha)
    return rows


def main(argv: list[str]) -> int:
    import pandas as pd

    ap = argparse.ArgumentParser(prog="python -m bench biasvar", description=__doc__.split("\n")[0])
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. biasvar.estimates=200")
    ap.add_argument("--figure-only", action="store_true",
                    help="redraw the figure from the CSV already in out_dir")
    a = ap.parse_args(argv)
    settings = load_settings(a.overrides)
    out = Path(settings["out_dir"])
    out = out if out.is_absolute() else REPO_DIR / out
    if a.figure_only:
        figure(pd.read_csv(out / "bias_variance.csv"), out / "bias_variance")
        print(f"[biasvar] redrew {out}/bias_variance.{{png,pdf}}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    from ..loop import git_sha

    sha = git_sha()  # before the outputs are rewritten (they are tracked files)
    t0 = time.perf_counter()
    rows = run_study(settings)
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.to_csv(out / "bias_variance.csv", index=False)
    header = (
        "# Bias and variance of gradient estimators against the exact gradient\n\n"
        f"Generated by `python -m bench biasvar` (conf/experiment/bias_variance.yaml) on "
        f"{dt.date.today().isoformat()}, git {sha}, torch {torch.__version__}, "
        f"{platform.machine()} CPU, {settings.get('threads', 1)} thread(s), "
        f"{time.perf_counter() - t0:.0f} s in all. Columns are defined in "
        "bench/studies/biasvar.py; "
        "rows are sorted by relative RMSE. Every estimator is measured on the discrete "
        "objective, with each estimator's default settings (conf/estimator/). "
        "Control variates were trained for `warmup` calls at the same point first.")
    (out / "bias_variance.md").write_text(markdown(df, header) + "\n")
    figure(df, out / "bias_variance")
    print(f"[biasvar] wrote {out}/bias_variance.{{csv,md,png,pdf}} "
          f"in {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
