"""`python -m bench COMMAND`: the command line (run, report, check and the studies).

``run`` takes Hydra overrides. Before Hydra starts any job, every job of the
(multi)run is composed and checked, so a bad name or setting stops everything
with one line naming the key -- not a traceback after half a grid has trained.
"""

from __future__ import annotations

import sys

EXAMPLES = """examples (`bench ...` is the same as `python -m bench ...`):
  python -m bench run estimator=gumbel_softmax task=categorical_vae
  python -m bench run -m estimator=reinforce,gumbel_softmax task=bernoulli_vae seed=0,1,2
  python -m bench run seeds=[0,1,2,3] estimator=gumbel_softmax   # 4 seeds trained together
  python -m bench run +experiment=NAME
  python -m bench run dataset=binarized_mnist data_dir=PATH train.steps=1500
  python -m bench select RESULTS_DIR --metric valid_neg_elbo   # lr etc. chosen on validation
"""

GROUPS = ("estimator", "task", "dataset", "experiment", "launcher", "logger", "hydra/launcher")
HYDRA_FLAGS_WITH_VALUE = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir",
                          "-cd", "--package", "-p", "--experimental-rerun", "--info", "-i",
                          "--cfg", "-c", "--shell-completion", "-sc"}


def _split_args(args: list[str]) -> tuple[list[str], list[str], bool]:
    flags, overrides, multirun = [], [], False
    it = iter(args)
    for a in it:
        if a in ("-m", "--multirun"):
            multirun = True
            flags.append(a)
        elif a.startswith("-"):
            flags.append(a)
            if a in HYDRA_FLAGS_WITH_VALUE and a not in ("--info", "-i"):
                flags.append(next(it, ""))
        else:
            overrides.append(a)
    return flags, overrides, multirun


def _config_dir(flags: list[str]):
    """The folder given with --config-dir/-cd (searched after conf/), or None."""
    from pathlib import Path

    for i, f in enumerate(flags[:-1]):
        if f in ("--config-dir", "-cd"):
            return Path(flags[i + 1]).resolve()
    return None


def _check_group_choices(overrides: list[str], extra_dir=None) -> None:
    """One-line errors for unknown config-group options (estimator=foo, ...)."""
    from .config import ConfigError
    from .paths import CONF_DIR

    for o in overrides:
        key, sep, value = o.lstrip("+~").partition("=")
        if not sep or key not in GROUPS:
            continue
        folders = [CONF_DIR / key] + ([extra_dir / key] if extra_dir else [])
        allowed = sorted({p.stem for f in folders if f.is_dir() for p in f.glob("*.yaml")})
        if key == "hydra/launcher":
            continue  # Hydra's own plugins live outside conf/
        for v in _sweep_values(value):
            if v not in allowed:
                raise ConfigError(f"unknown {key} {v!r}; allowed: {', '.join(allowed)}")


def _sweep_values(value: str) -> list[str]:
    value = value.strip()
    if value.startswith("choice(") and value.endswith(")"):
        value = value[len("choice("):-1]
    return [v.strip().strip("'\"") for v in value.split(",") if v.strip()]


def _check_seed_keys(overrides: list[str]) -> None:
    """``seeds=[...]`` replaces ``seed``: refuse both on one command line."""
    from .config import ConfigError

    keys = {o.lstrip("+~").partition("=")[0] for o in overrides if "=" in o}
    if {"seed", "seeds"} <= keys:
        raise ConfigError("seeds=[...] replaces seed; give one or the other, not both")


