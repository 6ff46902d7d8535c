"""The names of the dataset layouts and mask-value formats (no heavy imports: the CLI reads them
to build its parser)."""

FORMATS = ("vspw", "video", "frames")  # data.format
LABEL_FORMATS = ("vspw", "train_ids")  # data.labels
