"""`python -m bench table1` on a small planted store (rows written through the store's
own API, no training): the hyperparameters chosen on validation, mean +- 95 % CI over
seeds, the published value and the difference, the m = 1000 bound beside the VAE
-ELBO, rank agreement, 'still falling', evidence for large gaps, and 'not run yet'
with the planned cost."""

import math

import pandas as pd
import pytest
from scipy import stats

from bench.config import config_hash
from bench.report import table1
from bench.results import Store

FINAL = 1000  # final runs in the planted store (selection runs: 200 steps)


def plant(store, task, est, seed, steps, lr, valid, test, nll=None, falling=0.0,
          status="complete", rate=None, rising=0.0, peak=0.6, wall=None):
    cfg = {"task": {"name": task}, "estimator": {"name": est}, "seed": seed,
           "train": {"steps": steps, "lr": lr}, "report": {"protocol": "jang2017-sgd"}}
    if rate is not None:
        cfg["estimator"].update(anneal_rate=rate, anneal_every=1000)
    meta = {"estimator": est, "task": task, "dataset": "binarized_mnist", "seed": seed,
            "temperature": 1.0, "device": "cpu", "git_sha": "x", "config": cfg}
    rec = Store(store).start(config_hash(cfg), meta)
    for i, step in enumerate(range(0, steps + 1, steps // 5)):
        frac = step / steps
        v = valid + 20 * (1 - frac) ** 3 + falling * (1 - frac)  # falling: still at the end
        v += rising * max(0.0, frac - peak)  # rising: worse again after `peak` of training
        m = {"valid_neg_elbo": v}
        if step == steps:
            m["test_neg_elbo"] = test
            if nll is not None:
                m["test_nll"] = nll
        rec.write(step, m, float(i))
    if status != "incomplete":
        rec.finish(status, **({} if wall is None else {"wall_s": wall}))


@pytest.fixture
def store(tmp_path):
    s = tmp_path / "store"
    # SBN: reinforce selected at lr 1e-4 (lower valid) over 1e-3; final 3 seeds
    for lr, valid in ((1e-3, 80.0), (1e-4, 75.0)):
        plant(s, "sbn", "reinforce", 0, 200, lr, valid, valid)
    for seed, v in enumerate((70.0, 71.0, 75.0)):
        plant(s, "sbn", "reinforce", seed, FINAL, 1e-4, v, v, nll=v)
    # a final run at the rejected lr must not count
    plant(s, "sbn", "reinforce", 5, FINAL, 1e-3, 10.0, 10.0, nll=10.0)
    for est, v in (("gumbel_softmax", 58.0), ("straight_through", 59.5), ("darn", 64.0)):
        plant(s, "sbn", est, 0, 200, 1e-4, v, v)
        for seed in range(3):
            plant(s, "sbn", est, seed, FINAL, 1e-4, v + seed * 0.1, v, nll=v + seed * 0.1,
                  falling=3.0 if est == "darn" else 0.0)
    # VAE categorical: gumbel_softmax, tau schedule chosen (r=1e-4 better than 1e-5)
    for rate, valid in ((1e-5, 110.0), (1e-4, 104.0)):
        plant(s, "categorical_vae", "gumbel_softmax", 0, 200, 3e-4, valid, valid, rate=rate)
    for seed, wall in enumerate((1440.0, 1800.0)):  # 24 and 30 minutes on this machine
        plant(s, "categorical_vae", "gumbel_softmax", seed, FINAL, 3e-4, 103.0, 103.0 + seed,
              nll=95.0 + seed, rate=1e-4, wall=wall)
    plant(s, "categorical_vae", "reinforce", 0, FINAL, 1e-4, 111.0, 111.0, status="incomplete")
    # VAE Bernoulli DARN: best by 60 % of training, then worse again (unstable at its LR)
    plant(s, "bernoulli_vae", "darn", 0, 200, 3e-3, 129.0, 129.0)
    plant(s, "bernoulli_vae", "darn", 0, FINAL, 3e-3, 121.0, 157.0, nll=156.0, rising=90.0)
    plant(s, "bernoulli_vae", "darn", 1, FINAL, 3e-3, 121.0, 157.0, nll=156.0, rising=90.0,
          peak=0.8)  # the second seed's best comes later, at step 800
    return s


@pytest.fixture
def cost(tmp_path):
    p = tmp_path / "cost.csv"
    pd.DataFrame([{"row": "bernoulli_vae", "column": "SF", "run_h": 0.5},
                  {"row": "categorical_vae", "column": "SF", "run_h": 0.4},
                  {"row": "categorical_vae", "column": "Gumbel-Softmax", "run_h": 0.3}]
                 ).to_csv(p, index=False)
    return p


def test_table1_report(tmp_path, store, cost):
    out = tmp_path / "out"
    assert table1.main([str(store), "--out", str(out), "--cost", str(cost), "--final_steps",
                        str(FINAL), "--seeds", "3", "--check", "unstable"]) == 0
    page = (out / "REPORT.md").read_text()
    t = pd.read_csv(out / "table1.csv").set_index(["row", "column"])
    assert len(t) == 28

    sf = t.loc[("sbn", "SF")]
    m, h = 72.0, stats.t.ppf(0.975, 2) * pd.Series([70.0, 71.0, 75.0]).std() / math.sqrt(3)
    assert sf["mean"] == pytest.approx(m) and sf["ci95"] == pytest.approx(h)
    assert sf["seeds"] == 3 and sf["setting"] == "lr=0.0001"  # the rejected-lr run left out
    assert sf["published"] == 72.0 and sf["diff"] == pytest.approx(0.0)

    gs = t.loc[("categorical_vae", "Gumbel-Softmax")]
    assert gs["setting"] == "lr=0.0003, r=0.0001, N=1000"  # the schedule chosen on valid
    assert gs["mean"] == pytest.approx(103.5) and gs["nll_mean"] == pytest.approx(95.5)
    assert gs["diff"] == pytest.approx(103.5 - 101.5)
    # 2 of 3 seeds: a number, and the third seed's cost still planned -- at the median
    # wall clock of the cell's own finished runs (27 min), not cost.csv's 0.3 h
    assert gs["seeds"] == 2 and gs["planned_h"] == pytest.approx(0.45)
    assert "103.5 ± " in page and "(n=2); 1 more seed(s) planned" in page
    assert "Cells with final runs: 6 of 28, 4 of them with all 3 seeds" in page
    # planned: 0.45 (GS, measured) + 3 x 0.5 (Bernoulli SF) + 3 x 0.4 (categorical SF, cost.csv)
    assert t["planned_h"].sum() == pytest.approx(0.45 + 1.5 + 1.2)
    assert "finished final runs here for 1 of these cells, cost.csv for 2)" in page

    darn_vae = t.loc[("bernoulli_vae", "DARN")]  # planted: best at steps 600 and 800
    rise0 = 121.0 + 90 * 0.4 - (121.0 + 20 * 0.4 ** 3)
    rise1 = 121.0 + 90 * 0.2 - (121.0 + 20 * 0.2 ** 3)
    assert darn_vae["rise"] == pytest.approx((rise0 + rise1) / 2)
    line = next(ln for ln in page.splitlines() if ln.startswith("| DARN |") and "157.0" in ln)
    rise = (rise0 + rise1) / 2
    assert "| rising (" in line and f"unstable: valid −ELBO {rise:.1f} nats above its best " \
        "(every seed's best reached by step 800)" in line
    assert "unstable" not in next(ln for ln in page.splitlines()
                                  if ln.startswith("| DARN |") and "64.1" in ln)

    darn = t.loc[("sbn", "DARN")]
    assert darn["drop_last20"] > table1.FALLING  # planted: still falling
    assert t.loc[("sbn", "ST"), "drop_last20"] < table1.FALLING  # levelled off
    assert darn["diff"] == pytest.approx(64.1 - 59.7)
    line = next(ln for ln in page.splitlines() if ln.startswith("| DARN |") and "64.1" in ln)
    assert "still falling" in line  # > 2 nats from the paper: evidence given

    sf_vae = t.loc[("bernoulli_vae", "SF")]
    assert sf_vae["status"] == "not run yet" and sf_vae["planned_h"] == pytest.approx(1.5)
    assert "in progress" in page  # the incomplete categorical reinforce run
    assert t.loc[("categorical_vae", "SF"), "planned_h"] == pytest.approx(1.2)

    # rank agreement on the SBN row: ours GS < ST < DARN < SF, paper GS < ST < DARN < SF
    assert "best here **Gumbel-Softmax**, in the paper (among these) **Gumbel-Softmax**" in page
    assert "Spearman ρ = 1.00" in page
    assert (out / "figures" / "valid_sbn.png").exists()


def test_table1_uses_a_selection_csv(tmp_path, store):
    sel = tmp_path / "chosen.csv"
    pd.DataFrame([{"task": "sbn", "estimator": "reinforce", "train.lr": 1e-3}]).to_csv(sel)
    out = tmp_path / "out"
    table1.main([str(store), "--out", str(out), "--select", str(sel), "--final_steps",
                 str(FINAL), "--no-figures"])
    t = pd.read_csv(out / "table1.csv").set_index(["row", "column"])
    assert t.loc[("sbn", "SF"), "mean"] == pytest.approx(10.0)  # the CSV's choice
    assert t.loc[("sbn", "SF"), "seeds"] == 1


def test_table1_without_a_store_is_one_line(tmp_path, capsys):
    assert table1.main([str(tmp_path / "nothing")]) == 2
    assert "no results store" in capsys.readouterr().err


def test_final_commands_at_the_chosen_settings(store, capsys):
    assert table1.main([str(store), "--final-commands", "--partial", "--final_steps",
                        str(FINAL), "--check", "unstable"]) == 0
    lines = capsys.readouterr().out.splitlines()
    sf = [ln for ln in lines
          if "jang_protocol_estimator=reinforce " in ln and "task=sbn " in ln]
    assert [ln.split("seed=")[1].split()[0] for ln in sf] == ["0", "1", "2"]
    assert all("train.lr=0.0001" in ln and f"train.steps={FINAL}" in ln for ln in sf)
    # in passes: seed 0 of every cell before any cell's seed 1
    seeds = [int(ln.split("seed=")[1].split()[0]) for ln in lines if ln.startswith("nice")]
    assert seeds == sorted(seeds) and len(set(seeds)) == 3
    gs = next(ln for ln in lines if "task=categorical_vae" in ln and "gumbel_softmax" in ln)
    assert "+experiment/jang_protocol_estimator=gumbel_softmax_r1e-4_n1000 " in gs
    assert "train.lr=0.0003" in gs
    assert any(ln.startswith("# sbn MuProp: no setting chosen") for ln in lines)


def test_selection_from_a_store_of_its_own(tmp_path):
    sel, fin = tmp_path / "selection", tmp_path / "final"
    for lr, valid in ((1e-3, 60.0), (1e-4, 65.0)):
        plant(sel, "sbn", "straight_through", 0, 200, lr, valid, valid)
        plant(fin, "sbn", "straight_through", 0, FINAL, lr, valid, valid, nll=valid)
    out = tmp_path / "out"
    assert table1.main([str(fin), "--out", str(out), "--final_steps", str(FINAL),
                        "--no-figures"]) == 0  # finds 'selection' beside 'final'
    t = pd.read_csv(out / "table1.csv").set_index(["row", "column"])
    assert t.loc[("sbn", "ST"), "mean"] == pytest.approx(60.0)
    assert "selection runs of " in (out / "REPORT.md").read_text()


def test_the_choice_is_select_s_a_diverged_seed_scores_worst(tmp_path):
    """table1 chooses with `bench select`'s rule: a setting whose seed diverged scores
    worst (counting only its finished seeds would pick lr 1e-3 here), and both commands
    pick the same setting from the same store."""
    from bench.report.select import select_store
    from bench.report.table1_runs import chosen_settings

    sel = tmp_path / "selection"
    plant(sel, "sbn", "straight_through", 0, 200, 1e-3, 50.0, 50.0)
    plant(sel, "sbn", "straight_through", 1, 200, 1e-3, 50.0, 50.0, status="diverged")
    for seed in (0, 1):
        plant(sel, "sbn", "straight_through", seed, 200, 1e-4, 55.0, 55.0)
    ours = chosen_settings(tmp_path / "final", selection=sel, final_steps=FINAL)
    assert ours[("sbn", "straight_through")]["lr"] == pytest.approx(1e-4)
    _, chosen, *_ = select_store(sel)
    assert set(chosen["train.lr"]) == {1e-4}


def test_final_commands_wait_for_the_whole_selection_grid(tmp_path, capsys):
    """A cell whose planned grid (six learning rates; x two annealing rates for the
    Gumbel-Softmax family on the VAE rows) is not all run gets no command, only a line
    naming what is missing -- a final run chosen from half a grid would be unfair."""
    from bench.report.table1_runs import LRS, RATES

    sel = tmp_path / "selection"
    for lr in LRS:  # sbn ST: the whole grid
        plant(sel, "sbn", "straight_through", 0, 200, lr, 60.0 + lr, 60.0)
    for lr in LRS:  # sbn Gumbel-Softmax at tau = 1 fixed (anneal_rate 0): no schedule grid
        plant(sel, "sbn", "gumbel_softmax", 0, 200, lr, 58.0 + lr, 58.0, rate=0.0)
    for lr in LRS[:-1]:  # sbn SF: 3e-3 not run
        plant(sel, "sbn", "reinforce", 0, 200, lr, 70.0, 70.0)
    for lr in LRS:  # VAE Gumbel-Softmax: r = 1e-5 only
        plant(sel, "categorical_vae", "gumbel_softmax", 0, 200, lr, 100.0, 100.0,
              rate=RATES[0])
    args = [str(tmp_path / "final"), "--selection", str(sel), "--final-commands",
            "--final_steps", str(FINAL)]
    assert table1.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("jang_protocol_estimator=straight_through " in ln and "task=sbn " in ln
               for ln in lines)
    assert any("jang_protocol_estimator=gumbel_softmax_tau1 " in ln and "task=sbn " in ln
               for ln in lines)
    assert "# sbn SF: selection incomplete, 1 planned setting(s) not run (lr=0.003)" in \
        "\n".join(lines)
    gs = next(ln for ln in lines if ln.startswith("# categorical_vae Gumbel-Softmax"))
    assert "6 planned setting(s) not run" in gs and "r=0.0001" in gs
    assert not any(ln.startswith("nice") and "reinforce" in ln for ln in lines)
    for lr in LRS:  # sbn Annealed ST: tau = 1 and two slope schedules; r = 1e-4 best
        for rate in (0.0, *RATES):
            plant(sel, "sbn", "annealed_st", 0, 200, lr, 60.0 - (rate == RATES[1]), 60.0,
                  rate=rate)
    plant(sel, "sbn_categorical", "annealed_st", 0, 200, 1e-3, 60.0, 60.0, rate=0.0)
    assert table1.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("jang_protocol_estimator=annealed_st_r1e-4_n1000 " in ln and "task=sbn " in ln
               and "train.lr=1e-05 " in ln for ln in lines)
    st = next(ln for ln in lines if ln.startswith("# sbn_categorical Annealed ST"))
    assert "17 planned setting(s) not run" in st and "lr=0.001, r=1e-05" in st
    assert table1.main(args + ["--partial"]) == 0
    assert any(ln.startswith("nice") and "reinforce" in ln
               for ln in capsys.readouterr().out.splitlines())


def test_the_report_shows_the_selection_grid(tmp_path, store):
    """REPORT.md's 'Selection grid': every selection run's final valid -ELBO by learning
    rate, the chosen one in bold, what of the planned grid is not run; and a cell without
    final runs shows its chosen setting."""
    plant(store, "sbn_categorical", "darn", 0, 200, 1e-3, 90.0, 90.0)  # no final runs
    out = tmp_path / "out"
    assert table1.main([str(store), "--out", str(out), "--final_steps", str(FINAL),
                        "--no-figures"]) == 0
    page = (out / "REPORT.md").read_text()
    grid = page[page.index("## Selection grid"):]
    sbn = grid[grid.index("(`sbn`)"):grid.index("(`categorical_vae`)")]
    sf = next(ln for ln in sbn.splitlines() if ln.startswith("| SF |"))
    cells = [c.strip() for c in sf.split("|")[1:-1]]
    assert cells[0:2] == ["SF", "-"]
    assert cells[2 + 2] == "**75.0**" and cells[2 + 4] == "80.0"  # lr 1e-4 chosen, 1e-3 not
    assert cells[-1] == "4 not run"
    vae = grid[grid.index("(`categorical_vae`)"):]
    gs = [ln for ln in vae.splitlines() if "r=" in ln]
    assert len(gs) == 2 and "**104.0**" in gs[1] and "110.0" in gs[0]
    main = page[:page.index("## Selection grid")]
    darn = main[main.index("(`sbn_categorical`)"):]
    darn = next(ln for ln in darn.splitlines() if ln.startswith("| DARN |"))
    assert "not run yet" in darn and "lr=0.001 (selection incomplete)" in darn


def test_the_figure_leaves_out_a_rejected_lr(store):
    from bench.report.table1_runs import run_table
    from bench.results import load

    runs, df = run_table(store), load(store, all_runs=True)
    curves = df[df["metric"] == "valid_neg_elbo"]
    sf = table1.row_curves(curves, runs, "sbn", FINAL, {"reinforce": {"lr": 1e-4}})["SF"]
    assert sf.iloc[-1] == pytest.approx(72.0)  # seeds 0-2 at 1e-4; the 1e-3 run ends at 10


@pytest.mark.parametrize("rise,word", [(0.3, None), (1.5, "within the full-length check's"),
                                       (2.5, "unstable:")])
def test_evidence_calls_unstable_only_what_the_check_calls_unstable(rise, word):
    c = {"drop_last20": 0.0, "rise": rise, "best_step": 800, "check": {}, "m": (1, 0, 3)}
    text = "; ".join(table1.evidence(c, None, "m"))
    assert ("unstable:" in text) == (rise > table1.UNSTABLE)
    assert ("above its best" in text) == (rise > table1.FALLING)
    if word:
        assert word in text
