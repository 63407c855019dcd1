"""The report's curves: the band is ±1 standard error over seeds and only from 3
seeds on, the untrained model's far-off point is named instead of squeezing the
curves, and axes carry plain tick labels (no offset notation) on a short grid."""

import math

import pandas as pd
import pytest

from bench.report import figures


def _rows(values_by_seed, steps=(0, 100, 200, 300), metric="test_neg_elbo"):
    rows = []
    for seed, values in enumerate(values_by_seed):
        for step, v in zip(steps, values):
            rows.append({"row": "r", "cell": "est", "run_id": f"run{seed}", "step": step,
                         "metric": metric, "value": v})
    return pd.DataFrame(rows)


def test_band_is_one_standard_error_from_three_seeds():
    three = figures.curve_data(_rows([[50, 26, 25, 24], [50, 27, 26, 25], [50, 28, 27, 26]]),
                               "test_neg_elbo")
    last = three[three["step"] == 300].iloc[0]
    se = pd.Series([24.0, 25.0, 26.0]).std(ddof=1) / math.sqrt(3)
    assert last["y"] == pytest.approx(25.0)
    assert (last["lo"], last["hi"]) == pytest.approx((25.0 - se, 25.0 + se))
    two = figures.curve_data(_rows([[50, 26, 25, 24], [50, 27, 26, 25]]), "test_neg_elbo")
    assert two["lo"].isna().all() and two["hi"].isna().all()
    assert "no band" in figures.seeds_caption(two["n"])
    assert "±1 standard error" in figures.seeds_caption(three["n"])


def test_off_scale_start_is_named_not_drawn():
    d = figures.curve_data(_rows([[544, 26, 25.5, 25]]), "test_neg_elbo")
    kept, note = figures._drop_off_scale_start(d, log=False)
    assert 0 not in set(kept["step"]) and "544" in note
    near = figures.curve_data(_rows([[27, 26, 25.5, 25]]), "test_neg_elbo")
    kept, note = figures._drop_off_scale_start(near, log=False)
    assert 0 in set(kept["step"]) and note == ""


def test_short_grid_figures_have_plain_tick_labels(tmp_path):
    df = _rows([[44.5, 25.197, 25.1969, 25.1968]] * 2, steps=(0, 300, 301, 302))
    df["status"] = "complete"
    files = figures.plot_curves(df, ["r"], "test_neg_elbo", "step", tmp_path, "c",
                                "test −ELBO", "step")
    assert files == ["c.png", "c.pdf"] and (tmp_path / "c.png").stat().st_size > 0
    plt = figures.pyplot()
    fig = plt.figure()
    ax = fig.add_subplot()
    ax.plot([300, 301, 302], [25.197, 25.1969, 25.1968])
    figures._style_axis(ax, [25.197, 25.1969, 25.1968], log=False)
    fig.canvas.draw()
    for axis in (ax.xaxis, ax.yaxis):
        assert axis.get_offset_text().get_text() == ""
    plt.close(fig)
