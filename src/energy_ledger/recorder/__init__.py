"""Recording inside the measured GPU processes: each rank writes its own event log and marker.

``recorder`` holds ``ProcessRecorder`` (start, the measured window, finish or fail, and the lock
that the caller's thread shares with the sampler thread); ``window`` holds ``MeasuredWindow``,
what ``window()`` drives: the window's edges, the sampler thread and each sample it appends;
``payloads`` builds and checks what it writes (the config, ``process_started``, request values)
without I/O; ``launch`` reads rank, world size, run id and GPU from the launcher's environment;
``sampler`` reads the GPU and turns NVML failures into warning messages; ``snapshot`` describes
the machine for ``process_started``.
This code runs in the measured program, so it may use ``store/``'s writers (the appended log, or
the segmented layout on a folder or a bucket), objects and layout, ``gpu/``,
``core/``'s events and marker, ``models/`` (the snapshot's schema) and ``exceptions``; it never
imports ``daemon/`` or ``pipeline``, which aggregate the logs later in another process. Nothing
is imported here.
"""
