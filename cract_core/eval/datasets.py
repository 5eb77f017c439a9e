"""Kept only because cract_ros/bag_io.py (being converted by someone else) imports ``_folder_fps``
from here; the loaders live in cract_core.datasets."""
from cract_core.datasets.formats import folder_fps as _folder_fps

__all__ = ["_folder_fps"]
