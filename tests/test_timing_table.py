"""`bench check`'s timing table: a ratio only against a baseline entry measured on
the same kind of machine (CPU brand and count), never across machines."""

from bench.gate.timing import machine_kind, merge_timing, timing_table


def _doc(brand, count, medians):
    return {"machine_info": {"cpu": {"brand_raw": brand, "count": count},
                             "python_version": "3.11"},
            "benchmarks": [{"name": f"{t}-{e}", "extra_info": {"task": t, "estimator": e},
                            "stats": {"median": m}} for (t, e), m in medians.items()]}


def test_ratio_only_on_the_same_kind_of_machine():
    pair = ("toy", "reinforce")
    base = _doc("AMD EPYC 7B13", 2, {pair: 0.010})
    same = timing_table(_doc("AMD EPYC 7B13", 2, {pair: 0.005}), base)
    assert same[-1].split()[-1] == "0.50"
    elsewhere = timing_table(_doc("Intel Xeon 8375C", 16, {pair: 0.0014}), base)
    assert elsewhere[-1].split()[-1] == "other"
    assert any("ratios only against baselines measured on this kind of machine" in ln
               and "AMD EPYC 7B13 x2" in ln for ln in elsewhere)
    assert not any(ln.split()[-1] == "0.14" for ln in elsewhere)


def test_merged_baseline_keeps_each_entrys_machine():
    a, b = ("toy", "reinforce"), ("toy", "arm")
    old = _doc("AMD EPYC 7B13", 2, {a: 0.010, b: 0.020})
    new = _doc("Intel Xeon 8375C", 16, {a: 0.002})
    merged = merge_timing(new, old)
    kinds = {x["extra_info"]["estimator"]: x["extra_info"]["machine"]
             for x in merged["benchmarks"]}
    assert kinds == {"reinforce": machine_kind(new), "arm": machine_kind(old)}
    table = timing_table(_doc("Intel Xeon 8375C", 16, {a: 0.002, b: 0.004}), merged)
    ratios = {ln.split()[1]: ln.split()[-1] for ln in table[-2:]}
    assert ratios == {"arm": "other", "reinforce": "1.00"}