def job_configs(overrides: list[str], multirun: bool, check_code: bool = False,
                extra_dir=None) -> list[dict]:
    """Compose every job's config as Hydra will (sweeps expanded), resolved. With
    ``check_code``, refuse a composed ``hydra`` node that would run code
    (bench.trust). ``extra_dir``: a --config-dir, searched as Hydra will."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from . import keys
    from .paths import CONF_DIR

    parser = OverridesParser.create()
    if extra_dir is not None:
        overrides = [f"hydra.searchpath=[file://{extra_dir}]", *overrides]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        plain = [s for s, o in zip(overrides, parser.parse_overrides(overrides))
                 if not o.is_sweep_override()]
        # the schema of the same group choices (searched in a --config-dir too)
        search = [o for o in overrides if o.startswith("hydra.searchpath=")]
        keys.check(plain, OmegaConf.to_container(compose(
            "config", overrides=search + keys.group_overrides(plain, CONF_DIR))), CONF_DIR)
        base = compose("config", overrides=plain, return_hydra_config=True)
        if check_code:
            from .trust import check_hydra_config

            check_hydra_config(OmegaConf.to_container(base.hydra, resolve=False))
        # an experiment may set hydra.mode: MULTIRUN, making -m implicit
        multirun = multirun or str(OmegaConf.select(base, "hydra.mode")) == "RunMode.MULTIRUN"
        if not multirun:
            jobs = [overrides]
        else:
            # sweep parameters an experiment sets, then the command line (which wins)
            params = OmegaConf.select(base, "hydra.sweeper.params") or {}
            args = [f"{k}={v}" for k, v in params.items()] + overrides
            batches = BasicSweeper.split_arguments(parser.parse_overrides(args), None)
            jobs = [job for batch in batches for job in batch]
        out, schemas = [], {}
        for job in jobs:
            groups = tuple(search + keys.group_overrides(list(job), CONF_DIR))
            if groups not in schemas:  # the config of the same groups, without the values
                schemas[groups] = OmegaConf.to_container(compose("config", overrides=list(groups)))
            keys.check(list(job), schemas[groups], CONF_DIR)
            cfg = compose("config", overrides=list(job))
            out.append(OmegaConf.to_container(cfg, resolve=True))
        return out


def _one_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    if "Could not find 'hydra/launcher/" in lines[0]:
        name = lines[0].split("hydra/launcher/")[1].split("'")[0]
        return (f"hydra/launcher={name} needs its Hydra plugin: pip install "
                f"hydra-{name.split('_')[0]}-launcher")
    if lines[0].startswith("Could not override") and "'" in lines[0]:
        key = lines[0].split("'")[1]
        return f"unknown config key {key} (no such option; check the spelling)"
    return " ".join(lines[:2]) if len(lines) > 1 and len(lines[0]) < 40 else lines[0]


def _writable(results_dirs) -> None:
    """One line naming a results_dir that cannot be written (before Hydra makes its
    log folder there and fails with a traceback)."""
    import tempfile
    from pathlib import Path

    from .config import ConfigError

    for d in sorted(set(results_dirs)):
        try:
            Path(d).mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=d):
                pass
        except OSError as e:
            raise ConfigError(f"results_dir {d} is not writable: {e.strerror or e}") from None


class Terminated(KeyboardInterrupt):
    """SIGTERM (what Slurm sends at preemption), handled like Ctrl-C."""


def _on_sigterm(signum, frame):
    raise Terminated()


def cmd_run(args: list[str]) -> int:
    import os
    import signal
    import socket

    from .config import ConfigError
    from .jobs import validate
    from .trust import allowed, check_flags_and_overrides

    flags, overrides, multirun = _split_args(args)
    allow_code = allowed(flags)
    flags = [f for f in flags if f != "--allow-code"]
    info_only = any(f in ("--cfg", "-c", "--info", "-i", "--help", "-h", "--hydra-help",
                          "--shell-completion", "-sc") for f in flags)
    configs = []
    try:
        if not allow_code:
            check_flags_and_overrides(flags, overrides)
        if not info_only:
            extra = _config_dir(flags)
            _check_group_choices(overrides, extra)
            _check_seed_keys(overrides)
            configs = job_configs(overrides, multirun, check_code=not allow_code,
                                  extra_dir=extra)
            for c in configs:
                validate(c)
            _writable(c["results_dir"] for c in configs)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # Hydra's own composition/override errors
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    if len(configs) > 1:
        print(f"bench: {len(configs)} jobs checked; starting the grid", file=sys.stderr)
    from . import app

    # each grid its own Hydra log folder (conf/config.yaml: hydra.run.dir, sweep.dir)
    # (for this command only: a process that runs `bench run` in-process, such as a test
    # session, must not hand its id to the next `bench run` it starts as a subprocess)
    run_id_before = os.environ.get("BENCH_RUN_ID")
    os.environ.setdefault("BENCH_RUN_ID", f"{socket.gethostname()}-{os.getpid()}")
    sys.argv = ["bench run", *flags, *overrides]
    if any(f in ("--shell-completion", "-sc") for f in flags):
        _completion_env()
        sys.argv[0] = "bench"  # the console command the completion script registers
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        app.main()
    except KeyboardInterrupt as e:
        how = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"{how}: every row written so far is kept; run the same command again "
              "to resume (completed configs are skipped)", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except SystemExit as e:  # SIGTERM during training: a checkpoint was written first
        if e.code != 128 + signal.SIGTERM:
            raise
        print("terminated (SIGTERM): every row written so far is kept, and a checkpoint; "
              "run the same command again to resume", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)
        if run_id_before is None:
            os.environ.pop("BENCH_RUN_ID", None)
    _compact(c["results_dir"] for c in configs)
    if not info_only and len(configs) > 1:
        from .summary import grid_summary

        print(grid_summary(configs), file=sys.stderr)
    return 0


def _compact(results_dirs) -> None:
    """Compact the finished runs of each store the grid wrote (bench.store.compact),
    once there are enough of them to be worth a part."""
    from .store.compact import compact

    for d in sorted(set(results_dirs)):
        try:
            part, n = compact(d, min_runs=20)
        except OSError as e:  # the rows are safe in their run folders either way
            print(f"bench: store not compacted ({e})", file=sys.stderr)
            continue
        if part is not None:
            print(f"bench: compacted {n} finished runs into {part}", file=sys.stderr)


def _completion_env() -> None:
    """Hydra's shell completion sees the whole line (``bench run estimator=re``): drop
    the ``run`` subcommand from COMP_LINE (and COMP_POINT) so Hydra reads overrides."""
    import os
    import re

    line = os.environ.get("COMP_LINE")
    if line is None:
        return
    m = re.match(r"^(\s*\S+)(\s+run)(\s|$)", line)
    if m:
        os.environ["COMP_LINE"] = line[:m.end(1)] + line[m.end(2):]
        point = int(os.environ.get("COMP_POINT", len(line)))
        os.environ["COMP_POINT"] = str(max(m.end(1), point - len(m.group(2))))


def _module_main(module: str):
    """A command that hands its arguments to ``bench.<module>.main``."""
    def cmd(args: list[str]) -> int:
        import importlib

        return int(importlib.import_module(f"bench.{module}").main(args) or 0)
    return cmd


# name -> (handler, one line for --help)
COMMANDS = {
    "run": (cmd_run, "train: one config, or a grid with -m (Hydra overrides)"),
    "report": (_module_main("report.page"), "tables, figures and REPORT.md from a store"),
    "select": (_module_main("report.select"),
               "hyperparameters chosen on validation, test metrics of the choice"),
    "table1": (_module_main("report.table1"), "Jang et al. Table 1 from a store (REPORT.md)"),
    "check": (_module_main("gate.cli"), "gradient-variance regression gate (CI)"),
    "store": (_module_main("store.cli"), "check a results store (verify, --repair) or compact it"),
    "biasvar": (_module_main("studies.biasvar"), "bias/variance study on exact-gradient tasks"),
    "speed": (_module_main("studies.speed"), "training-step throughput against references"),
    "gradvar_cost": (_module_main("studies.gradvar_cost"), "cost of grad_var against a step"),
    "evalcost": (_module_main("studies.evalcost"), "cost of the final test_nll, before/after"),
    "table1_cost": (_module_main("studies.table1_cost"), "Jang Table 1: per-run cost of each cell"),
    "ssl_speedup": (_module_main("studies.ssl_speedup"),
                    "M2: sampled label against marginalisation, K = 10..100"),
    "ssl_select": (_module_main("studies.ssl_select"), "M2: alpha chosen on validation"),
    "storebench": (_module_main("studies.storebench"),
                   "load/report time and memory on a synthetic store of N runs"),
}


def usage() -> str:
    lines = ["usage: bench COMMAND [ARGS...]   (or python -m bench COMMAND; COMMAND --help "
             "for its options)", "",
             "commands:"]
    lines += [f"  {name:13} {doc}" for name, (_, doc) in COMMANDS.items()]
    return "\n".join(lines) + "\n\n" + EXAMPLES


def entry() -> None:
    """The ``bench`` console command (pyproject's [project.scripts])."""
    sys.exit(main(sys.argv[1:]))


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-sc", "--shell-completion"):  # completion queries: `bench -sc query=bash`
        return cmd_run(argv)
    cmd, rest = argv[0], argv[1:]
    if cmd in COMMANDS:
        return COMMANDS[cmd][0](rest)
    print(f"error: unknown command {cmd!r}; allowed: {', '.join(COMMANDS)}", file=sys.stderr)
    return 2
