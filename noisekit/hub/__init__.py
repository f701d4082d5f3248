"""Stage 4, hub: variants <-> Hugging Face datasets.

In: a built dataset's manifests and images. Out: a dataset repository folder (Parquet shards, a dataset card),
pushed to the Hub, and back: a published configuration turned into a manifest prism trains on.
Open ``publish.py`` first (``noisekit publish``); ``published.py`` is the folder layout, ``repo.py`` the Hub side
(push, ``noisekit.load``), ``refs.py`` the one spelling of a reference (``DIR/CONFIG``, ``hub:OWNER/REPO:CONFIG``),
``reach.py`` whether the Hub answers, ``materialise.py`` a configuration back into a Manifest for prism;
``shards.py`` and ``cards.py`` write the parts.
"""
