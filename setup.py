"""Packages only (the rest is in pyproject.toml): every streamrestore subpackage, found, plus the shipped
checkpoints in engines/ installed as streamrestore.weights (the layout keeps engines/ at the top)."""
from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["streamrestore", "streamrestore.*"]), "streamrestore.weights"],
      package_dir={"streamrestore.weights": "engines"})
