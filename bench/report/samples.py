"""Sample and reconstruction figures from the stored models (a missing model or
dataset leaves a gap with its reason)."""

from __future__ import annotations

import json
from pathlib import Path

from .figures import pyplot, save
from .runs import Runs
from .tables import column_order

# --- samples and reconstructions -----------------------------------------------

def _load_task(runs: Runs, rid: str, data_dir, cache: dict):
    import torch

    import tasks
    from tasks import datasets

    cfg = runs.configs.get(rid)
    model = runs.dirs.get(rid, Path("/nonexistent")) / "model.pt"
    if not cfg or not model.exists():
        return None, None, "no saved model"
    ds = cfg["dataset"]
    key = json.dumps(ds, sort_keys=True)
    if key not in cache:
        where = data_dir or cfg.get("data_dir")
        try:
            cache[key] = datasets.load(ds, where, "cpu")
        except Exception as e:  # a missing dataset leaves a gap, with the reason
            cache[key] = f"dataset {ds.get('name')!r} not loaded ({str(e).splitlines()[0]})"
    data = cache[key]
    if isinstance(data, str):
        return None, None, data
    task = tasks.build(cfg["task"], data, "cpu")
    try:  # a truncated or foreign file leaves a gap, never an error
        task.load_state_dict(torch.load(model, map_location="cpu", weights_only=True))
    except Exception as e:  # noqa: BLE001
        return None, None, f"{model} not loaded ({(str(e).splitlines() or [''])[0][:80]})"
    task.eval()
    return task, data, ""


def _images(task, x, n):
    """(top row, rows of panels) for one trained model: reconstructions and
    prior samples for a VAE; completions of the lower half for an SBN."""
    import torch

    torch.manual_seed(0)
    with torch.no_grad():
        if hasattr(task, "complete"):
            return task.complete(x, samples=1)[0], None
        if hasattr(task, "decoder") and hasattr(task, "logits"):
            from estimators.base import sample_one_hot

            z = sample_one_hot(task.logits(x))
            recon = torch.sigmoid(task.decoder(z.flatten(-2)))
            log_p = task.log_prior() if hasattr(task, "log_prior") else None
            prior = torch.zeros(task.n, task.k) if log_p is None else log_p
            zs = sample_one_hot(prior.expand(n, task.n, task.k))
            samples = torch.sigmoid(task.decoder(zs.flatten(-2)))
            return recon, samples
    return None, None


_PAD = 0.12  # light grey between images (gray_r: 0 is white, 1 is black ink)


def _mosaic(imgs, shape, pad=1, fill=_PAD):
    import numpy as np

    h, w = shape
    a = np.full((h + pad, len(imgs) * (w + pad)), fill)
    for i, im in enumerate(imgs):
        a[:h, i * (w + pad): i * (w + pad) + w] = im.reshape(h, w)
    return a


def plot_samples(runs: Runs, df, rows, out, data_dir, n=8) -> tuple[list[str], list[str]]:
    """One figure per row: for each estimator (its lowest-seed complete run), the
    reconstructions of n test digits spread over the test split and n samples
    (VAE), or completions of their lower halves (SBN)."""
    import numpy as np

    files, notes, cache = [], [], {}
    if not runs.configs:
        return files, ["samples: no run configs (a rows.csv input): not drawn"]
    done = df[df["status"] == "complete"] if "status" in df else df
    for row in rows:
        d = done[done["row"] == row]
        picks = {}
        for cell, g in d.groupby("cell"):
            g = g.sort_values("seed")
            picks[cell] = g["run_id"].iloc[0]
        panels, shape, top, why, sbn = [], None, None, {}, False
        for cell in column_order(picks):
            task, data, reason = _load_task(runs, picks[cell], data_dir, cache)
            if task is None:
                why[cell] = reason
                continue
            test = data.eval_split("test")
            x = test[::max(1, len(test) // n)][:n]  # spread over the split (it may be sorted)
            recon, samples = _images(task, x, n)
            if recon is None:
                why[cell] = "this task has no image view"
                continue
            shape = tuple(data.image_shape)
            sbn = hasattr(task, "complete")
            top = x.numpy()
            parts = [_mosaic(recon.numpy(), shape)]
            if samples is not None:
                parts += [np.full((shape[0] + 1, 4), 0.0), _mosaic(samples.numpy(), shape)]
            panels.append((cell, np.concatenate(parts, 1)))
        for cell, reason in why.items():
            notes.append(f"samples for {row} / {cell}: {reason}")
        if not panels:
            continue
        plt = pyplot()
        import matplotlib as mpl

        first = _mosaic(top, shape)
        width = panels[0][1].shape[1]
        first = np.concatenate([first, np.full((first.shape[0], width - first.shape[1]), 0.0)], 1)
        stack = [("test digits", first)] + panels
        img = np.concatenate([p for _, p in stack], 0)
        fig, ax = plt.subplots(figsize=(min(14, 0.55 * width / (shape[1] + 1) + 2),
                                        0.62 * len(stack) + 1.2))
        ax.imshow(img, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        rh = shape[0] + 1
        ax.set_yticks([rh * i + shape[0] / 2 for i in range(len(stack))],
                      [name for name, _ in stack])
        ax.set_xticks([])
        ax.grid(False)
        if sbn:
            for i in range(1, len(stack)):
                y = rh * i + shape[0] // 2 - 0.5
                ax.axhline(y, color="tab:red", lw=0.6, alpha=0.7)
            title = ("SBN: upper half given, lower half = p(x_l = 1 | h) for one draw of h "
                     "(red line: the split)")
        else:
            title = ("left: reconstructions p(x = 1 | z), z ~ q(z | x) of the test digits; "
                     "right: samples p(x = 1 | z), z ~ prior")
        ax.set_title(f"{row}\n{title}", fontsize=9)
        for s in ax.spines.values():
            s.set_visible(False)
        mpl.rcParams.update({})
        safe = "".join(ch if ch.isalnum() else "_" for ch in row).strip("_")
        files += save(fig, out, f"samples_{safe}")
    return files, notes
