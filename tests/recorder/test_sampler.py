"""Tests of the sampler's ``DeviceReader``: NVML failures become warning messages (fake NVML)."""

from __future__ import annotations

import pytest

from energy_ledger.gpu.fake import FakeFaults, FakeNvml
from energy_ledger.recorder.sampler import DeviceReader


class TestDeviceReader:
    """``DeviceReader.read`` turns NVML failures into warning messages, never exceptions."""

    def test_errors_become_warnings(self) -> None:
        """A failed read leaves the field out and warns once; repeats are only counted."""
        fake = FakeNvml(1, faults=FakeFaults.parse("power_w@*"))
        reader = DeviceReader(fake.devices[0])
        fields, warnings = reader.read()
        assert "power_w" not in fields and "energy_mj" in fields
        assert len(warnings) == 1 and "power_w" in warnings[0]
        assert reader.read()[1] == []
        assert reader.failure_summary() == ["NVML read of power_w failed 2 times in total"]

    def test_unsupported_is_not_asked_again(self) -> None:
        """A reading the GPU does not support is dropped after one warning."""
        fake = FakeNvml(1, faults=FakeFaults(no_energy_counter=True))
        reader = DeviceReader(fake.devices[0])
        assert "no longer" not in reader.read()[1][0]
        reader.read()
        assert fake.devices[0].calls("energy_mj") == 1

    def test_counter_reset_warns_once(self) -> None:
        """A counter that goes backwards is reported once."""
        reader = DeviceReader(FakeNvml(1).devices[0])
        assert reader.check_energy(1000) is None
        assert "reset" in (reader.check_energy(10) or "")
        assert reader.check_energy(5) is None
        assert reader.counter_reset


class TestCounterReads:
    """The counter probe at the start and the reads at the window's edges never raise."""

    @pytest.mark.parametrize(
        ("faults", "has_counter", "warning"),
        [
            (FakeFaults(), True, None),
            (FakeFaults(no_energy_counter=True), False, "has no NVML energy counter"),
            (FakeFaults.parse("energy_mj@1"), True, "probe failed"),
        ],
    )
    def test_probe(self, faults: FakeFaults, has_counter: bool, warning: str | None) -> None:
        """A missing counter is said once and not read again; a failed probe is only said."""
        device = FakeNvml(1, faults=faults).devices[0]
        reader = DeviceReader(device)
        message = reader.probe_counter(device.info().parent_uuid)
        assert reader.has_counter is has_counter
        if warning is None:
            assert message is None
        else:
            assert warning in (message or "")
        reader.read()
        assert device.calls("energy_mj") == (2 if has_counter else 1)

    def test_edge_reads_the_counter(self) -> None:
        """An edge read gives the counter and no warning."""
        device = FakeNvml(1).devices[0]
        value, warning = DeviceReader(device).edge_energy("window start")
        assert isinstance(value, int) and value > 0 and warning is None

    def test_failed_edge_read(self) -> None:
        """A failed edge read gives no value and a warning naming the edge."""
        device = FakeNvml(1, faults=FakeFaults.parse("energy_mj@1")).devices[0]
        value, warning = DeviceReader(device).edge_energy("window end")
        assert value is None
        assert "read at window end failed" in (warning or "")

    def test_edge_without_counter_asks_nothing(self) -> None:
        """Without a counter an edge read calls no NVML at all."""
        device = FakeNvml(1).devices[0]
        assert DeviceReader(device, read_energy=False).edge_energy("window start") == (None, None)
        assert device.calls("energy_mj") == 0

    def test_reset_between_edges(self) -> None:
        """A counter that went backwards between the edges is reported by the second read."""
        device = FakeNvml(1, faults=FakeFaults(counter_reset_at_read=2)).devices[0]
        reader = DeviceReader(device)
        assert reader.edge_energy("window start")[1] is None
        _, warning = reader.edge_energy("window end")
        assert "counter reset" in (warning or "") and reader.counter_reset
