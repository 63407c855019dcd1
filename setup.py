"""Packaging hook: the Hydra configs in conf/ ship inside the wheel as bench/conf/.

conf/ stays at the top of the source tree (where users edit and add YAMLs);
bench.paths finds it there in a checkout and as bench/conf/ once installed."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithConf(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads conf/ from the checkout
        src = Path(__file__).resolve().parent / "conf"
        dst = Path(self.build_lib) / "bench" / "conf"
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithConf})
