"""Tracking: the ``Tracker`` interface and the MLflow tracker (``tracker``, the only module that imports mlflow),
the local spool that keeps what a server could not take (``spool``), credentials and the server check before a
sweep submits anything (``auth``), and reading a study back (``runs``)."""
