"""Throughput profiling: the measurement loop (``measure``), what it builds around a model (``model``), FLOPs
(``flops``), rows, ratios and logging (``results``) and the grid of configurations run as jobs (``grid``)."""
