"""Stage 1, crawl: an image URL list (the authors' CARS_98N_list.csv) -> a folder of images + ``crawl.parquet``.

In: ``url,label`` rows (``url_list.py``). Out: the downloaded images and one record row per list row
(``record.py``), which ``noisekit build cars98n`` (sources) assembles; ``phash.py`` finds near-duplicates there.
Open ``crawler.py`` first: the download loop, after img2dataset's design (``fetch.py``: one safe HTTP fetch).
"""
