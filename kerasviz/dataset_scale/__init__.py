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
``_summary`` (numbers out), ``command`` (``kerasviz explain`` and ``kerasviz summarize``).
Names load on first use, so the command line can read its options without TensorFlow. Zarr is
an optional dependency: ``pip install 'kerasviz[store]'``.
"""

import importlib

_EXPORTS = {
    "METHODS": "_methods",
    "Explanations": "_store",
    "bootstrap_ci": "_summary",
    "explain_dataset": "_run",
    "format_summary": "_summary",
    "localization_table": "_summary",
    "model_fingerprint": "_store",
    "open_explanations": "_store",
    "summarize": "_summary",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = sorted(_EXPORTS)
