"""Who launched us: torchrun's and SLURM's variables map to ranks and a master address."""

import pytest
import torch

from training.distributed import first_slurm_host, init_distributed


@pytest.mark.parametrize(
    "nodelist,host",
    [("gpu-[01-04,07],cpu1", "gpu-01"), ("node17", "node17"), ("a[3,5]", "a3"), ("n[008-010]", "n008")],
)
def test_first_slurm_host(nodelist, host):
    assert first_slurm_host(nodelist) == host


def _clear(monkeypatch):
    for var in (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "SLURM_PROCID",
        "SLURM_NTASKS",
        "SLURM_LOCALID",
        "SLURM_NODELIST",
        "MASTER_ADDR",
        "MASTER_PORT",
    ):
        monkeypatch.setenv(var, "")  # recorded, so the test's own setdefault()s are undone too
        monkeypatch.delenv(var)


def test_no_launcher_is_one_process(monkeypatch):
    _clear(monkeypatch)
    info = init_distributed("cpu")
    assert (info.rank, info.world_size, info.is_main, info.distributed) == (0, 1, True, False)
    assert info.device == torch.device("cpu")


def test_slurm_single_task_is_one_process(monkeypatch):
    _clear(monkeypatch)
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert init_distributed("cpu").world_size == 1


def test_slurm_and_torchrun_variables(monkeypatch):
    import training.distributed as d

    _clear(monkeypatch)
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_NODELIST", "gpu-[12-13]")
    assert d._env_ranks() == (5, 8, 1)
    assert d.os.environ["MASTER_ADDR"] == "gpu-12" and d.os.environ["MASTER_PORT"] == "29500"
    monkeypatch.setenv("RANK", "2")  # torchrun's variables win over SLURM's
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert d._env_ranks() == (2, 4, 0)
