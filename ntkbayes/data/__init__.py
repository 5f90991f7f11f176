"""Datasets: ``load(name, root="datasets", seed=0, **options) -> DatasetSplits``."""

from ntkbayes.data.splits import DatasetSplits, Split, make_splits

__all__ = ["DatasetSplits", "Split", "make_splits"]
