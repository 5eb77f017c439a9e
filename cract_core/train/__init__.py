"""Offline training of CRACT's heads (RPN, box regressor R, identifier I): data, pairs, trainer, CLI.

Import submodules directly (``cract_core.train.pairs`` ...); this package imports nothing heavy so
that the data side works without the network module.
"""
