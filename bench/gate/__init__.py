"""The gradient-variance gate (`python -m bench check`) and its timing report."""
