"""Per-run cost of every cell of Jang et al.'s (2017) Table 1 at full length, measured
here before any grid is planned or started.

    python -m bench table1_cost [--steps 200] [--warmup 50] [--data_dir DIR]
                                [--rows sbn ...] [--columns SF DARN ...] [--out FILE]

For each row (task) x column (estimator) the run's config is composed as the grid
composes it -- the paper's protocol (``+experiment=jang_{vae,sbn}_protocol`` with
``+experiment/jang_protocol_estimator=...``) where those configs exist, else today's
``jang_vae`` / ``jang_sbn`` experiments with ``estimator=NAME`` (the output says
which) -- and built as bench.train builds it (same seed, task, estimator, trainer).
``--warmup`` steps, then ``--steps`` timed training steps on the CPU-time clock, one
thread. Extrapolated to a run of ``--run_steps`` (50,000 = 100 epochs of batch 100)
with its evaluations: every ``eval.every`` steps the single-sample -ELBO on 30,000
images and grad_var (``eval.grad_samples`` estimates, timed once here), and at the end
test_nll with m = ``eval.nll_samples`` on the 10,000 test images (timed on
``--nll_images`` images). The CSV (``--out``) is what results/jang_table1/README.md's
plan and ``python -m bench table1`` ("not run yet: planned cost") read.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time

import torch

ROWS = ("sbn", "sbn_categorical", "bernoulli_vae", "categorical_vae")
COLUMNS = ("SF", "DARN", "MuProp", "ST", "Annealed ST", "Gumbel-Softmax", "ST Gumbel-Softmax")
# column -> (estimator name, protocol file for the VAE rows, protocol file for the SBN rows)
ESTIMATORS = {
    "SF": ("reinforce", "reinforce", "reinforce"),
    "DARN": ("darn", "darn", "darn"),
    "MuProp": ("muprop", "muprop", "muprop"),
    "ST": ("straight_through", "straight_through", "straight_through"),
    "Annealed ST": ("annealed_st", "annealed_st_r1e-4_n1000", "annealed_st_tau1"),
    "Gumbel-Softmax": ("gumbel_softmax", "gumbel_softmax_r1e-4_n1000", "gumbel_softmax_tau1"),
    "ST Gumbel-Softmax": ("st_gumbel_softmax", "st_gumbel_softmax_r1e-4_n1000",
                          "st_gumbel_softmax_tau1"),
}


def protocol_available() -> bool:
    from bench.paths import CONF_DIR

    return (CONF_DIR / "experiment" / "jang_vae_protocol.yaml").exists()


def overrides_for(row: str, column: str, protocol: bool, data_dir) -> list[str]:
    vae = row.endswith("vae")
    name, vae_file, sbn_file = ESTIMATORS[column]
    if protocol:
        exp = "jang_vae_protocol" if vae else "jang_sbn_protocol"
        est = [f"+experiment/jang_protocol_estimator={vae_file if vae else sbn_file}"]
    else:
        exp = "jang_vae" if vae else "jang_sbn"
        est = [f"+experiment/jang_estimator={name}"] if vae else [f"estimator={name}"]
    out = [f"+experiment={exp}", *est, f"task={row}"]
    return out + ([f"data_dir={data_dir}"] if data_dir else [])


def compose(overrides):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from bench.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return OmegaConf.to_container(hcompose("config", overrides=overrides), resolve=True)


def build(cfg, data):
    """Task, estimator and trainer, as bench.train.run builds them."""
    import inspect

    import tasks
    from bench import optim
    from bench.config import build_estimator
    from bench.loop import Trainer

    torch.manual_seed(int(cfg["seed"]))
    task = tasks.build(cfg["task"], data, torch.device("cpu"))
    est = build_estimator(cfg)
    est.check_latents(*task.latent_shape)
    args = [task, est, data, int(cfg["train"]["batch_size"]), float(cfg["train"]["lr"])]
    if hasattr(optim, "optimizer_options") and len(inspect.signature(Trainer).parameters) > 5:
        args.append(optim.optimizer_options(cfg["train"]))
    return task, est, Trainer(*args)


def measure(cfg, data, steps: int, warmup: int, nll_images: int) -> dict:
    clock = time.thread_time
    task, est, trainer = build(cfg, data)
    task.train()
    for t in range(warmup):
        trainer.step(t)
    times = []
    for t in range(warmup, warmup + steps):
        t0 = clock()
        trainer.step(t)
        times.append(clock() - t0)
    ev = cfg["eval"]
    x = data.eval_split("train")[:trainer.batch_size]
    t0 = clock()
    m = int(ev.get("grad_samples", 0))
    if m:
        task.grad_variance(x, est, m)
    t_gv = clock() - t0
    task.eval()
    t0 = clock()
    xs = data.eval_split("test")[:1000]
    task.neg_elbo(xs)
    t_elbo = (clock() - t0) * 30  # 30,000 images per evaluation
    t0 = clock()
    s = int(ev.get("nll_samples", 0))
    xt = data.eval_split("test")[:nll_images]
    for i in range(0, xt.shape[0], 100):
        task.nll(xt[i:i + 100], s)
    t_nll = (clock() - t0) * data.size("test") / max(1, xt.shape[0]) if s else 0.0
    return {"step_s": statistics.median(times), "grad_var_s": t_gv,
            "elbo_eval_s": t_elbo, "final_nll_s": t_nll}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench table1_cost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    ap.add_argument("--columns", nargs="+", default=list(COLUMNS), choices=COLUMNS)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--run_steps", type=int, default=50_000)
    ap.add_argument("--eval_every", type=int, default=5000)
    ap.add_argument("--nll_images", type=int, default=100)
    ap.add_argument("--data_dir", default=None)
    ap.add_argument("--out", default=None, help="CSV of the per-cell costs")
    a = ap.parse_args(argv)
    from tasks import datasets

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    protocol = protocol_available()
    which = ("the paper protocol (+experiment=jang_*_protocol)" if protocol else
             "today's jang_vae / jang_sbn experiments (protocol configs not found)")
    print(f"configs: {which}; "
          f"{a.warmup} warm-up + {a.steps} timed steps, CPU-time clock, 1 thread; "
          f"extrapolated to {a.run_steps} steps, evaluations every {a.eval_every}", flush=True)
    rows, data = [], None
    hdr = (f"{'row':16} {'column':18} {'ms/step':>8} {'train h':>8} {'evals h':>8} "
           f"{'nll h':>6} {'run h':>6}")
    print(hdr, flush=True)
    for row in a.rows:
        for col in a.columns:
            cfg = compose(overrides_for(row, col, protocol, a.data_dir))
            if data is None:
                data = datasets.load(cfg["dataset"], cfg.get("data_dir"), torch.device("cpu"))
            m = measure(cfg, data, a.steps, a.warmup, a.nll_images)
            n_evals = a.run_steps // a.eval_every + 1
            train_h = m["step_s"] * a.run_steps / 3600
            evals_h = n_evals * (m["grad_var_s"] + m["elbo_eval_s"]) / 3600
            nll_h = m["final_nll_s"] / 3600
            rec = {"row": row, "column": col, "estimator": cfg["estimator"]["name"],
                   "protocol": "jang2017-sgd" if protocol else "today", "ms_per_step":
                   1000 * m["step_s"], "train_h": train_h, "evals_h": evals_h, "nll_h": nll_h,
                   "run_h": train_h + evals_h + nll_h, "run_steps": a.run_steps}
            rows.append(rec)
            print(f"{row:16} {col:18} {rec['ms_per_step']:8.2f} {train_h:8.3f} {evals_h:8.3f} "
                  f"{nll_h:6.3f} {rec['run_h']:6.3f}", flush=True)
    total = sum(r["run_h"] for r in rows)
    print(f"one run of every cell: {total:.2f} CPU-hours")
    if a.out:
        with open(a.out, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            for r in rows:
                w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
