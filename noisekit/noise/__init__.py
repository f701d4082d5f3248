"""Stage 3, noise: a clean manifest -> a noisy variant (``NAME/VARIANT.parquet`` + its report).

In: the clean manifest (and for Small Cluster the images, embedded by ``features.py``); for a cleaned variant, a
variant and the folder of a ``prism train`` run on it (``run_report.py``). Out: the variant with training labels
changed (or flagged images left out), ``is_noisy`` flags and ``VARIANT.report.{json,png}`` (``report.py``).
Open ``symmetric.py`` first (the simplest model); then ``small_cluster.py``, ``official_lists.py`` and ``cleaned.py``.
"""
