"""Records in, files out: the one record reader, the atomic writers and the names of every file
cltk writes. Every input goes through here, so every bad line gives the same kind of message
(``FILE:LINE: field 'F': what is wrong``, exit 2); every output is written to a temporary sibling
and renamed into place. Nothing here imports torch.

- ``errors``: ``InputError`` (exit 2), ``TrainingError`` (exit 1)
- ``records``: JSONL records (``read_jsonl``, ``write_jsonl``)
- ``images``: image folders, JSONL image records, built-in data sets
- ``files``: atomic files and folders, ``--force``, ``available_cpus``
- ``run``: run-dir / encoder / embeddings / index folder file names, ``RunDir``
- ``vectors``: embeddings folders and ``.npy`` (read, write, validate)
"""

from .errors import InputError, TrainingError, check_range
from .files import (
    CpuShare,
    atomic_dir,
    atomic_file,
    auto_threads,
    available_cpus,
    check_output,
    check_writable,
    disk_full,
    thread_count,
    write_json,
)
from .images import (
    FASHION_MNIST_CLASSES,
    IMAGE_SUFFIXES,
    ImageSource,
    fashion_mnist_dir,
    image_source,
    read_builtin,
    read_image_folder,
    read_image_jsonl,
    read_images,
)
from .records import public, read_jsonl, write_jsonl
from .run import RunDir, resolve_encoder_dir
from .vectors import (
    check_vectors,
    embedding_records,
    embeddings_from_records,
    meta_record,
    open_vectors,
    read_embeddings,
    write_embeddings,
)

__all__ = [
    "CpuShare",
    "auto_threads",
    "FASHION_MNIST_CLASSES",
    "IMAGE_SUFFIXES",
    "ImageSource",
    "InputError",
    "RunDir",
    "TrainingError",
    "atomic_dir",
    "atomic_file",
    "available_cpus",
    "check_output",
    "check_writable",
    "disk_full",
    "check_range",
    "check_vectors",
    "embedding_records",
    "embeddings_from_records",
    "fashion_mnist_dir",
    "image_source",
    "meta_record",
    "open_vectors",
    "public",
    "read_builtin",
    "read_embeddings",
    "read_image_folder",
    "read_image_jsonl",
    "read_images",
    "read_jsonl",
    "resolve_encoder_dir",
    "thread_count",
    "write_embeddings",
    "write_json",
    "write_jsonl",
]
