"""Dataset-scale explanations: stream a data set through map methods into a store on disk.

- :func:`explain_dataset` (``kerasviz.explain_dataset``): ``tf.data`` or a folder of files in,
  a chunked Zarr store out, with bounded memory, resumption after a crash (SIGKILL included),
  and ``tf.distribute`` strategies for several devices or machines.
- :func:`open_explanations` (``kerasviz.open_explanations``): the store's arrays, a per-image
  table and the manifest.
- :func:`summarize` and :func:`localization_table`: metric means with bootstrap confidence
  intervals, and the README's localization table, from a store.

Modules: ``_sources`` (data in), ``_methods`` (method specs and per-replica kernels),
``_store`` (the Zarr layout, manifest and fingerprint), ``_run`` (the run itself),
``_summary`` (numbers out). Zarr is an optional dependency: ``pip install 'kerasviz[store]'``.
"""

from kerasviz.dataset_scale._methods import METHODS
from kerasviz.dataset_scale._run import explain_dataset
from kerasviz.dataset_scale._store import Explanations, model_fingerprint, open_explanations
from kerasviz.dataset_scale._summary import (
    bootstrap_ci,
    format_summary,
    localization_table,
    summarize,
)

__all__ = [
    "METHODS",
    "Explanations",
    "bootstrap_ci",
    "explain_dataset",
    "format_summary",
    "localization_table",
    "model_fingerprint",
    "open_explanations",
    "summarize",
]
