"""Package layout that pyproject.toml cannot express declaratively.

kernels/ installs as ``sustainml_kernels`` (a popular PyPI package already owns the name ``kernels``) and
conf/ ships inside the package as ``sustainml_exp.conf`` so a non-editable install still finds its Hydra configs.
"""
from setuptools import find_packages, setup

packages = find_packages(include=["sustainml_exp", "sustainml_exp.*"])
kernel_packages = ["sustainml_kernels" + p[len("kernels"):] for p in find_packages(include=["kernels", "kernels.*"])]
package_dir = {"sustainml_kernels": "kernels", "sustainml_exp.conf": "conf"}

setup(packages=packages + kernel_packages + ["sustainml_exp.conf"], package_dir=package_dir)
