"""Stage 2, sources: a raw dataset archive or folder -> the clean manifest (``NAME/clean.parquet``).

In: the official files of CARS196, CUB-200-2011, SOP, Food-101N, digits, Omniglot, or a crawl folder (CARS-98N).
Out: a :class:`noisekit.manifest.Manifest` with the DML split (train and test classes disjoint).
Open ``build.py`` first (what ``noisekit build`` runs), then one reader per dataset; ``common.py`` holds their checks.
"""
