"""Files under a results root: where they live, how they are written, how they are read.

``layout`` names every path under a root and keeps each inside it (experiment ids, symbolic
links); ``atomic`` writes a file durably or not at all (temporary file, fsync, rename, fsync the
folder); ``writer`` appends events to a log and writes the marker (``EventLogWriter``), stamped
by ``clock``'s event clock, which never goes backwards, and measures the filesystem's clock;
``reader`` follows logs incrementally (``LogTail``), scans an experiment folder and lists a root;
``exporters`` makes the result JSON's and the CSV's bytes deterministically; ``results`` lists
and reads the result files back, ``table`` rebuilds ``results.csv`` from them, and ``lock`` keeps
one writer at a time in ``aggregated/``. This is the I/O shell
around ``core/``: it may use the filesystem, ``core/``, ``models/`` and ``exceptions``, and
never the daemon, the recorder, the GPU backends, ``pipeline`` or the CLI, which all build on
it. Nothing is imported here.
"""
