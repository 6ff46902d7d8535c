"""vidseg: video semantic segmentation with a dataset-level class memory (MCIBI++ / Video-MCIBI++)."""

__version__ = "0.1.0"

__all__ = ["Segmenter", "__version__"]


def __getattr__(name: str):
    # `import vidseg` stays light (no torch import) until the API is used
    if name == "Segmenter":
        from vidseg.segmenter import Segmenter

        return Segmenter
    raise AttributeError(f"module 'vidseg' has no attribute {name!r}")
