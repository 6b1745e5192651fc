"""Exports of a results root for other tools: a Parquet dataset of every result, and
LLenergyMeasure's newer results bundle (docs/data.md).

``lem`` maps a result to LLenergyMeasure 0.7.0's bundle files (pure); ``lem_bundle`` writes
the bundles; ``dataset`` writes the Parquet dataset (pyarrow, the ``parquet`` extra).
"""
