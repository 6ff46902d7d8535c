"""The authors' published MCIBI++ and MCIBI weights (sssegmentation model store).

Names, file URLs and mIoU come from the model-zoo pages of SegmentationBLWX/sssegmentation
(`docs/modelzoo/mcibiplusplus/README.md` and `docs/modelzoo/mcibi/README.md`, commit eb1878c1),
restricted to the ResNet-50/101 (dilated, output stride 8) and Swin-Large backbones. An entry's
name is the authors' config name; its `config` names the packaged vidseg config that builds the
same layers. File sizes and SHA-256 digests are not published: until someone records them from a
real download, every entry is "unverified" (`size_bytes` and `sha256` are None) and only the HTTP
Content-Length is checked.
"""

from __future__ import annotations

from dataclasses import dataclass

from vidseg.zoo.classes import NUM_CLASSES

_STORE = "https://github.com/SegmentationBLWX/modelstore/releases/download"


@dataclass(frozen=True)
class ZooEntry:
    """One published checkpoint.

    Attributes:
        name: the authors' config name, e.g. "mcibiplusplus_upernet_resnet101os8_vspw".
        url: where the authors' `.pth` file is published (https).
        dataset: dataset key of `vidseg.zoo.classes.CLASS_NAMES`, e.g. "vspw".
        num_classes: classifier outputs K of the checkpoint.
        config: packaged vidseg config that builds the architecture, "<dataset>/<name>".
        miou: the authors' mIoU in percent (single-scale when the page gives it; see `notes`).
        size_bytes: file size, when recorded from a verified download.
        sha256: hex digest of the file, when recorded from a verified download.
        notes: the authors' setting (head, backbone, crop, train/eval split) and all their mIoU.
    """

    name: str
    url: str
    dataset: str
    num_classes: int
    config: str
    miou: float
    size_bytes: int | None = None
    sha256: str | None = None
    notes: str = ""

    @property
    def filename(self) -> str:
        """The file name of the download (last component of the URL)."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def verified(self) -> bool:
        """True when the table records the file's SHA-256 (so a download is checked end to end)."""
        return self.sha256 is not None


def _entry(
    name: str, folder: str, file_stem: str, dataset: str, miou: float, notes: str
) -> ZooEntry:
    return ZooEntry(
        name=name,
        url=f"{_STORE}/{folder}/{file_stem}.pth",
        dataset=dataset,
        num_classes=NUM_CLASSES[dataset],
        config={
            "mcibiplusplus_upernet_resnet101os8_vspw": "vspw/upernet_mcibipp_r101",
            "mcibiplusplus_upernet_swinlarge_vspw": "vspw/upernet_mcibipp_swinl",
        }.get(name, f"{dataset}/{name}"),
        miou=miou,
        notes=notes,
    )


def _mcibipp(name: str, dataset: str, miou: float, notes: str) -> ZooEntry:
    """MCIBI++ files are named after their config."""
    return _entry(name, "ssseg_mcibiplusplus", name, dataset, miou, notes)


def _mcibi(name: str, file_stem: str, dataset: str, miou: float, notes: str) -> ZooEntry:
    """MCIBI (v1) files use short backbone names (r50, r101), not the config name."""
    return _entry(name, "ssseg_mcibi", file_stem, dataset, miou, notes)


