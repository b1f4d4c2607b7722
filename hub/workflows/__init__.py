"""Workflows: a graph of steps run durably by the engine (`engine`), its language (`expressions`), its
checks and walk (`graph`) and what each step does (`steps`)."""

from typing import Final

ADVANCE_JOB: Final = "workflows.advance"
"""The job that advances one run (its subject: the execution id)."""
