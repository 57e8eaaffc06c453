"""Data: records, manifests, image folders, the hierarchical-VQA benchmark and safe image loading."""

from taxonlens.data.folders import parse_inat_folder, read_image_folder
from taxonlens.data.images import iter_images, load_image, load_image_bytes
from taxonlens.data.manifests import read_manifest, write_manifest
from taxonlens.data.records import Record
from taxonlens.data.vqa import (
    VQARecord,
    benchmark_taxonomy,
    read_vqa_benchmark,
    taxonomy_or_benchmark,
    write_vqa_benchmark,
)

__all__ = [
    "Record",
    "VQARecord",
    "benchmark_taxonomy",
    "iter_images",
    "load_image",
    "load_image_bytes",
    "parse_inat_folder",
    "read_image_folder",
    "read_manifest",
    "read_vqa_benchmark",
    "taxonomy_or_benchmark",
    "write_manifest",
    "write_vqa_benchmark",
]
