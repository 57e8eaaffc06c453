"""``taxonlens predict`` and ``calibrate``: a recognizer built from names, run over photo files
into a resumable table, and back-off thresholds calibrated on labelled photos.

- :mod:`~taxonlens.predict.recognizer`: :class:`Recognizer` and :func:`build_recognizer`;
- :mod:`~taxonlens.predict.rows`: the rows written (ours, and pybioclip's shape);
- :mod:`~taxonlens.predict.files`: :func:`predict_files`, resumable and keyed on what made a row;
- :mod:`~taxonlens.predict.thresholds`: :func:`calibrate_thresholds` and the thresholds file;
- :mod:`~taxonlens.predict.detections`: :func:`predict_detections`, camera-trap detector boxes
  cropped and classified, rolled up per photo by :mod:`~taxonlens.predict.rollup`.
- :mod:`~taxonlens.predict.ray_engine`: ``--engine ray``: the same rows from a Ray Data pipeline,
  as Parquet shards resumed shard by shard (Ray imported only when used).
"""

from taxonlens.predict.detections import predict_detections
from taxonlens.predict.files import OUTPUT_FORMATS, expand_inputs, predict_files
from taxonlens.predict.recognizer import Recognizer, RecognizerOptions, build_recognizer, plain_labels
from taxonlens.predict.rows import prediction_row
from taxonlens.predict.thresholds import Calibration, calibrate_thresholds, read_thresholds, write_thresholds

__all__ = [
    "OUTPUT_FORMATS",
    "Calibration",
    "Recognizer",
    "RecognizerOptions",
    "build_recognizer",
    "calibrate_thresholds",
    "expand_inputs",
    "plain_labels",
    "predict_detections",
    "predict_files",
    "prediction_row",
    "read_thresholds",
    "write_thresholds",
]
