"""GPU readings behind one protocol, so that nothing else sees pynvml or its errors.

``protocol`` holds ``DeviceInfo``, ``GpuDevice`` and ``GpuBackend``, the interface the recorder
reads; ``backend`` holds ``open_backend``, which chooses real NVML or the fake (from its argument
or ``$ENERGY_LEDGER_NVML``) and imports only the one chosen; ``nvml`` is the only module that
imports pynvml, and turns its errors into ``NvmlError`` and its subclasses where they enter;
``fake`` is the deterministic stand-in (power a pure function of the clock, the counter its exact
integral, faults injected on request) for tests, ``simulate`` and machines without a GPU. These
modules import only ``gpu/``, ``core.events`` (the sample field names) and ``exceptions``;
``nvml`` and ``fake`` import ``protocol``, never each other. Nothing is imported here; pynvml
is imported only when ``open_backend`` chooses real NVML.
"""
