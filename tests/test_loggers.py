"""Experiment trackers: a run with logger=tensorboard leaves event files whose
scalars, read back with TensorBoard's own reader, are the store's rows; the config
goes in as hparams; logger=wandb in offline mode works without a network; a
missing package or unknown tracker is one line before training; the logger does
not change the config's identity (so existing stores still match)."""

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bench import cli, results
from bench.config import config_hash
from bench.jobs import run
from bench.paths import CONF_DIR

SMALL = ["task.encoder_hidden=[16]", "task.decoder_hidden=[16]", "train.batch_size=50",
         "train.steps=6", "eval.every=3", "eval.grad_samples=3", "eval.nll_samples=3"]


def cfg_for(tmp_path, *overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*SMALL, f"results_dir={tmp_path}", *overrides])
        return OmegaConf.to_container(cfg, resolve=True)


def test_tensorboard_event_files_hold_the_stored_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = cfg_for(tmp_path, "logger=tensorboard", "estimator=gumbel_softmax")
    assert run(cfg) == "complete"
    rows = results.load(tmp_path)
    (run_dir,) = list((tmp_path / "tensorboard").iterdir())
    assert run_dir.name == rows["run_id"].iloc[0]
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for metric in ("test_neg_elbo", "train_neg_elbo", "test_nll", "grad_var", "temperature",
                   "step_time_s", "kl", "recon"):
        assert metric in tags, (metric, sorted(tags))
        stored = rows[rows["metric"] == metric].sort_values("step")
        events = acc.Scalars(metric)
        assert [e.step for e in events] == stored["step"].tolist()
        assert [e.value for e in events] == pytest.approx(stored["value"].tolist(), rel=1e-6)
    # the config as hparams (TensorBoard's hparams plugin), with the final metrics
    hp = [EventAccumulator(str(f)) for f in sorted(run_dir.rglob("events.out.tfevents.*"))]
    for a in hp:
        a.Reload()
    hp = [a for a in hp if "_hparams_/session_start_info"
          in a._plugin_to_tag_to_content.get("hparams", {})]
    assert hp, "no hparams summary"
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(
        hp[0].PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["estimator.name"].string_value == "gumbel_softmax"
    assert start.hparams["train.steps"].number_value == 6
    assert hp[0].Scalars("final/test_neg_elbo")[0].value == pytest.approx(
        rows[rows["metric"] == "test_neg_elbo"].sort_values("step")["value"].iloc[-1], rel=1e-6)

def test_logger_does_not_change_the_config_identity(tmp_path):
    assert config_hash(cfg_for(tmp_path)) == config_hash(cfg_for(tmp_path, "logger=tensorboard"))


def test_unknown_logger_is_one_line(tmp_path, capsys):
    assert cli.main(["run", "logger=mlflow", f"results_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown logger 'mlflow'; allowed:") and "wandb" in err


def test_wandb_offline_without_network(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    cfg = cfg_for(tmp_path, "logger=wandb")
    assert run(cfg) == "complete"
    offline = list((tmp_path / "wandb").rglob("offline-run-*"))
    assert offline, list((tmp_path / "wandb").rglob("*"))[:10]
    assert list(offline[0].glob("*.wandb"))
