"""Time per estimate, measured by the pytest-benchmark suite in benchmarks/:
running it, its table (reported, never enforced) and its baseline file."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from .settings import BENCH_DIR, CheckError

# --- timing (pytest-benchmark) ---------------------------------------------------------

def run_timing(json_path: Path, task_names, est_names, device="cpu",
               plant: str | None = None, verbose=False) -> int:
    """Run the pytest-benchmark suite in benchmarks/ in this process; its JSON
    lands at ``json_path``. pytest's own output is shown with ``verbose`` or when
    the suite fails. Returns pytest's exit code."""

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


def machine_kind(doc: dict | None) -> str:
    """The kind of machine a benchmark file was measured on: CPU brand and count (and
    the device where not a CPU). Timings compare only between the same kind."""
    mi = (doc or {}).get("machine_info", {})
    cpu = mi.get("cpu", {}) if isinstance(mi.get("cpu"), dict) else {}
    return f"{cpu.get('brand_raw') or mi.get('processor') or '?'} x{cpu.get('count', '?')}"


def _entry_kind(b: dict, doc: dict | None) -> str:
    return b.get("extra_info", {}).get("machine") or machine_kind(doc)


def timing_table(current: dict, baseline: dict | None) -> list[str]:
    """Medians now and in the baseline; a ratio only where the baseline entry was
    measured on the same kind of machine (CPU brand and count), since a ratio across
    machines reads as a speed-up or slow-down that did not happen."""
    def entries(doc):
        return {(b["extra_info"].get("task"), b["extra_info"].get("estimator")): b
                for b in (doc or {}).get("benchmarks", []) if "task" in b.get("extra_info", {})}

    def machine(doc):
        mi = (doc or {}).get("machine_info", {})
        return f"{machine_kind(doc)} cpus, python {mi.get('python_version', '?')}"

    here = machine_kind(current)
    now, base = entries(current), entries(baseline)
    lines = ["time per estimate (median; reported, never enforced)",
             f"  this run : {machine(current)}",
             f"  baseline : {machine(baseline) if baseline else '(none)'}"]
    other = sorted({_entry_kind(b, baseline) for b in base.values()} - {here})
    if other:
        lines.append(f"  ratios only against baselines measured on this kind of machine "
                     f"({here}); other entries were measured on: {'; '.join(other)}")
    lines.append(f"  {'task':16} {'estimator':20} {'baseline':>11} {'now':>11} {'ratio':>7}")
    for key in sorted(now):
        t = now[key]["stats"]["median"]
        b = base.get(key)
        if b is None:
            bs, ratio = f"{'-':>11}", "    new"
        else:
            bt = b["stats"]["median"]
            bs = f"{bt * 1e3:9.3f}ms"
            ratio = f"{t / bt:7.2f}" if _entry_kind(b, baseline) == here else "  other"
        lines.append(f"  {key[0]:16} {key[1]:20} {bs} {t * 1e3:9.3f}ms {ratio}")
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
    """Timing baseline: the new run's (task, estimator) entries replace the old ones;
    each entry records the kind of machine it was measured on (extra_info.machine)."""
    kind = machine_kind(new)
    for b in new.get("benchmarks", []):
        b.setdefault("extra_info", {})["machine"] = kind
    if not old:
        return new
    for b in old.get("benchmarks", []):  # entries from before: the file's own machine
        b.setdefault("extra_info", {}).setdefault("machine", machine_kind(old))

    def key(b):
        ei = b.get("extra_info", {})
        return ei.get("task"), ei.get("estimator")
    fresh = {key(b) for b in new.get("benchmarks", [])}
    keep = [b for b in old.get("benchmarks", []) if key(b) not in fresh]
    out = dict(new)
    out["benchmarks"] = sorted(keep + new.get("benchmarks", []), key=lambda b: b["name"])
    return out
