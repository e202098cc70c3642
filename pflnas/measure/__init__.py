"""Measurement: what a model or an op costs, counted (parameters, MACs) or timed (latency, throughput,
memory), and the per-op tables built from such timings.

Every timed number goes through one protocol (:mod:`.timing`) under one set of settings (:mod:`.context`,
:mod:`.prepare`), so a network's latency, an op's microbenchmark and a latency table compare. This module
imports nothing, so that the CLI can load the text formatting (:mod:`.report`) without loading torch.
"""
