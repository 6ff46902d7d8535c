"""Packaging hook; every other setting is in pyproject.toml.

The repository's top-level `configs/` ships inside the package as `vidseg/_configs` (package
data mapped with `package_dir`), so there is one copy of each config: a wheel or `pip install .`
carries it, while an editable install or a plain checkout reads `configs/` itself
(`vidseg/packaged_configs.py` looks in both places).
"""

from setuptools import find_namespace_packages, find_packages, setup

# every folder under configs/ as a data-only package, so setuptools copies its YAML files
CONFIG_PACKAGES = ["vidseg._configs"] + [
    f"vidseg._configs.{name}" for name in find_namespace_packages(where="configs")
]

setup(
    packages=find_packages(include=["vidseg", "vidseg.*"]) + CONFIG_PACKAGES,
    package_dir={"vidseg._configs": "configs"},
    package_data={name: ["*.yaml"] for name in CONFIG_PACKAGES},
)
