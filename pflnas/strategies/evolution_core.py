"""Regularized (aging) evolution (Real et al., AAAI 2019) and uniform random search over genomes.

The algorithms know nothing of networks: they work on genomes (``{choice: value}`` dicts over ``options``,
``{choice: allowed values}``, every combination valid; see :mod:`pflnas.arch.genome`) scored by a fitness
function (higher is better), so one-shot and multi-trial searches share them. All randomness comes from
the ``rng`` passed in, through ``rng.randrange(n)`` only, so a seeded ``random.Random`` makes a search
deterministic.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

Genome = dict[str, str]
Options = Mapping[str, Sequence[str]]


class Rng(Protocol):
    def randrange(self, n: int, /) -> int: ...


@dataclass(frozen=True)
class Individual:
    """One scored genome: ``index`` in evaluation order; ``parent`` the index it was mutated from and
    ``mutated`` the choice changed (both ``None`` for a random genome)."""

    index: int
    genome: Genome
    fitness: float
    parent: int | None = None
    mutated: str | None = None


def sample_genome(options: Options, rng: Rng) -> Genome:
    """Every choice uniformly at random, in ``options`` order."""
    return {key: values[rng.randrange(len(values))] for key, values in options.items()}


def mutate_genome(genome: Mapping[str, str], options: Options, rng: Rng) -> tuple[Genome, str | None]:
    """``genome`` with one choice (uniform among those with more than one value) changed to a different
    value (uniform); returns the child and the changed choice (``None`` when no choice can change)."""
    mutable = [key for key, values in options.items() if len(values) > 1]
    child = dict(genome)
    if not mutable:
        return child, None
    key = mutable[rng.randrange(len(mutable))]
    others = [v for v in options[key] if v != genome[key]]
    child[key] = others[rng.randrange(len(others))]
    return child, key


def _distinct(rng: Rng, n: int, k: int) -> list[int]:
    """``k`` distinct indices out of ``range(n)``, uniformly (a partial Fisher-Yates shuffle)."""
    pool = list(range(n))
    for i in range(k):
        j = i + rng.randrange(n - i)
        pool[i], pool[j] = pool[j], pool[i]
    return pool[:k]


@dataclass(frozen=True)
class Proposal:
    genome: Genome
    parent: int | None = None
    mutated: str | None = None


class RegularizedEvolution:
    """Ask/tell regularized evolution; :meth:`run` drives it with a fitness function.

    Fill a population of ``population`` random genomes; then each cycle draws ``sample_size`` distinct
    members, takes the fittest (ties: the older), mutates one choice that has more than one value to a
    different value (both uniformly), scores the child, appends it and removes the oldest member (aging).
    Being ask/tell, it may also be driven asynchronously.
    """

    def __init__(self, options: Options, population: int, sample_size: int, rng: Rng):
        if population < 1:
            raise ValueError(f"population must be >= 1, got {population}")
        if not 1 <= sample_size <= population:
            raise ValueError(f"sample_size must be in [1, population={population}], got {sample_size}")
        self.options = options
        self.population_size = population
        self.sample_size = sample_size
        self.rng = rng
        self.population: deque[Individual] = deque()
        self.history: list[Individual] = []

    def ask(self) -> Proposal:
        """A random genome until the population is full, then a mutated tournament winner."""
        if len(self.population) < self.population_size:
            return Proposal(sample_genome(self.options, self.rng))
        members = list(self.population)
        picked = [members[i] for i in _distinct(self.rng, len(members), self.sample_size)]
        parent = max(picked, key=lambda ind: (ind.fitness, -ind.index))  # ties: the older
        child, key = mutate_genome(parent.genome, self.options, self.rng)
        return Proposal(child, parent.index, key)

    def tell(self, proposal: Proposal, fitness: float) -> Individual:
        ind = Individual(
            len(self.history), dict(proposal.genome), float(fitness), proposal.parent, proposal.mutated
        )
        self.history.append(ind)
        self.population.append(ind)
        if len(self.population) > self.population_size:
            self.population.popleft()  # aging: the oldest member dies
        return ind

    def run(self, fitness: Callable[[Genome], float], cycles: int) -> list[Individual]:
        """Fill the population, then ``cycles`` mutation cycles; returns every scored genome in order."""
        total = self.population_size + cycles
        while len(self.history) < total:
            proposal = self.ask()
            self.tell(proposal, fitness(proposal.genome))
        return list(self.history)


def random_search(options: Options, fitness: Callable[[Genome], float], n: int, rng: Rng) -> list[Individual]:
    """``n`` uniformly random genomes, scored in order."""
    out = []
    for i in range(n):
        genome = sample_genome(options, rng)
        out.append(Individual(i, genome, float(fitness(genome))))
    return out


def best(history: Sequence[Individual]) -> Individual:
    """The fittest individual (ties: the first scored)."""
    if not history:
        raise ValueError("no individuals")
    return max(history, key=lambda ind: (ind.fitness, -ind.index))
