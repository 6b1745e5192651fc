"""The ``energy-ledger watch`` daemon: emit every complete experiment under a root exactly once.

``watcher`` holds the loop and ``run`` wraps it in signal handling and exit codes; around them
``sources`` and ``changes`` say what changed (inotify or polling, chosen with ``fsdetect``),
``records`` remembers what was emitted, ``hooks`` runs ``--on-emit``, ``lease`` keeps one daemon per
root across hosts, ``status`` writes and reads ``status.json``, ``config`` merges the settings, and
``metrics`` and ``exporter`` serve ``/metrics`` (prometheus-client, imported by ``exporter`` alone
and only with a metrics port). This is I/O shell: it may use ``pipeline`` and ``store/`` (which hold
the same code path ``replay`` uses), the filesystem, threads, subprocesses, signals and watchdog; it
never imports ``recorder/`` or ``gpu/``, which run inside the measured GPU processes. Nothing is
imported here: reading a daemon's status (``daemon.status``) loads neither watchdog nor the loop.
"""
