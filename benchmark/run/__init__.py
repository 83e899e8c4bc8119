"""Running a study: job kinds (``kinds``), one job's life (``job``), the sweep's job graph (``sweep``), one job by
hand (``single``), where jobs run (``dispatch``: debug | pool | local | slurm) and launcher plumbing (``cli``)."""
