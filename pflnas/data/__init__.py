"""Data: supported data sets, loading them whole into memory, the search split, on-device batching, and the
retraining loaders (in memory, or ImageNet from an ImageFolder tree)."""

from pflnas.data.arrays import ImageArrays
from pflnas.data.imagenet import imagenet_loaders
from pflnas.data.load import load_dataset
from pflnas.data.loader import BatchLoader
from pflnas.data.retrain import RETRAIN_DATASETS, retrain_loaders
from pflnas.data.retrain_types import EpochLoader, RetrainData
from pflnas.data.specs import DATASETS, DatasetSpec, get_dataset_spec
from pflnas.data.split import search_split

__all__ = [
    "DATASETS",
    "RETRAIN_DATASETS",
    "BatchLoader",
    "DatasetSpec",
    "EpochLoader",
    "ImageArrays",
    "RetrainData",
    "get_dataset_spec",
    "imagenet_loaders",
    "load_dataset",
    "retrain_loaders",
    "search_split",
]
