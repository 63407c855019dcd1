"""One-off studies (speed, bias/variance, grad_var cost, M2 speed-up, alpha selection):
each a `python -m bench NAME` command and a `python -m bench.studies.NAME` entry."""
