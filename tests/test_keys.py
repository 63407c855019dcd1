"""Strict config keys: a key the app does not use is refused before anything trains,
with one line and a suggestion -- also when added with `+` -- while the keys that
experiments, Hydra and the report use still go through."""

import pytest

from bench import cli


def _run(capsys, *args):
    rc = cli.main(["run", *args])
    return rc, capsys.readouterr().err.strip()


@pytest.mark.parametrize("args, expect", [
    (["estimatr=reinforce"], "unknown config key estimatr; did you mean estimator?"),
    (["+estimatr=reinforce", "train.steps=50"], "did you mean estimator?"),
    (["+train.stepz=10"], "unknown config key train.stepz; did you mean train.steps?"),
    (["train.stepz=10"], "did you mean train.steps?"),
    (["-m", "seed=0,1", "+train.stepz=10"], "did you mean train.steps?"),
    (["+evl.every=3"], "did you mean eval.every?"),
    (["+dataset.foo=1"], "the options of dataset: name, threshold"),
    (["estimator.temprature=1"], "did you mean estimator.temperature?"),
    (["+estimator.temprature=1"], "estimator.temprature is not an option"),
    (["+experiment=jang_vae_quick", "+train.stepz=1"], "did you mean train.steps?"),
])
def test_unknown_keys_are_refused_with_a_suggestion(tmp_path, capsys, args, expect):
    rc, err = _run(capsys, *args, f"results_dir={tmp_path}")
    assert rc == 2
    assert len(err.splitlines()) == 1 and expect in err, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args", [
    ["+report.experiment=mine"],                      # the report's labels
    ["+experiment=jang_vae_quick"],                   # an experiment and the keys it adds
    ["+experiment=jang_vae_quick", "report.reduced=false"],
    ["+experiment=bias_variance", "biasvar.estimates=20"],
    ["hydra.job.chdir=false", "hydra.verbose=true"],  # Hydra's own settings
    ["launcher=joblib", "hydra.launcher.n_jobs=1"],   # a launcher preset and its keys
    ["task.learn_prior=true", "dataset.threshold=4"],  # options of the chosen groups
    ["seeds=[0,1]", "progress.every_s=5", "~eval.at_start"],
])
def test_keys_the_app_uses_pass(tmp_path, args):
    from bench.paths import CONF_DIR

    overrides = [*args, f"results_dir={tmp_path}"]
    cli._check_group_choices(overrides)
    multirun = any(a.startswith("+experiment=jang") for a in args)
    configs = cli.job_configs(overrides, multirun)
    assert configs and CONF_DIR.is_dir()
