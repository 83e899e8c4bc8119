"""Analysis of a finished study: significance tables, summary tables, plots and the HTML report.

Everything here works from tidy pandas frames (per-case segmentation rows, image-quality rows); reading them out
of MLflow is a separate step.
"""
