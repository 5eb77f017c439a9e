"""cract_core: the CRACT tracker in pure PyTorch (no ROS import anywhere in this package)."""

__version__ = "0.1.0"
