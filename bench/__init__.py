"""The vdiskio benchmark (bench/run.py)."""
