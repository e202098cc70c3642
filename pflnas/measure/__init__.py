"""Measurement: what a model or an op costs, counted (parameters, MACs) or timed (latency, throughput,
memory), the per-op tables built from such timings, and the expected latency of a supernet's op
probabilities that a latency-aware search adds to its architecture loss (:mod:`.latency_objective`, over the
op positions of :mod:`.positions`).

Every timed number goes through one protocol (:mod:`.timing`) under one set of settings (:mod:`.context`,
:mod:`.prepare`), so a network's latency, an op's microbenchmark and a latency table compare. This module
imports nothing, so that the CLI can load the text formatting (:mod:`.report`) without loading torch.
"""
