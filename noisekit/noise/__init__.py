"""Stage 3, noise: a clean manifest -> a noisy variant (``NAME/VARIANT.parquet`` + its report).

In: the clean manifest (and for Small Cluster the images, embedded by ``features.py``). Out: the variant with
training labels changed, ``is_noisy`` flags and ``VARIANT.report.{json,png}`` (``report.py``).
Open ``symmetric.py`` first (the simplest model); then ``small_cluster.py`` and ``official_lists.py``.
"""
