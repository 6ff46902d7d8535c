"""The authors' published MCIBI / MCIBI++ weights: the table, class names and a robust downloader.

    from vidseg.zoo import resolve, fetch
    entry = resolve("mcibiplusplus_upernet_resnet101os8_vspw")
    path = fetch(entry)            # <cache>/weights/<file>.pth, downloaded on first use

See docs/MODELS.md for the table and for placing a file by hand on an offline machine.
"""

from vidseg.zoo.classes import CLASS_NAMES, NUM_CLASSES, class_names
from vidseg.zoo.download import (
    ZooError,
    cache_dir,
    fetch,
    fetch_converted,
    list_entries,
    resolve,
    weights_path,
)
from vidseg.zoo.table import ZOO, ZooEntry, markdown_table

__all__ = [
    "CLASS_NAMES",
    "NUM_CLASSES",
    "ZOO",
    "ZooEntry",
    "ZooError",
    "cache_dir",
    "class_names",
    "fetch",
    "fetch_converted",
    "list_entries",
    "markdown_table",
    "resolve",
    "weights_path",
]
