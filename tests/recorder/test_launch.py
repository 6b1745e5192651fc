"""Tests for recorder.launch: rank, world size, run id and GPU from the launcher's environment."""

from __future__ import annotations

from typing import Any

import pytest

from energy_ledger.exceptions import LedgerError
from energy_ledger.recorder.launch import launch_from_env, tensor_parallel_size_from_env


class TestLaunchFromEnv:
    """Each launcher's variables give the rank, world size, run id and GPU."""

    @pytest.mark.parametrize(
        ("env", "expected"),
        [
            (
                {"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "2", "TORCHELASTIC_RUN_ID": "r"},
                (2, 4, 2, "r", "2"),
            ),
            (
                {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_LOCALID": "1",
                 "SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0"},
                (1, 2, 1, "77.0", "1"),
            ),
            (
                {"RANK": "1", "WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "t",
                 "ENERGY_LEDGER_RUN_ID": "mine"},
                (1, 2, 0, "mine", "0"),
            ),
            (
                {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "SLURM_PROCID": "1",
                 "SLURM_NTASKS": "2", "SLURM_JOB_ID": "9"},
                (5, 8, 1, "9", "1"),
            ),
            (
                {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "ENERGY_LEDGER_RUN_ID": "x",
                 "CUDA_VISIBLE_DEVICES": "GPU-aa,GPU-bb"},
                (1, 2, 1, "x", "GPU-bb"),
            ),
            (
                {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "3",
                 "SLURM_JOB_ID": "5", "CUDA_VISIBLE_DEVICES": "MIG-abc"},
                (3, 4, 3, "5", "MIG-abc"),
            ),
        ],
    )  # fmt: skip
    def test_launchers(self, env: dict[str, str], expected: tuple[Any, ...]) -> None:
        """torchrun, Slurm and torchrun-inside-srun variables give rank, size, run id and GPU."""
        info = launch_from_env(env)
        got = (info.process_index, info.world_size, info.local_rank, info.run_id)
        assert (*got, info.device_spec) == expected

    def test_single_process_gets_a_run_id(self) -> None:
        """A lone process without launcher variables is rank 0 of 1 with a fresh run id."""
        a, b = launch_from_env({}), launch_from_env({})
        assert (a.process_index, a.world_size, a.device_spec) == (0, 1, "0")
        assert a.run_id != b.run_id

    @pytest.mark.parametrize(
        ("env", "match"),
        [
            ({"RANK": "0"}, "WORLD_SIZE is not"),
            ({"RANK": "4", "WORLD_SIZE": "4", "ENERGY_LEDGER_RUN_ID": "r"}, "not in a world"),
            ({"RANK": "x", "WORLD_SIZE": "4"}, "not an integer"),
            ({"WORLD_SIZE": "2"}, "RANK is not set"),
            ({"RANK": "0", "WORLD_SIZE": "2"}, "no run id"),
            (
                {"RANK": "1", "WORLD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "2",
                 "SLURM_JOB_ID": "1"},
                "disagree",
            ),
            ({"SLURM_PROCID": "0"}, "SLURM_NTASKS"),
            ({"CUDA_VISIBLE_DEVICES": ""}, "hides every GPU"),
            (
                {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "3", "ENERGY_LEDGER_RUN_ID": "r",
                 "CUDA_VISIBLE_DEVICES": "0,1"},
                "shows only 2",
            ),
        ],
    )  # fmt: skip
    def test_errors(self, env: dict[str, str], match: str) -> None:
        """Missing, malformed or contradictory variables are a LedgerError that says why."""
        with pytest.raises(LedgerError, match=match):
            launch_from_env(env)

    @pytest.mark.parametrize(
        ("device", "expected"), [(None, "4"), (1, "5"), ("GPU-xyz", "GPU-xyz")]
    )
    def test_device_override(self, device: int | str | None, expected: str) -> None:
        """An explicit CUDA ordinal indexes CUDA_VISIBLE_DEVICES; a string is used as is."""
        env = {"CUDA_VISIBLE_DEVICES": "4,5"}
        assert launch_from_env(env, device=device).device_spec == expected


class TestTensorParallelSize:
    """``ENERGY_LEDGER_TP_SIZE`` gives the tensor-parallel group size."""

    @pytest.mark.parametrize(
        ("value", "expected"), [(None, None), ("", None), ("  ", None), ("2", 2), (" 8 ", 8)]
    )
    def test_read(self, value: str | None, expected: int | None) -> None:
        """Unset or blank is ``None``; a number is that number."""
        env = {} if value is None else {"ENERGY_LEDGER_TP_SIZE": value}
        assert tensor_parallel_size_from_env(env) == expected
        assert launch_from_env(env).tensor_parallel_size == expected

    @pytest.mark.parametrize(("value", "match"), [("two", "not an integer"), ("-1", "negative")])
    def test_malformed(self, value: str, match: str) -> None:
        """A value that is not a non-negative integer is a LedgerError naming the variable."""
        env = {"ENERGY_LEDGER_TP_SIZE": value}
        with pytest.raises(LedgerError, match=f"ENERGY_LEDGER_TP_SIZE.*{match}"):
            tensor_parallel_size_from_env(env)
