"""Checkpoint writing: atomic under failure, pruning of rolling checkpoints, loading and its errors."""

import json

import pytest
import torch

from model import ModelConfig, PretrainingModel
from model.io import load_model
from training.checkpoint import CheckpointWriter, latest_checkpoint, list_checkpoints, load_checkpoint
from utils.errors import UserError
from utils.paths import REPO_ROOT


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return PretrainingModel(ModelConfig.from_json(REPO_ROOT / "configs" / "tiny.json"))


def _save(writer, step, model, kept=False, extra=0.0):
    state = {"step": step, "tensor": torch.full((3,), float(step) + extra)}
    writer.save(step, model, state, {"seed": 1}, kept, {"tokens_seen": step})
    writer.wait()


def test_round_trip_and_layout(tiny, tmp_path):
    writer = CheckpointWriter(tmp_path, keep_last=2)
    _save(writer, 7, tiny, kept=True)
    d = tmp_path / "checkpoints" / "step_7"
    names = {"model.safetensors", "config.json", "args.json", "code_version.json", "training_state.pt"}
    assert names <= {p.name for p in d.iterdir()}
    assert set(json.loads((d / "code_version.json").read_text())) == {"git_commit", "git_dirty"}
    model, state, args = load_checkpoint(d)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), tiny.state_dict().values()))
    assert state["step"] == 7 and torch.equal(state["tensor"], torch.full((3,), 7.0)) and args == {"seed": 1}
    assert load_model(d).config == tiny.config  # the contract: any step folder loads on its own


def test_rolling_checkpoints_are_pruned_kept_ones_stay(tiny, tmp_path):
    writer = CheckpointWriter(tmp_path, keep_last=2)
    for step in range(1, 7):
        _save(writer, step, tiny, kept=step in (2, 3))
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 3, 5, 6]
    assert latest_checkpoint(tmp_path).name == "step_6"


def test_a_failed_write_leaves_the_good_checkpoint(tiny, tmp_path, monkeypatch):
    writer = CheckpointWriter(tmp_path, keep_last=2)
    _save(writer, 4, tiny)
    good = (tmp_path / "checkpoints" / "step_4" / "training_state.pt").read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)  # dies after model.safetensors, before the rename
    writer.save(4, tiny, {"step": 4, "tensor": torch.zeros(1)}, {}, False, {})
    with pytest.raises(UserError, match="disk full; the last good checkpoint is .*step_4, intact"):
        writer.wait()
    writer.save(5, tiny, {"step": 5}, {}, False, {})
    with pytest.raises(UserError, match="disk full"):
        writer.wait()
    monkeypatch.undo()
    assert (tmp_path / "checkpoints" / "step_4" / "training_state.pt").read_bytes() == good
    assert not (tmp_path / "checkpoints" / "step_5").exists()
    assert latest_checkpoint(tmp_path).name == "step_4"


def test_resaving_a_step_replaces_it_whole(tiny, tmp_path):
    writer = CheckpointWriter(tmp_path, keep_last=2)
    _save(writer, 3, tiny)
    _save(writer, 3, tiny, extra=0.5)
    _, state, _ = load_checkpoint(tmp_path / "checkpoints" / "step_3")
    assert torch.equal(state["tensor"], torch.full((3,), 3.5))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_3"]


def test_a_save_cut_short_by_a_kill_is_cleared_when_the_run_restarts(tiny, tmp_path):
    writer = CheckpointWriter(tmp_path, keep_last=2)
    _save(writer, 2, tiny)
    _save(writer, 3, tiny)
    root = tmp_path / "checkpoints"
    (root / ".tmp_step_4").mkdir()  # killed while writing step 4
    (root / ".tmp_step_4" / "model.safetensors").write_bytes(b"half")
    (root / "step_3").rename(root / ".old_step_3")  # killed between the two renames of a re-save of step 3
    (root / "step_2").rename(root / ".old_step_2")  # ... and a stale .old_ beside a complete step_2
    _save(writer, 2, tiny, extra=0.5)
    CheckpointWriter(tmp_path, keep_last=2)  # the restarted run's writer
    assert sorted(p.name for p in root.iterdir()) == ["step_2", "step_3"]
    _, state, _ = load_checkpoint(root / "step_3")
    assert torch.equal(state["tensor"], torch.full((3,), 3.0))  # the complete previous step_3, back in place
    _, state, _ = load_checkpoint(root / "step_2")
    assert torch.equal(state["tensor"], torch.full((3,), 2.5))  # the newer step_2 wins over the stale copy


@pytest.mark.parametrize("victim", ["training_state.pt", "model.safetensors", "args.json"])
def test_truncated_files_are_one_line_user_errors(tiny, tmp_path, victim):
    writer = CheckpointWriter(tmp_path, keep_last=2)
    _save(writer, 1, tiny)
    path = tmp_path / "checkpoints" / "step_1" / victim
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as err:
        load_checkpoint(path.parent)
    assert victim in str(err.value) and "\n" not in str(err.value)
