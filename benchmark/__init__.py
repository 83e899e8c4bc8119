"""lge-synthbench: label-conditioned 3D LGE MRI synthesis and its segmentation utility, benchmarked."""

__version__ = "0.1.0"
