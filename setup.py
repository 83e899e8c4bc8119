"""Install lge-synthbench. torch keeps a range here; pin the exact build with TORCH_SPEC (see the Makefile)."""

from setuptools import find_packages, setup

setup(
    name="lge-synthbench",
    version="0.1.0",
    description="Benchmark suite for label-conditioned 3D LGE MRI synthesis and its segmentation utility",
    packages=find_packages(include=["benchmark", "benchmark.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4,<2.14",
        "monai>=1.6,<1.7",
        "deepspeed>=0.19,<0.20",
        "nibabel>=5.2",
        "pynrrd>=1.0",
        "submitit>=1.5,<2",
        "cloudpickle>=2",
        "mlflow==3.17.2",
        "scipy>=1.11",
        "numpy>=1.26",
        "pandas>=2.1",
        "scikit-learn>=1.4",
        "matplotlib>=3.8",
        "torchio>=1.2,<2",  # MRI motion and ghosting simulation (benchmark/robustness/corruptions.py)
        "tqdm>=4.66",
        "pyyaml>=6.0",
    ],
    extras_require={
        "auth": ["mlflow[auth]==3.17.2"],  # a tracking server with MLflow's own authentication (README)
        "dev": ["pytest>=8", "ruff>=0.6", "psycopg2-binary>=2.9", "mlflow[auth]==3.17.2"],
    },
    entry_points={
        "console_scripts": [
            "lge-sweep=benchmark.run.cli:sweep_main",
        ]
    },
)
