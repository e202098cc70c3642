"""Data: supported data sets, loading them whole into memory, the search split, and on-device batching."""

from pflnas.data.arrays import ImageArrays
from pflnas.data.load import load_dataset
from pflnas.data.loader import BatchLoader
from pflnas.data.specs import DATASETS, DatasetSpec, get_dataset_spec
from pflnas.data.split import search_split

__all__ = [
    "DATASETS",
    "BatchLoader",
    "DatasetSpec",
    "ImageArrays",
    "get_dataset_spec",
    "load_dataset",
    "search_split",
]
