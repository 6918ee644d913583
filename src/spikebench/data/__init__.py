"""Datasets and encoders."""

from spikebench.data.datasets import DATASETS, Dataset, Split, load_dataset
from spikebench.data.encoders import ENCODERS, Encoder, Encoding
from spikebench.data.idx import DataError

__all__ = [
    "DATASETS",
    "ENCODERS",
    "DataError",
    "Dataset",
    "Encoder",
    "Encoding",
    "Split",
    "load_dataset",
]
