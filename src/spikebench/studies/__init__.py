"""Studies: grids of runs plus the analyses and attacks on them, cached by config and resumable."""

from spikebench.studies.definitions import Mode, plan_study
from spikebench.studies.runner import Plan, execute_plan
from spikebench.studies.study import STUDIES

__all__ = ["STUDIES", "Mode", "Plan", "execute_plan", "plan_study"]