ZOO: tuple[ZooEntry, ...] = (
    # MCIBI++, VSPW
    _mcibipp(
        "mcibiplusplus_upernet_resnet101os8_vspw",
        "vspw",
        43.21,
        "UperNet R-101-D8, crop 512x512, train/val; mIoU 43.21",
    ),
    _mcibipp(
        "mcibiplusplus_upernet_swinlarge_vspw",
        "vspw",
        56.04,
        "UperNet Swin-Large, crop 512x512, train/val; mIoU 56.04",
    ),
    # MCIBI++, ADE20K
    _mcibipp(
        "mcibiplusplus_resnet50os8_ade20k",
        "ade20k",
        43.39,
        "FCN R-50-D8, crop 512x512, train/val; mIoU 43.39",
    ),
    _mcibipp(
        "mcibiplusplus_ppm_resnet50os8_ade20k",
        "ade20k",
        43.88,
        "PSPNet R-50-D8, crop 512x512, train/val; mIoU 43.88",
    ),
    _mcibipp(
        "mcibiplusplus_aspp_resnet50os8_ade20k",
        "ade20k",
        44.85,
        "DeepLabV3 R-50-D8, crop 512x512, train/val; mIoU 44.85",
    ),
    _mcibipp(
        "mcibiplusplus_upernet_resnet50os8_ade20k",
        "ade20k",
        44.30,
        "UperNet R-50-D8, crop 512x512, train/val; mIoU 44.30",
    ),
    _mcibipp(
        "mcibiplusplus_upernet_resnet101os8_ade20k",
        "ade20k",
        46.38,
        "UperNet R-101-D8, crop 512x512, train/val; mIoU 46.38, ms+flip 47.93",
    ),
    _mcibipp(
        "mcibiplusplus_upernet_swinlarge_ade20k",
        "ade20k",
        53.48,
        "UperNet Swin-Large, crop 640x640, train/val; mIoU 53.48, ms+flip 54.50",
    ),
    # MCIBI++, Cityscapes
    _mcibipp(
        "mcibiplusplus_resnet50os8_cityscapes",
        "cityscapes",
        78.77,
        "FCN R-50-D8, crop 512x1024, train/val; mIoU 78.77",
    ),
    _mcibipp(
        "mcibiplusplus_ppm_resnet50os8_cityscapes",
        "cityscapes",
        79.91,
        "PSPNet R-50-D8, crop 512x1024, train/val; mIoU 79.91",
    ),
    _mcibipp(
        "mcibiplusplus_aspp_resnet50os8_cityscapes",
        "cityscapes",
        80.72,
        "DeepLabV3 R-50-D8, crop 512x1024, train/val; mIoU 80.72",
    ),
    _mcibipp(
        "mcibiplusplus_upernet_resnet50os8_cityscapes",
        "cityscapes",
        80.05,
        "UperNet R-50-D8, crop 512x1024, train/val; mIoU 80.05",
    ),
    _mcibipp(
        "mcibiplusplus_aspp_resnet101os8_cityscapes",
        "cityscapes",
        82.20,
        "DeepLabV3 R-101-D8, crop 512x1024, trainval/test; mIoU ms+flip 82.20 (test set)",
    ),
    # MCIBI++, COCO-Stuff-10k
    _mcibipp(
        "mcibiplusplus_resnet50os8_cocostuff10k",
        "cocostuff10k",
        37.38,
        "FCN R-50-D8, crop 512x512, train/test; mIoU 37.38",
    ),
    _mcibipp(
        "mcibiplusplus_ppm_resnet50os8_cocostuff10k",
        "cocostuff10k",
        38.47,
        "PSPNet R-50-D8, crop 512x512, train/test; mIoU 38.47",
    ),
    _mcibipp(
        "mcibiplusplus_aspp_resnet50os8_cocostuff10k",
        "cocostuff10k",
        38.94,
        "DeepLabV3 R-50-D8, crop 512x512, train/test; mIoU 38.94",
    ),
    _mcibipp(
        "mcibiplusplus_upernet_resnet50os8_cocostuff10k",
        "cocostuff10k",
        39.20,
        "UperNet R-50-D8, crop 512x512, train/test; mIoU 39.20",
    ),
    _mcibipp(
        "mcibiplusplus_upernet_resnet101os8_cocostuff10k",
        "cocostuff10k",
        40.41,
        "UperNet R-101-D8, crop 512x512, train/test; mIoU 40.41, ms+flip 41.84",
    ),
    _mcibipp(
        "mcibiplusplus_upernet_swinlarge_cocostuff10k",
        "cocostuff10k",
        49.11,
        "UperNet Swin-Large, crop 512x512, train/test; mIoU 49.11, ms+flip 50.27",
    ),
    # MCIBI++, LIP
    _mcibipp(
        "mcibiplusplus_resnet50os8_lip",
        "lip",
        51.13,
        "FCN R-50-D8, crop 473x473, train/val; mIoU 51.13",
    ),
    _mcibipp(
        "mcibiplusplus_ppm_resnet50os8_lip",
        "lip",
        52.93,
        "PSPNet R-50-D8, crop 473x473, train/val; mIoU 52.93",
    ),
    _mcibipp(
        "mcibiplusplus_aspp_resnet50os8_lip",
        "lip",
        53.59,
        "DeepLabV3 R-50-D8, crop 473x473, train/val; mIoU 53.59",
    ),
    _mcibipp(
        "mcibiplusplus_upernet_resnet50os8_lip",
        "lip",
        53.92,
        "UperNet R-50-D8, crop 473x473, train/val; mIoU 53.92",
    ),
    _mcibipp(
        "mcibiplusplus_upernet_resnet101os8_lip",
        "lip",
        55.87,
        "UperNet R-101-D8, crop 473x473, train/val; mIoU 55.87, flip 56.26, ms+flip 56.32",
    ),
    _mcibipp(
        "mcibiplusplus_upernet_swinlarge_lip",
        "lip",
        59.58,
        "UperNet Swin-Large, crop 473x473, train/val; mIoU 59.58, flip 59.89, ms+flip 59.91",
    ),
    # MCIBI++, PASCAL-Context-59
    _mcibipp(
        "mcibiplusplus_upernet_resnet101os8_pascalcontext59",
        "pascalcontext59",
        55.63,
        "UperNet R-101-D8, crop 480x480, train/val; mIoU 55.63, ms+flip 56.82",
    ),
    _mcibipp(
        "mcibiplusplus_upernet_swinlarge_pascalcontext59",
        "pascalcontext59",
        62.37,
        "UperNet Swin-Large, crop 480x480, train/val; mIoU 62.37, ms+flip 64.01",
    ),
    # MCIBI++, PASCAL VOC
    _mcibipp(
        "mcibiplusplus_upernet_resnet50os8_voc",
        "voc",
        79.48,
        "UperNet R-50-D8, crop 512x512, train/val; mIoU 79.48",
    ),
    _mcibipp(
        "mcibiplusplus_upernet_resnet101os8_voc",
        "voc",
        80.42,
        "UperNet R-101-D8, crop 512x512, train/val; mIoU 80.42",
    ),
    # MCIBI (v1, vector memory), all DeepLabV3 heads
    _mcibi(
        "mcibi_deeplabv3_resnet50os8_ade20k",
        "mcibi_deeplabv3_r50_ade20k",
        "ade20k",
        44.39,
        "DeepLabV3 R-50-D8, crop 512x512, train/val; mIoU 44.39, ms+flip 45.97",
    ),
    _mcibi(
        "mcibi_deeplabv3_resnet101os8_ade20k",
        "mcibi_deeplabv3_r101_ade20k",
        "ade20k",
        45.66,
        "DeepLabV3 R-101-D8, crop 512x512, train/val; mIoU 45.66, ms+flip 47.27",
    ),
    _mcibi(
        "mcibi_deeplabv3_resnet50os8_cityscapes",
        "mcibi_deeplabv3_r50_cityscapes",
        "cityscapes",
        79.97,
        "DeepLabV3 R-50-D8, crop 512x1024, trainval/test; mIoU ms+flip 79.97 (test set)",
    ),
    _mcibi(
        "mcibi_deeplabv3_resnet101os8_cityscapes",
        "mcibi_deeplabv3_r101_cityscapes",
        "cityscapes",
        82.10,
        "DeepLabV3 R-101-D8, crop 512x1024, trainval/test; mIoU ms+flip 82.10 (test set)",
    ),
    _mcibi(
        "mcibi_deeplabv3_resnet50os8_cocostuff10k",
        "mcibi_deeplabv3_r50_cocostuff10k",
        "cocostuff10k",
        38.84,
        "DeepLabV3 R-50-D8, crop 512x512, train/test; mIoU 38.84, ms+flip 39.78",
    ),
    _mcibi(
        "mcibi_deeplabv3_resnet101os8_cocostuff10k",
        "mcibi_deeplabv3_r101_cocostuff10k",
        "cocostuff10k",
        39.84,
        "DeepLabV3 R-101-D8, crop 512x512, train/test; mIoU 39.84, ms+flip 41.52",
    ),
    _mcibi(
        "mcibi_deeplabv3_resnet50os8_lip",
        "mcibi_deeplabv3_r50_lip",
        "lip",
        53.73,
        "DeepLabV3 R-50-D8, crop 473x473, train/val; mIoU 53.73, flip 54.08",
    ),
    _mcibi(
        "mcibi_deeplabv3_resnet101os8_lip",
        "mcibi_deeplabv3_r101_lip",
        "lip",
        55.02,
        "DeepLabV3 R-101-D8, crop 473x473, train/val; mIoU 55.02, flip 55.42",
    ),
)


def markdown_table(entries: tuple[ZooEntry, ...] = ZOO) -> str:
    """The zoo as a Markdown table (the one in docs/MODELS.md), one row per entry."""
    lines = [
        "| name | dataset | classes | authors' mIoU (%) | authors' setting | URL | size / sha256 |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        check = f"{e.size_bytes} B / `{e.sha256}`" if e.verified else "unverified"
        setting, _, scores = e.notes.partition("; ")
        scores = scores.removeprefix("mIoU ") or f"{e.miou:.2f}"
        lines.append(
            f"| `{e.name}` | {e.dataset} | {e.num_classes} | {scores} | {setting} "
            f"| [{e.filename}]({e.url}) | {check} |"
        )
    return "\n".join(lines) + "\n"
