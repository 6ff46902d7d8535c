"""vidseg: video semantic segmentation with a dataset-level class memory (MCIBI++ / Video-MCIBI++)."""

__version__ = "0.1.0"
