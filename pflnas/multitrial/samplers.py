"""Optuna samplers for architecture search: uniform random, regularized evolution, and seeded NSGA-II.

All three draw a trial's randomness from ``(seed, trial number)`` rather than from one stream per process:
a study is then reproducible for a seed with one worker, and several workers started with the same seed on
one shared storage still sample different architectures (their trials have different numbers).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, NSGAIISampler
from optuna.search_space import IntersectionSearchSpace
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from pflnas.strategies.registry import MULTI_TRIAL_STRATEGIES

PARENT_ATTR = "pflnas:parent"  # system attr of an evolved trial: the number of the trial it mutates
MUTATED_ATTR = "pflnas:mutated"  # ... and the name of the parameter it changed


def trial_rng(seed: int | None, number: int, salt: int = 0) -> np.random.Generator:
    """The random stream of trial ``number`` (fresh entropy when ``seed`` is None)."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng([seed & 0xFFFFFFFF, number, salt])


def _categorical(dist: BaseDistribution, where: str) -> CategoricalDistribution:
    if not isinstance(dist, CategoricalDistribution):
        raise ValueError(f"{where}: architecture samplers handle categorical parameters only, got {dist}")
    return dist


class ArchRandomSampler(BaseSampler):
    """Uniform sampling of every parameter, seeded per trial.

    ``search_space`` (name -> categorical) makes the sampler draw all parameters in one relative step;
    without it every parameter is drawn independently as the objective suggests it.
    """

    def __init__(
        self, search_space: Mapping[str, CategoricalDistribution] | None = None, seed: int | None = None
    ) -> None:
        self._space = dict(search_space) if search_space is not None else None
        self._seed = seed

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._space or {})

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        rng = trial_rng(self._seed, trial.number)
        return {name: _draw(rng, _categorical(d, name)) for name, d in search_space.items()}

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        salt = zlib.crc32(param_name.encode())
        return _draw(trial_rng(self._seed, trial.number, salt), _categorical(param_distribution, param_name))


class RegularizedEvolutionSampler(ArchRandomSampler):
    """Regularized (aging) evolution (Real et al., AAAI 2019) as an Optuna sampler, for one objective.

    The population is the ``population`` most recent complete trials of the study (by trial number, so the
    oldest member is removed as each new one finishes: aging). Until the study has that many complete
    trials, architectures are drawn uniformly at random. After that, each new trial draws ``sample_size``
    distinct members of the population, takes the best of them (ties: the older trial) and mutates one
    choice: a parameter with more than one choice, uniformly, gets a different value, uniformly.

    State lives in the study, not in the sampler: several workers sharing a storage evolve one population.
    The parent's number and the mutated parameter are recorded as trial system attributes
    (:data:`PARENT_ATTR`, :data:`MUTATED_ATTR`).
    """

    def __init__(
        self,
        population: int = 10,
        sample_size: int = 3,
        seed: int | None = None,
        search_space: Mapping[str, CategoricalDistribution] | None = None,
    ) -> None:
        if population < 1 or not 1 <= sample_size <= population:
            raise ValueError(
                f"regularized evolution needs population >= 1 and 1 <= sample_size <= population, "
                f"got population={population}, sample_size={sample_size}"
            )
        super().__init__(search_space, seed)
        self.population = population
        self.sample_size = sample_size
        self._intersection = IntersectionSearchSpace()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        if len(study.directions) != 1:
            raise ValueError("regularized evolution optimises one objective; use NSGA-II for two")
        if self._space is not None:
            return dict(self._space)
        return dict(self._intersection.calculate(study))

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        history = [
            t
            for t in study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True)
            if t.number != trial.number and all(name in t.params for name in search_space)
        ]
        if len(history) < self.population:
            return super().sample_relative(study, trial, search_space)
        rng = trial_rng(self._seed, trial.number)
        members = sorted(history, key=lambda t: t.number)[-self.population :]
        picked = sorted(rng.choice(len(members), self.sample_size, replace=False).tolist())
        parent = select_best([members[i] for i in picked], study.direction)
        child = {name: parent.params[name] for name in search_space}
        mutable = [n for n, d in search_space.items() if len(_categorical(d, n).choices) > 1]
        if mutable:
            name = mutable[int(rng.integers(len(mutable)))]
            choices = [c for c in _categorical(search_space[name], name).choices if c != child[name]]
            child[name] = choices[int(rng.integers(len(choices)))]
            study._storage.set_trial_system_attr(trial._trial_id, MUTATED_ATTR, name)
        study._storage.set_trial_system_attr(trial._trial_id, PARENT_ATTR, parent.number)
        return child


def select_best(trials: Sequence[FrozenTrial], direction: StudyDirection) -> FrozenTrial:
    """The trial with the best value (ties: the lowest number)."""
    sign = -1.0 if direction == StudyDirection.MAXIMIZE else 1.0
    return min(trials, key=lambda t: (sign * float(t.value), t.number))  # type: ignore[arg-type]


class SeededNSGAIISampler(NSGAIISampler):
    """Optuna's NSGA-II, with its random streams reseeded from ``(seed, trial number)`` before each trial."""

    def __init__(self, *, population_size: int = 10, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(population_size=population_size, seed=seed, **kwargs)
        self._base_seed = seed

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        if self._base_seed is not None:
            seeds = trial_rng(self._base_seed, trial.number).integers(2**32, size=2)
            self._rng.rng.seed(int(seeds[0]))  # crossover / mutation (shared with the child strategy)
            self._random_sampler._rng.rng.seed(int(seeds[1]))  # first generation, mutated parameters
        super().before_trial(study, trial)


def _draw(rng: np.random.Generator, dist: CategoricalDistribution) -> Any:
    return dist.choices[int(rng.integers(len(dist.choices)))]


STRATEGIES = MULTI_TRIAL_STRATEGIES


def create_sampler(
    strategy: str,
    search_space: Mapping[str, CategoricalDistribution],
    *,
    seed: int,
    population: int = 10,
    sample_size: int = 3,
) -> BaseSampler:
    """The sampler of a multi-trial strategy (one of :data:`STRATEGIES`)."""
    if strategy == "evolution":
        return RegularizedEvolutionSampler(population, sample_size, seed, search_space)
    if strategy == "nsga2":
        return SeededNSGAIISampler(population_size=population, seed=seed)
    if strategy == "random":
        return ArchRandomSampler(search_space, seed)
    raise ValueError(f"unknown multi-trial strategy {strategy!r}; available: {', '.join(STRATEGIES)}")
