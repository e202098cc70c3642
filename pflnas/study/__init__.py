"""Studies: a grid of searches (spaces × strategies × settings × seeds) run and resumed as one command."""

from pflnas.study.config import StudyConfig, StudyRun, check_runs, load_study
from pflnas.study.runner import StudyOptions, expand_grid, plan_study, run_study

__all__ = [
    "StudyConfig",
    "StudyOptions",
    "StudyRun",
    "check_runs",
    "expand_grid",
    "load_study",
    "plan_study",
    "run_study",
]
