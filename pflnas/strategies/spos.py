"""SPOS (Guo et al., ECCV 2020): single-path one-shot search with uniform sampling, then a search over
architectures scored with inherited weights.

Training one uniformly drawn path per forward, never the architecture weights, decouples supernet training
from the search, so the paths trained are exactly the candidates searched later (:class:`SPOS`). After
training, candidates are scored with inherited weights by the loop's
:class:`~pflnas.strategies.subnet_eval.SubnetEvaluator` (:meth:`SPOS.after_training`).
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from pflnas.arch.genome import GenomeSpace, genome_key
from pflnas.arch.record import Architecture
from pflnas.config.search import ArchOptimConfig
from pflnas.strategies.base import ArchGrads, Batch, StepContext, Strategy
from pflnas.strategies.evolution_core import Individual, RegularizedEvolution, best, random_search
from pflnas.strategies.subnet_eval import PathSelector
from pflnas.supernet.network import Supernet

if TYPE_CHECKING:
    from pflnas.strategies.subnet_eval import SubnetEvaluator

SEARCHES = ("evolution", "random")


def _path_seed(seed: int) -> int:
    """The path generator's seed: derived from the run's seed, decorrelated from the global stream."""
    return int(np.random.SeedSequence([seed, 0x5B05]).generate_state(1, dtype=np.uint64)[0])


class SPOS(Strategy):
    """Supernet training: every forward of the search draws one architecture uniformly from the space (one
    op per block; on cell spaces one op per kept edge, with DARTS nodes keeping 2 inputs as the derived
    architecture does) and runs only that path (see :class:`~pflnas.strategies.subnet_eval.PathSelector`).
    The loop's weight step therefore trains one single path; :meth:`arch_grads` returns nothing and the
    architecture weights are never touched (the loop logs their uniform probabilities). The per-epoch
    validation accuracy the loop logs is that of random paths, one per batch (the same paths every epoch).
    The draws come from a generator seeded from the run's seed, kept in ``state_dict()`` so a resumed
    search draws the same paths.
    """

    name = "spos"
    updates_alphas = False
    dynamic_path = True

    def __init__(self, arch_optim: ArchOptimConfig, search: str = "evolution"):
        super().__init__(arch_optim)
        if search not in SEARCHES:
            raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
        self.search = search
        self.generator = torch.Generator()  # training paths, one per weight step
        self.eval_generator = torch.Generator()  # eval-mode paths: the same sequence in every evaluation
        self._eval_seed = 0
        self._evaluating = False
        self.genomes: GenomeSpace | None = None
        self.selector: PathSelector | None = None
        self.last_path: dict[str, str] | None = None  # the genome the last training forward ran
        self.result: dict[str, Any] | None = None  # set by after_training

    def attach(self, supernet: Supernet) -> None:
        self.supernet = supernet
        self.genomes = GenomeSpace.of(supernet.space)
        seed = _path_seed(torch.initial_seed())  # the loop seeds torch with run.seed
        self.generator.manual_seed(seed)
        self._eval_seed = (seed + 1) % 2**63
        self.selector = PathSelector(supernet, self.genomes)
        self.selector.before_forward = self._sample_path
        self.selector.install()

    def sample_genome(self, generator: torch.Generator | None = None) -> dict[str, str]:
        """One architecture, uniformly: every choice independently (from the training path generator
        unless another is given)."""
        assert self.genomes is not None, "attach() first"
        options = self.genomes.options
        u = torch.rand(len(options), generator=generator or self.generator, dtype=torch.float64).tolist()
        return {k: v[min(int(x * len(v)), len(v) - 1)] for (k, v), x in zip(options.items(), u)}

    def _sample_path(self) -> None:
        """Before every forward: a training forward draws from the training generator; an evaluation
        (eval mode) draws from its own generator, restarted at each switch to eval mode, so evaluations
        leave the training sequence alone and every epoch's is scored on the same random paths."""
        assert self.selector is not None and self.supernet is not None
        if self.supernet.training:
            self._evaluating = False
            generator = self.generator
        else:
            if not self._evaluating:
                self.eval_generator.manual_seed(self._eval_seed)
                self._evaluating = True
            generator = self.eval_generator
        self.last_path = self.sample_genome(generator)
        self.selector.select(self.last_path)

    def arch_grads(self, train_batch: Batch, val_batch: Batch, ctx: StepContext) -> ArchGrads | None:
        """Nothing to update: the weight step's forward draws its own path."""
        return None

    # --- after training: search with inherited weights ---------------------------------------------
    def after_training(self, evaluate: SubnetEvaluator) -> list[dict[str, Any]] | None:
        """Score candidates with ``evaluate`` (BatchNorm recalibrated on training batches, accuracy on
        held-out batches): ``spos`` runs regularized evolution (``spos.population``, ``spos.sample_size``,
        ``spos.cycles``); ``spos_random`` scores ``population + cycles`` uniformly random candidates, the
        same budget. found.json is the best candidate; every scored candidate is a row of evolution.jsonl.
        """
        assert self.genomes is not None, "attach() first"
        if self.selector is not None:  # training is over: the evaluator chooses the paths from now on
            self.selector.remove()
            self.selector = None
        cfg = evaluate.config
        rng = random.Random(evaluate.seed)
        total = cfg.population + cfg.cycles
        scores: dict[str, dict[str, float]] = {}
        bar = tqdm(
            total=total, desc=f"{self.name} search", leave=False, disable=not evaluate.progress or None
        )
        t0 = time.perf_counter()

        def fitness(genome: dict[str, str]) -> float:
            key = genome_key(genome)
            if key not in scores:  # scoring is deterministic: a repeated candidate is not scored again
                scores[key] = evaluate.evaluate(genome)
            bar.update(1)
            bar.set_postfix(acc=f"{scores[key]['accuracy']:.3f}")
            return scores[key]["accuracy"]

        options = self.genomes.options
        if self.search == "evolution":
            history = RegularizedEvolution(options, cfg.population, cfg.sample_size, rng).run(
                fitness, cfg.cycles
            )
        else:
            history = random_search(options, fitness, total, rng)
        bar.close()
        elapsed = time.perf_counter() - t0
        rows, seen = [], set()
        for ind in history:
            key = genome_key(ind.genome)
            rows.append(self._row(ind, scores[key], repeat=key in seen))
            seen.add(key)
        top = best(history)
        self.result = {
            "genome": dict(top.genome),
            "summary": {
                "method": "regularized_evolution" if self.search == "evolution" else "random_search",
                "evaluated": len(history),
                "unique": len(scores),
                "best_index": top.index,
                "best_accuracy": round(top.fitness, 6),
                "best_loss": round(scores[genome_key(top.genome)]["loss"], 6),
                "eval_images": int(scores[genome_key(top.genome)]["images"]),
                "population": cfg.population,
                "sample_size": cfg.sample_size if self.search == "evolution" else None,
                "cycles": cfg.cycles,
                "bn_batches": cfg.bn_batches,
                "eval_batches": cfg.eval_batches,
                "search_time_s": round(elapsed, 3),
            },
        }
        tqdm.write(
            f"{self.name}: {len(history)} candidates ({len(scores)} distinct) scored with inherited weights "
            f"in {elapsed:.1f}s; best held-out acc {top.fitness:.4f} (candidate {top.index})"
        )
        return rows

    def _row(self, ind: Individual, score: dict[str, float], repeat: bool) -> dict[str, Any]:
        assert self.genomes is not None
        share = self.genomes.to_architecture(ind.genome).param_free_share()
        return {
            "index": ind.index,
            "genome": ind.genome,
            "accuracy": ind.fitness,
            "loss": score["loss"],
            "parent": ind.parent,
            "mutated": ind.mutated,
            "repeat": repeat,
            "param_free_share": None if share != share else round(share, 6),
        }

    def export(self, provenance: dict[str, Any] | None = None) -> Architecture:
        """The best candidate found; before the search (the loop's per-epoch logs) the derivation of the
        untouched, uniform architecture weights."""
        if self.result is None:
            return super().export(provenance)
        assert self.genomes is not None, "attach() first"
        prov = {**(provenance or {}), "one_shot": dict(self.result["summary"])}
        return self.genomes.to_architecture(self.result["genome"], prov)

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "eval_seed": self._eval_seed,
            "search": self.search,
            "result": self.result,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self._eval_seed = int(state["eval_seed"])
        self.result = state.get("result")


class SPOSRandom(SPOS):
    """SPOS' supernet training, then uniform random search at the budget of ``spos`` (the baseline)."""

    name = "spos_random"

    def __init__(self, arch_optim: ArchOptimConfig):
        super().__init__(arch_optim, search="random")


def spos(arch_optim: ArchOptimConfig) -> Strategy:
    return SPOS(arch_optim, search="evolution")


def spos_random(arch_optim: ArchOptimConfig) -> Strategy:
    return SPOSRandom(arch_optim)
