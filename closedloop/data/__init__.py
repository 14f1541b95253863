"""Data on disk: session files, the pvc-8 importer, response extraction, the dataset."""

from closedloop.data.dataset import GratingResponses, Preprocessing, ResponseDataset
from closedloop.data.formats import detect_format
from closedloop.data.loader import load_dataset
from closedloop.data.preprocess import preprocess
from closedloop.data.pvc8 import Pvc8Recording, load_pvc8_dataset, read_pvc8, write_pvc8
from closedloop.data.session import (
    BlockFlag,
    BlockKind,
    SessionReader,
    SessionWriter,
    StimulusKind,
)

__all__ = [
    "BlockFlag",
    "BlockKind",
    "GratingResponses",
    "Preprocessing",
    "Pvc8Recording",
    "ResponseDataset",
    "SessionReader",
    "SessionWriter",
    "StimulusKind",
    "detect_format",
    "load_dataset",
    "load_pvc8_dataset",
    "preprocess",
    "read_pvc8",
    "write_pvc8",
]
