"""Time per estimate of every registered estimator on the gate's fixed problems.

Run by `python -m bench check` (which adds the gradient variance of each pair to
the JSON's extra_info), or directly:

    python -m pytest benchmarks/ --benchmark-json=out.json

One "estimate" is the estimator's call and the backward pass on a fixed batch of
``Settings.timing_batch`` examples: for the VAEs the task's training loss and its
gradient w.r.t. every parameter (a training step without the optimiser), for the
toy problem the gradient w.r.t. the logits. Timings are reported, never asserted.
"""

import pytest
import torch

from bench.gate import measure, problems, settings


def test_time_per_estimate(benchmark, problem_for, task, name, request):
    problem = problem_for(task)
    est = settings.make_estimator(name)
    if request.config.getoption("--check-plant") == name:
        est = measure.DoubledNoise(est)
    why = problems.refusal(problem, est)
    if why:
        pytest.skip(why)
    step = problem.timed_step(est)
    device = torch.device(request.config.getoption("--check-device"))

    def timed():
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    benchmark.group = task
    benchmark.extra_info.update(task=task, estimator=name, batch=settings.Settings().timing_batch,
                                latent_shape=list(problem.latent_shape), device=str(device))
    torch.manual_seed(0)
    benchmark(timed)
