"""Options of the timing suite; `python -m bench check` passes them."""

import pytest

from bench.gate import measure, problems, settings


def pytest_addoption(parser):
    g = parser.getgroup("bench check")
    g.addoption("--check-tasks", default=",".join(settings.TASKS),
                help="comma list of tasks to time (default: all)")
    g.addoption("--check-estimators", default="",
                help="comma list of estimators to time (default: all registered)")
    g.addoption("--check-device", default="cpu", help="device (default cpu)")
    g.addoption("--check-plant", default="",
                help="self-test: time this estimator with its gradient noise doubled")


def pytest_generate_tests(metafunc):
    if {"task", "name"} <= set(metafunc.fixturenames):
        import estimators

        opt = metafunc.config.getoption
        names = [n for n in opt("--check-estimators").split(",") if n] or estimators.names()
        task_names = [t for t in opt("--check-tasks").split(",") if t]
        pairs = measure.all_pairs(task_names, names)
        metafunc.parametrize("task,name", pairs, ids=[f"{t}-{n}" for t, n in pairs])


@pytest.fixture(scope="session")
def problem_for(request):
    """The fixed problem of a task (built once per session)."""
    device = request.config.getoption("--check-device")
    fixed = settings.Settings()
    built = {}

    def get(task):
        if task not in built:
            built[task] = problems.build_problem(task, fixed, device)
        return built[task]
    return get
