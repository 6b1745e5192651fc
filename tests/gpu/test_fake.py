"""Tests of the deterministic fake NVML and of backend selection."""

from __future__ import annotations

import pytest

from energy_ledger.exceptions import NvmlError, NvmlNotSupportedError, NvmlUnavailableError
from energy_ledger.gpu.backend import open_backend
from energy_ledger.gpu.fake import ALWAYS, FakeFaults, FakeNvml, fake_uuid


class ManualClock:
    """A clock the test moves by hand."""

    def __init__(self, t: float = 1_700_000_100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class TestFakeFaultsParse:
    @pytest.mark.parametrize(
        ("spec", "expected"),
        [
            ("", FakeFaults()),
            ("power_w@3,4", FakeFaults(fail_calls={"power_w": frozenset({3, 4})})),
            ("temperature_c@*", FakeFaults(fail_calls={"temperature_c": ALWAYS})),
            ("reset@5; no_energy", FakeFaults(counter_reset_at_read=5, no_energy_counter=True)),
            ("unavailable", FakeFaults(unavailable=True)),
        ],
    )
    def test_valid_specs(self, spec: str, expected: FakeFaults) -> None:
        """Each documented item of a fault spec parses to the matching field."""
        assert FakeFaults.parse(spec) == expected

    @pytest.mark.parametrize("spec", ["power@1", "power_w@x", "reset@", "no_energy@2", "nope"])
    def test_bad_specs(self, spec: str) -> None:
        """A malformed spec is an NvmlError naming the bad item."""
        with pytest.raises(NvmlError, match="bad fake NVML fault"):
            FakeFaults.parse(spec)


class TestFakeTraces:
    def test_energy_is_integral_of_power(self) -> None:
        """The closed-form counter matches a fine trapezoid integral of the power trace."""
        device = FakeNvml(1).devices[0]
        t0, t1, steps = 1_700_000_003.0, 1_700_000_017.0, 14_000
        dt = (t1 - t0) / steps
        integral_j = sum(
            (device.power_at(t0 + i * dt) + device.power_at(t0 + (i + 1) * dt)) / 2 * dt
            for i in range(steps)
        )
        delta_j = (device.energy_at(t1) - device.energy_at(t0)) / 1000
        assert delta_j == pytest.approx(integral_j, abs=0.002)

    def test_readings_follow_the_clock(self) -> None:
        """Power and the counter depend only on the clock: equal times give equal readings."""
        clock = ManualClock()
        device = FakeNvml(2, clock=clock).devices[1]
        first = (device.power_w(), device.energy_mj())
        clock.t += 1.0
        later = device.energy_mj()
        clock.t -= 1.0
        assert (device.power_w(), device.energy_mj()) == first
        assert later > first[1]

    def test_gpus_are_distinct(self) -> None:
        """Every fake GPU has its own UUID and base power."""
        fake = FakeNvml(4)
        assert len({d.uuid for d in fake.devices}) == 4
        assert [d.base_w for d in fake.devices] == [100.0, 125.0, 150.0, 175.0]

    def test_counter_is_integer_millijoules(self) -> None:
        """The counter is an int, as NVML reports it."""
        assert isinstance(FakeNvml(1).devices[0].energy_mj(), int)


class TestFakeLookup:
    def test_by_index_uuid_prefix_and_mig(self) -> None:
        """An index, a UUID prefix and a MIG UUID each find their device."""
        fake = FakeNvml(3, mig_instances=2)
        assert fake.open_device("2") is fake.devices[2]
        assert fake.open_device(fake_uuid(1)) is fake.devices[1]
        mig = fake.open_device(fake.mig_devices[1].uuid)
        assert mig.info().is_mig and mig.info().parent_uuid == fake_uuid(0)

    @pytest.mark.parametrize("spec", ["3", "GPU-nope", "MIG-nope", "GPU-fa4e"])
    def test_unknown_or_ambiguous_device(self, spec: str) -> None:
        """A spec that names no device, or several, is an NvmlError."""
        with pytest.raises(NvmlError, match="fake GPU"):
            FakeNvml(3).open_device(spec)


class TestFakeFaults:
    def test_errors_on_chosen_calls(self) -> None:
        """Only the chosen call numbers of a reading fail."""
        device = FakeNvml(1, faults=FakeFaults.parse("power_w@2")).devices[0]
        device.power_w()
        with pytest.raises(NvmlError, match="power_w call 2"):
            device.power_w()
        device.power_w()
        assert device.calls("power_w") == 3

    def test_always(self) -> None:
        """``*`` makes every call fail."""
        device = FakeNvml(1, faults=FakeFaults.parse("temperature_c@*")).devices[0]
        for _ in range(3):
            with pytest.raises(NvmlError):
                device.temperature_c()

    def test_counter_reset(self) -> None:
        """From the chosen read on, the counter restarts near zero."""
        clock = ManualClock()
        device = FakeNvml(1, clock=clock, faults=FakeFaults(counter_reset_at_read=2)).devices[0]
        before = device.energy_mj()
        clock.t += 0.5
        assert device.energy_mj() == 0
        clock.t += 0.5
        after = device.energy_mj()
        assert 0 < after < before

    def test_no_energy_counter(self) -> None:
        """A GPU without the counter raises NvmlNotSupportedError."""
        device = FakeNvml(1, faults=FakeFaults(no_energy_counter=True)).devices[0]
        with pytest.raises(NvmlNotSupportedError):
            device.energy_mj()

    def test_unavailable(self) -> None:
        """The 'unavailable' fault makes the backend itself fail to start."""
        with pytest.raises(NvmlUnavailableError):
            FakeNvml(faults=FakeFaults(unavailable=True))


class TestOpenBackend:
    def test_env_selects_fake(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """ENERGY_LEDGER_NVML=fake selects the fake, configured by its own variables."""
        monkeypatch.setenv("ENERGY_LEDGER_NVML", "fake")
        monkeypatch.setenv("ENERGY_LEDGER_FAKE_GPUS", "3")
        monkeypatch.setenv("ENERGY_LEDGER_FAKE_FAULTS", "power_w@1")
        backend = open_backend()
        assert isinstance(backend, FakeNvml) and backend.device_count() == 3
        with pytest.raises(NvmlError):
            backend.open_device("0").power_w()

    def test_argument_beats_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An explicit backend name wins over the environment variable."""
        monkeypatch.setenv("ENERGY_LEDGER_NVML", "nvml")
        assert open_backend("fake").name == "fake"

    def test_unknown_name(self) -> None:
        """An unknown backend name is a clear error."""
        with pytest.raises(NvmlError, match="unknown NVML backend"):
            open_backend("cuda")
