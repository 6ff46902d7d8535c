"""vidseg: video semantic segmentation with a dataset-level class memory (MCIBI++ / Video-MCIBI++)."""

__version__ = "0.1.0"

__all__ = ["Segmenter", "__version__", "score", "train"]


def __getattr__(name: str):
    # `import vidseg` stays light (no torch import) until the API is used
    if name == "Segmenter":
        from vidseg.segmenter import Segmenter

        return Segmenter
    if name in ("train", "score"):
        from vidseg import api

        return getattr(api, name)
    raise AttributeError(f"module 'vidseg' has no attribute {name!r}")
