"""Measured-latency-aware search: where each architecture choice runs its op (:mod:`.positions`) and the
expected latency of a supernet's op probabilities, added to the architecture loss (:mod:`.objective`,
``latency.weight`` per ms). The per-op table it reads is measured by :mod:`pflnas.measure.latency_table`.

Nothing is re-exported here: the table module imports :mod:`.positions`, so a package that imported
:mod:`.objective` (which reads the table) would make an import cycle.
"""
