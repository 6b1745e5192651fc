"""The pure core: what a log means, computed without touching the world.

``events`` is the one definition of format version 1 (frozen msgspec structs with their value
rules); ``decode`` turns lines into events and ``upcast`` brings older shapes to the current one;
``state`` holds ``ProcessState`` and the fold ``apply``; ``replay`` reads an open binary stream into
that state, resumably; ``marker`` is the completion marker; ``process`` turns a folded state into a
``ProcessSummary``; ``completeness`` says whether an experiment is done, and why not; ``energy``
attributes energy to physical GPUs; ``aggregation`` builds the ``ExperimentResult``; ``stats`` holds
percentiles and means; ``legacy`` reads LLenergyMeasure's older per-process results; ``live`` gives
a running experiment's figures so far. These modules touch no filesystem, clock, network or logging
configuration: they import a pure subset of the standard library, msgspec, orjson, numpy,
``models/``, ``exceptions`` and each other (``tests/test_architecture.py`` enforces the list).
Nothing is imported here.
"""
