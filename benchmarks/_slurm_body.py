"""The job body of benchmarks/slurm_scale.py's array tasks: it writes a complete, valid
result.json for its exp.json without running a worker (the hand-made result of the unit
tests), so the benchmark times the orchestrator's side of a Slurm campaign, not inference.
A module of its own so that submitit pickles it by name and the node imports it."""

from __future__ import annotations

import socket
from typing import Any

from unit_results import make_result

from llenergymeasure.atomic import write_text_atomic
from llenergymeasure.config.spec import ExperimentSpec
from llenergymeasure.contract import RESULT_FILE
from llenergymeasure.orchestrator.runners import Job
from llenergymeasure.orchestrator.runners.slurm import NodeOutcome


def write_result(job: Job, gap_s: float, node_runner: Any) -> NodeOutcome:  # noqa: ARG001
    spec = ExperimentSpec.model_validate_json(job.exp_path.read_bytes())
    write_text_atomic(job.output_dir / RESULT_FILE, make_result(spec).model_dump_json())
    return NodeOutcome(0, False, socket.gethostname())
