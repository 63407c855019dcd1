"""The end of a grid (`python -m bench run -m ...`): one line per config read back
from the store -- status, final test -ELBO and NLL, time -- and the next command."""

from __future__ import annotations

from pathlib import Path


def grid_summary(configs: list[dict]) -> str:
    from .config import config_hash
    from .results import load
    from .stacked import seed_config

    frames, dirs = {}, []
    lines = [f"{'status':10} {'test_neg_elbo':>13} {'test_nll':>9} {'time':>8}  config"]
    for cfg in configs:
        root = str(cfg.get("results_dir", "results"))
        if root not in frames:
            frames[root] = load(root) if Path(root).is_dir() else None
            dirs.append(root)
        df = frames[root]
        seeds = cfg["seeds"] if cfg.get("seeds") is not None else [cfg.get("seed")]
        hashes = ([config_hash(seed_config(cfg, s)) for s in seeds]
                  if cfg.get("seeds") is not None else [config_hash(cfg)])
        for h, seed in zip(hashes, seeds):
            name = (f"{cfg['estimator']['name']} {cfg['task']['name']} {cfg['dataset']['name']} "
                    f"seed={seed}")
            mine = df[df["config_hash"] == h] if df is not None and len(df) else None
            if mine is None or mine.empty:
                lines.append(f"{'missing':10} {'':>13} {'':>9} {'':>8}  {name}")
                continue
            status = str(mine["status"].iloc[0])
            last = mine[mine["step"] == mine["step"].max()]
            vals = dict(zip(last["metric"], last["value"]))
            f = lambda k, v=vals: f"{v[k]:.2f}" if k in v else "-"
            wall = f"{vals['wall_s']:.0f}s" if "wall_s" in vals else "-"
            lines.append(f"{status:10} {f('test_neg_elbo'):>13} {f('test_nll'):>9} {wall:>8}  "
                         f"{name}")
    nxt = " ; ".join(f"python -m bench report {d}" for d in dirs)
    return "\n".join(lines) + f"\nnext: {nxt}   (tables and figures -> {dirs[0]}/report/)"
