"""Multi-trial architecture search on Optuna (``pflnas search --strategy evolution|nsga2|random``).

Each trial samples a discrete architecture (:mod:`~pflnas.multitrial.space`), an evaluator scores it
(:class:`TrialEvaluator`: short training in :mod:`~pflnas.multitrial.evaluator`, or a benchmark table), and
a sampler (:mod:`~pflnas.multitrial.samplers`: regularized evolution, NSGA-II, random) proposes the next.
:func:`run_trials` runs a study on any Optuna storage (:mod:`~pflnas.multitrial.storage`) and returns a
:class:`TrialsResult`.
"""

from pflnas.multitrial.objectives import OBJECTIVES, Objective, resolve_objectives
from pflnas.multitrial.runner import (
    SELECTION_RULE,
    SELECTION_RULES,
    TrialEvaluator,
    TrialRecord,
    TrialsResult,
    choose,
    collect_result,
    pareto_front,
    run_trials,
)
from pflnas.multitrial.samplers import (
    STRATEGIES,
    ArchRandomSampler,
    RegularizedEvolutionSampler,
    SeededNSGAIISampler,
    create_sampler,
)
from pflnas.multitrial.space import (
    architecture_params,
    params_to_architecture,
    search_space,
    suggest_architecture,
)
from pflnas.multitrial.storage import HeartbeatJournalStorage, open_storage

__all__ = [
    "OBJECTIVES",
    "SELECTION_RULE",
    "SELECTION_RULES",
    "STRATEGIES",
    "ArchRandomSampler",
    "HeartbeatJournalStorage",
    "Objective",
    "RegularizedEvolutionSampler",
    "SeededNSGAIISampler",
    "TrialEvaluator",
    "TrialRecord",
    "TrialsResult",
    "architecture_params",
    "choose",
    "collect_result",
    "create_sampler",
    "open_storage",
    "params_to_architecture",
    "pareto_front",
    "resolve_objectives",
    "run_trials",
    "search_space",
    "suggest_architecture",
]
