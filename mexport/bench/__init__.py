"""Latency: every variant in its own process, timed in interleaved turns (``interleave``), against
a baseline artifact (``latency_baseline``), and the benchmark matrix of every runtime and precision
(``matrix``, ``matrix_report``) with a compute-bound probe for each runtime's peak (``peak``)."""
