"""Datasets and encoders."""

from spikebench.data import events  # noqa: F401  (registers the event datasets)
from spikebench.data.datasets import (
    DATASETS,
    Dataset,
    DatasetSpec,
    InputDomain,
    Split,
    check_data_config,
    dataset_spec,
    input_domain,
    load_dataset,
    load_test,
)
from spikebench.data.encoders import ENCODERS, Encoder, Encoding
from spikebench.data.idx import DataError

__all__ = [
    "DATASETS",
    "ENCODERS",
    "DataError",
    "Dataset",
    "DatasetSpec",
    "Encoder",
    "Encoding",
    "InputDomain",
    "Split",
    "check_data_config",
    "dataset_spec",
    "input_domain",
    "load_dataset",
    "load_test",
]
