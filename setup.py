"""Package discovery for the ``huabu.*`` namespace.

Each top-level folder is one ``huabu.<folder>`` package; every sub-package under it is found, not
listed by hand (a hand-written list once shipped wheels without ``huabu.sdk.resources``). The rest
of the metadata is in ``pyproject.toml``.
"""

from setuptools import find_packages, setup

TOP_LEVEL = ("sdk", "deployments", "filters", "ab_testing", "cluster")

package_dir = {f"huabu.{top}": top for top in TOP_LEVEL}
packages = [f"huabu.{top}" for top in TOP_LEVEL]
packages += [f"huabu.{top}.{sub}" for top in TOP_LEVEL for sub in find_packages(top)]

setup(package_dir=package_dir, packages=packages)
