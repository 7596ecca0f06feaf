"""The launch environment's names, defined in contract.py (the host and the worker share
them); kept here for worker/serving, which the worker's rework will point at contract.py."""

from llenergymeasure.contract import HOST_PID_ENV, LAUNCH_ENV, WORKER_START_ENV

__all__ = ["HOST_PID_ENV", "LAUNCH_ENV", "WORKER_START_ENV"]
