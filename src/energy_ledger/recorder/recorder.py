"""``ProcessRecorder``: measures one GPU process and writes its ledger.

Three lines in a torchrun/accelerate/Slurm worker::

    with ProcessRecorder.from_env("results", "llama-8b-bs32", config=cfg) as rec:
        rec.baseline(seconds=5)
        with rec.window():
            for r in requests:
                rec.request(latency_ms=..., input_tokens=..., output_tokens=...)

Entering writes ``process_started`` (with the environment snapshot); ``window()`` reads the energy
counter at its start and end and runs the background sampler in between (``window``); leaving
normally writes ``process_finished`` and the completion marker, leaving with an exception writes
``process_failed`` (no marker, so ``recover`` can account for the rank) and re-raises.

Storage: the root is a folder or a bucket URL (``s3://``, ``gs://``, ``az://``). A folder gets the
appended log (``EventLogWriter``) unless ``layout="segmented"`` (or ``ENERGY_LEDGER_LAYOUT``) asks
for segments; a bucket always gets segments (``SegmentedLogWriter``, docs/format.md §7), put by a
background uploader so that no put happens under the lock ``request()`` takes.

Threading: the writer is not thread-safe, so the caller's thread and the sampler thread
append under one lock. ``request()`` never touches NVML (an energy read costs milliseconds): it
builds the wire dict, checks plain ints and floats inline, leaves the rest to ``payloads`` and
appends. NVML failures after the start become ``warning`` events (``sampler.DeviceReader`` words
them), never exceptions in the measured program; so do write failures (a full disk): the first one
is logged, the process is left without a marker and nothing more is written (``guard``).

Time: events are stamped by a monotonic-anchored clock (``store.clock``), so ``t`` never goes
backwards; ``clock`` events (where: docs/recorder.md) tie it to the host's clocks and the results
filesystem's.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from energy_ledger.core.events import FORMAT_VERSION
from energy_ledger.core.marker import Marker, SegmentedMarker
from energy_ledger.exceptions import LedgerError
from energy_ledger.gpu.backend import open_backend
from energy_ledger.gpu.protocol import DeviceInfo, GpuBackend, GpuDevice
from energy_ledger.recorder import payloads
from energy_ledger.recorder.guard import LossGuard, is_write_failure
from energy_ledger.recorder.launch import (
    LaunchInfo,
    check_peers,
    check_segmented_peers,
    launch_from_env,
    layout_from_env,
)
from energy_ledger.recorder.payloads import config_hash  # re-exported: it was defined here
from energy_ledger.recorder.sampler import DEFAULT_SAMPLE_HZ, DeviceReader, baseline_fields
from energy_ledger.recorder.snapshot import build_snapshot
from energy_ledger.recorder.window import MeasuredWindow
from energy_ledger.store.clock import EventClock, event_clock
from energy_ledger.store.layout import ResultsLayout
from energy_ledger.store.logwriter import Layout, LogWriter, check_layout, open_log_writer
from energy_ledger.store.objects import ObjectStore, is_url, open_objects
from energy_ledger.store.segments import segments_prefix

logger = logging.getLogger(__name__)

_V = FORMAT_VERSION
_INF = float("inf")


class ProcessRecorder:
    """Record one GPU process's measurement into ``<root>/raw/<experiment_id>/``.

    Prefer :meth:`from_env`, which reads rank, world size, run id and device from the launcher.

    Args:
        root: the results root: a folder, or a bucket URL (``s3://bucket/prefix``, ``gs://``,
            ``az://``; needs the ``s3`` extra), which is written in the segmented layout.
        experiment_id: the experiment (folder name under ``raw``).
        launch: who this process is (rank, world size, run id, device).
        config: the experiment's effective config (written, and hashed for grouping).
        nvml: ``"nvml"``, ``"fake"``, a ``GpuBackend`` instance, or ``None`` for
            ``$ENERGY_LEDGER_NVML`` (default real NVML).
        sample_hz: background sampling rate in the window.
        clock: the event clock (Unix seconds); default a monotonic-anchored one, which never
            goes backwards. Tests inject one (give a fake backend the same).
        backend: the inference backend name written to ``process_started``.
        backend_version: its version.
        snapshot_packages: list installed packages in the snapshot.
        writer_options: passed to the writer: ``EventLogWriter`` (flush and fsync policy) or
            ``SegmentedLogWriter`` (when to cut a segment; ``background``, default True here,
            and ``max_pending`` for its uploader).
        tensor_parallel_size: ranks per tensor-parallel group (consecutive ranks), default
            ``launch.tensor_parallel_size``; only the first rank of each group counts its
            requests (``payloads.request_ownership``).
        counts_requests: whether this process's requests count, overriding the above.
        clock_interval_sec: time between ``clock`` events in the window (they ride on
            samples, so the interval is rounded up to the sampling interval).
        layout: ``"appended"`` (one log file, the default for a folder) or ``"segmented"``
            (docs/format.md §7; the only layout of a bucket). ``None``: for a folder
            ``$ENERGY_LEDGER_LAYOUT``, else appended; for a bucket segmented.

    Attributes:
        root: the root as given (a URL), or made absolute (a folder).
        layout: the folder root's paths; ``None`` for a bucket.
        log_layout: ``"appended"`` or ``"segmented"``.

    Raises:
        LedgerError: a rate or interval is not positive, the tensor-parallel size is below 1
            or does not divide the world size, or the layout is unknown (or ``"appended"``
            for a bucket).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        experiment_id: str,
        *,
        launch: LaunchInfo,
        config: Any = None,
        nvml: str | GpuBackend | None = None,
        sample_hz: float = DEFAULT_SAMPLE_HZ,
        clock: Callable[[], float] | None = None,
        backend: str = "pytorch",
        backend_version: str | None = None,
        snapshot_packages: bool = True,
        writer_options: Mapping[str, Any] | None = None,
        tensor_parallel_size: int | None = None,
        counts_requests: bool | None = None,
        clock_interval_sec: float = 5.0,
        layout: Layout | None = None,
    ) -> None:
        if not sample_hz > 0:
            raise LedgerError(f"sample_hz must be > 0, got {sample_hz}")
        if not clock_interval_sec > 0:
            raise LedgerError(f"clock_interval_sec must be > 0, got {clock_interval_sec}")
        if tensor_parallel_size is None:
            tensor_parallel_size = launch.tensor_parallel_size
        self._counts_requests = payloads.request_ownership(
            launch.process_index, launch.world_size, tensor_parallel_size, counts_requests
        )
        url = is_url(root)
        asked: str | None = layout if layout is not None or url else layout_from_env()
        self.log_layout: Layout = check_layout(root, asked)
        self.root = str(root) if url else os.path.abspath(root)
        self.layout: ResultsLayout | None = None if url else ResultsLayout.at(root)
        self.experiment_id = experiment_id
        self.launch = launch
        self.config = payloads.normalise_config(config)
        self.sample_hz = sample_hz
        self._nvml_choice = nvml
        self._clock_choice = clock
        self._event_clock: EventClock = event_clock(clock)
        self._clock = self._event_clock.now
        self._clock_interval_sec = clock_interval_sec
        self._backend_name = backend
        self._backend_version = backend_version
        self._snapshot_packages = snapshot_packages
        self._writer_options = dict(writer_options or {})
        self._lock = threading.Lock()
        self._writer: LogWriter | None = None
        self._guard: LossGuard | None = None
        self._gpu: GpuBackend | None = None
        self._device: GpuDevice | None = None
        self._reader: DeviceReader | None = None
        self._window: MeasuredWindow | None = None  # set once window() has begun
        self._in_window = False
        self.device_info: DeviceInfo | None = None
        self.marker: Marker | SegmentedMarker | None = None
        self.sampler_cpu_sec = 0.0
        self.samples = 0

    @classmethod
    def from_env(
        cls,
        root: str | os.PathLike[str],
        experiment_id: str,
        *,
        config: Any = None,
        environ: Mapping[str, str] | None = None,
        device: int | str | None = None,
        **options: Any,
    ) -> ProcessRecorder:
        """A recorder for this process as the launcher describes it (see ``launch_from_env``).

        Args:
            root: the results root.
            experiment_id: the experiment.
            config: the experiment's effective config.
            environ: the environment to read (default ``os.environ``).
            device: the CUDA ordinal this process uses, or an NVML spec (UUID, MIG id);
                default: the ``LOCAL_RANK``-th visible device.
            **options: the keyword arguments of the constructor (a ``tensor_parallel_size``
                given here wins over ``$ENERGY_LEDGER_TP_SIZE``, a ``layout`` over
                ``$ENERGY_LEDGER_LAYOUT``).

        Raises:
            LedgerError: rank, world size, run id, device or tensor-parallel size cannot be
                determined, or disagree.
        """
        launch = launch_from_env(environ, device=device)
        if options.get("layout") is None and not is_url(root):
            options["layout"] = layout_from_env(environ)
        return cls(root, experiment_id, launch=launch, config=config, **options)

    # Lifecycle -------------------------------------------------------------------------------

    @property
    def log_path(self) -> str:
        """The event log this recorder writes: a file, or where its segments go (a folder's
        path or a bucket's prefix, ending with ``/``)."""
        if self._writer is not None:
            return os.fspath(self._writer.path)
        index = self.launch.process_index
        if self.layout is not None and self.log_layout == "appended":
            return str(self.layout.log_path(self.experiment_id, index))
        return f"{self.root.rstrip('/')}/{segments_prefix(self.experiment_id, index)}"

    def start(self) -> ProcessRecorder:
        """Open NVML and the device, write ``process_started``; done by ``with`` on entry.

        Raises:
            NvmlUnavailableError: NVML cannot be used here (say ``ENERGY_LEDGER_NVML=fake``).
            NvmlError: the device named by the launcher does not exist.
            LedgerError: the log exists already, other ranks disagree on run id/world size, or
                a bucket cannot be used (no obstore, a bad URL, a listing refused).
        """
        if self._writer is not None:
            raise LedgerError("recorder already started")
        launch = self.launch
        self._event_clock = event_clock(self._clock_choice)  # anchored now, at the start
        self._clock = self._event_clock.now
        objects: ObjectStore | None = None
        if self.log_layout == "segmented":
            objects = open_objects(self.root)
        if self.layout is not None:
            check_peers(self.layout.experiment_dir(self.experiment_id), launch)
        if objects is not None:
            check_segmented_peers(objects, self.experiment_id, launch)
        choice = self._nvml_choice
        gpu = choice if choice is not None and not isinstance(choice, str) else open_backend(choice)
        self._gpu = gpu
        try:
            device = gpu.open_device(launch.device_spec)
            info = device.info()
            warnings: list[str] = []
            try:
                environment: dict[str, Any] | None = build_snapshot(
                    gpu, info, packages=self._snapshot_packages
                )
            except LedgerError as exc:
                environment = None
                warnings.append(f"no environment snapshot: {exc}")
            reader = DeviceReader(device)
            if probe_warning := reader.probe_counter(info.parent_uuid):
                warnings.append(probe_warning)
            options = dict(self._writer_options)
            if objects is not None:  # puts off the lock's hot path (store.uploader)
                options.setdefault("background", True)
            self._writer = open_log_writer(
                self.root,
                self.experiment_id,
                launch.process_index,
                layout=self.log_layout,
                objects=objects,
                clock=self._clock,
                **options,
            )
        except BaseException:
            gpu.shutdown()
            raise
        self._device = device
        self.device_info = info
        self._reader = reader
        guard = self._guard = LossGuard(self._writer)
        started = payloads.started_fields(
            self.experiment_id,
            launch,
            info,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            backend=self._backend_name,
            backend_version=self._backend_version,
            environment=environment,
            config=self.config,
            counts_requests=self._counts_requests,
        )
        with self._lock:
            guard.append("process_started", **started)
            self._clock_locked()
            for message in [*payloads.device_warnings(info, gpu.name), *warnings]:
                self._warn_locked(message)
        return self

    def __enter__(self) -> ProcessRecorder:
        if self._writer is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or (isinstance(exc, SystemExit) and exc.code in (0, None)):
            self.finish()
        else:
            self.fail(f"{type(exc).__name__}: {exc}")

    def finish(self) -> Marker | SegmentedMarker | None:
        """Write ``process_finished`` and the completion marker; release NVML.

        Returns:
            The marker (a ``SegmentedMarker`` in the segmented layout); ``None``, without
            raising, when a write failed (see ``write_error``). In the segmented layout this
            waits for the uploader to put every segment, then puts the marker.

        Raises:
            LedgerError: the recorder was not started, or is inside ``window()``.
        """
        guard = self._require_guard()
        if self._in_window:
            raise LedgerError("finish() inside window(): leave the window first")
        try:
            with self._lock:
                self._clock_locked()
                self.marker = guard.close()
        finally:
            self._release()
        return self.marker

    @property
    def write_error(self) -> str | None:
        """Why this process is not recorded (a write failed), or ``None`` while it is fine."""
        return self._guard.lost if self._guard is not None else None

    def fail(self, error: str) -> None:
        """Write ``process_failed`` (no marker) and release NVML; never raises for I/O."""
        writer, guard = self._writer, self._guard
        try:
            if writer is not None and guard is not None:
                with self._lock:
                    if not guard.closed and writer.next_seq > 0:
                        self._clock_locked()
                    guard.fail(error)  # a write failure is logged there, not raised
        finally:
            self._release()

    def _release(self) -> None:
        if self._window is not None:
            self._window.stop_sampling()
        if self._gpu is not None:
            self._gpu.shutdown()
            self._gpu = None

    def _require_guard(self) -> LossGuard:
        """The guarded writer; raises when not started or already finished (not when lost)."""
        guard = self._guard
        if guard is None:
            raise LedgerError("recorder not started: use it as a context manager")
        if guard.writer.closed and guard.lost is None:
            raise LedgerError("recorder already finished")
        return guard

    # Events ----------------------------------------------------------------------------------

    def _clock_locked(self, reading: tuple[float, float] | None = None) -> None:
        """Append a ``clock`` event: ``t`` and ``monotonic_sec`` from ``reading`` (one instant;
        default: now), ``wall_t`` read right after, and the filesystem offset (the writer's)."""
        t, mono_sec = self._event_clock.reading() if reading is None else reading
        self._require_guard().append_clock(t, mono_sec, time.time())

    def _warn_locked(self, message: str) -> None:
        logger.warning("%s", message)
        if not (guard := self._require_guard()).closed:
            guard.append_raw(
                {"v": _V, "seq": 0, "t": self._clock(), "type": "warning", "message": message}
            )

    def warning(self, message: str) -> None:
        """Write a ``warning`` event (it is carried into the aggregated result)."""
        self._require_guard()
        with self._lock:
            self._warn_locked(message)

    def event(self, type_name: str, **fields: Any) -> None:
        """Write a validated event such as ``warmup`` or ``compute`` (see the format)."""
        guard = self._require_guard()
        with self._lock:
            guard.append(type_name, **fields)

    def baseline(self, seconds: float = 5.0, *, power_w: float | None = None) -> float | None:
        """Measure idle power for ``seconds`` (or record a known ``power_w`` as "cached").

        Call it before ``window()``, with the GPU idle. Power is read at the sampling rate.

        Returns:
            The baseline power in watts, or ``None`` when no reading succeeded (a warning is
            written instead of the event).
        """
        self._require_guard()
        if self._window is not None:
            raise LedgerError("baseline() must come before window()")
        assert self._device is not None
        fields, warning = baseline_fields(self._device, seconds, self.sample_hz, power_w)
        if warning:
            self.warning(f"baseline: {warning}")
        if fields is None:
            return None
        self.event("baseline", **fields)
        return float(fields["power_w"])

    @contextmanager
    def window(self) -> Iterator[ProcessRecorder]:
        """The measured window: energy counter at both ends, background sampling in between.

        Only one window per process (the format measures one span). On leaving, a counter
        that reset or failed is left out of ``window_ended``, so the aggregator integrates the
        power samples instead.
        """
        guard = self._require_guard()
        if self._window is not None:
            raise LedgerError("only one window() per recorder")
        assert self._reader is not None
        window = MeasuredWindow(
            guard,
            self._reader,
            self._lock,
            self._event_clock,
            sample_hz=self.sample_hz,
            clock_interval_sec=self._clock_interval_sec,
            append_clock=self._clock_locked,
            warn=self._warn_locked,
        )
        window.begin()
        self._window = window
        self._in_window = True
        window.start_sampling()
        try:
            yield self
        finally:
            self._in_window = False
            window.stop_sampling()
            self.sampler_cpu_sec, self.samples = window.cpu_sec, window.samples
            window.end()

    def request(
        self,
        latency_ms: float,
        input_tokens: int,
        output_tokens: int,
        ttft_ms: float | None = None,
        itl_ms: Sequence[float] | None = None,
    ) -> None:
        """Record one completed request (the hot path: no NVML, one dict, one append).

        ``t`` is read under the lock, like every event's: read before it, a sample appended by
        the sampler thread in between would carry a later ``t`` than this request, and the log's
        time would go backwards. A failed write (a full disk) does not raise (``guard``).

        Raises:
            LedgerError: outside ``window()``, or a value of the wrong type.
        """
        if not self._in_window:
            raise LedgerError("request() outside window()")
        obj = {
            "v": _V,
            "seq": 0,
            "t": 0.0,
            "type": "request",
            "latency_ms": latency_ms,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
        }
        if (
            type(input_tokens) is not int
            or type(output_tokens) is not int
            or (type(latency_ms) is not float and type(latency_ms) is not int)
            or input_tokens < 0
            or output_tokens < 0
            or not 0.0 <= latency_ms < _INF
        ):
            payloads.normalise_request(obj)
        if ttft_ms is not None:
            if type(ttft_ms) is not float or not 0.0 <= ttft_ms < _INF:
                ttft_ms = payloads.checked_ttft_ms(ttft_ms)
            obj["ttft_ms"] = ttft_ms
        if itl_ms is not None:
            obj["itl_ms"] = payloads.itl_values(itl_ms)
        with self._lock:
            if (guard := self._guard).lost is None:  # type: ignore[union-attr]
                obj["t"] = self._clock()
                try:  # ``guard.append_raw`` would cost a call more per request
                    self._writer.append_raw(obj)  # type: ignore[union-attr]
                except (OSError, LedgerError) as exc:
                    if not is_write_failure(exc):
                        raise
                    guard.lose(exc)  # type: ignore[union-attr]


__all__ = ["LaunchInfo", "ProcessRecorder", "config_hash", "launch_from_env"]
