"""Model zoo pieces that need no engine: spec checks, planning, shards, SLURM script, sparsification,
agreement, ridge regression, flatten / unflatten, the model-level split."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.errors import UserError
from utils.paths import REPO_ROOT
from utils.shard import parse_shard
from zoo.analyses import agreement_by_hparam, agreement_matrix, r2, ridge_fit, ridge_predict
from zoo.loader import flatten, group_of, model_split, select_names, split_groups, unflatten
from zoo.plan import expand, finetune_argv, pretrain_argv, select
from zoo.slurm import sbatch_script
from zoo.sparsify import prunable_names, prune_masks, sparsify_
from zoo.spec import load_spec


def _spec(tmp_path, **changes) -> Path:
    spec = json.loads((REPO_ROOT / "configs" / "zoo" / "bert_zoo.json").read_text())
    for key, value in changes.items():
        target = spec
        *path, last = key.split(".")
        for p in path:
            target = target[p]
        if value is None:
            del target[last]
        else:
            target[last] = value
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def test_full_spec_plans_the_zoo():
    """configs/zoo/bert_zoo.json: 6 pretraining runs x 10 epochs + 72 fine-tuning runs x 6 states = 492."""
    spec = load_spec(REPO_ROOT / "configs" / "zoo" / "bert_zoo.json")
    runs = expand(spec)
    pt = [r for r in runs if r.stage == "pretrain"]
    ft = [r for r in runs if r.stage == "finetune"]
    assert len(pt) == 6 and len(ft) == 72
    assert sum(len(r.state_epochs) for r in runs) == 60 + 72 * 6
    assert len({r.run_id for r in runs}) == len(runs)
    assert {(r.hparams["learning_rate"], r.hparams["weight_decay"]) for r in pt} == {
        (lr, wd) for lr in (1e-4, 3e-4, 5e-4) for wd in (0.01, 0.001)
    }
    assert all(r.parent in {p.run_id for p in pt} and r.parent_epoch == 10 for r in ft)
    argv = pretrain_argv(spec, pt[0], Path("/z/runs") / pt[0].run_id, 163)
    flags = dict(zip(argv[::2], argv[1::2]))
    assert (
        flags["--scheduler"] == "constant" and flags["--warmup_steps"] == "0" and flags["--mask_p"] == "0.15"
    )
    assert flags["--max_steps"] == "1630" and flags["--checkpoint_steps"] == "163:1630:163"
    assert flags["--seq_length"] == "512" and flags["--validation_every"] == "163"
    sst2 = next(r for r in ft if r.task == "sst2")
    fl = finetune_argv(spec, sst2, Path("/z/x"), Path("/z/p"))
    flags = dict(zip(fl[::2], fl[1::2]))
    assert flags["--split"] == "resplit" and flags["--split_fractions"] == "0.8,0.1,0.1"
    assert flags["--head_hidden_sizes"] == "768" and flags["--epochs"] == "5"


def test_tiny_spec_parses():
    spec = load_spec(REPO_ROOT / "configs" / "zoo" / "tiny_cpu.json")
    assert sum(len(r.state_epochs) for r in expand(spec)) == 20


@pytest.mark.parametrize(
    "change, words",
    [
        ({"pretrain.learnig_rates": [1e-4]}, ["unknown key", "pretrain.learnig_rates"]),
        ({"pretrain.weight_decays": []}, ["empty grid", "pretrain.weight_decays"]),
        (
            {"finetune.sts": {"learning_rates": [1e-5], "weight_decays": [0.0], "data_dir": "x"}},
            ["unknown task", "finetune.sts"],
        ),
        ({"base_model": "/nonexistent/base"}, ["base_model", "/nonexistent/base"]),
    ],
)
def test_bad_spec_fails_before_any_run(tmp_path, change, words):
    """One line naming the problem, exit code 2, no traceback, and no zoo folder written."""
    spec = _spec(tmp_path, **change)
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "zoo.py"), "run", str(spec), "--zoo_dir", str(tmp_path / "zoo")],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and all(w in lines[0] for w in words), lines
    assert not (tmp_path / "zoo").exists()


def test_spec_rejects_collisions_and_types(tmp_path):
    from zoo.plan import check_engines

    with pytest.raises(UserError, match="'pretrain.epochs' has the wrong type"):
        load_spec(_spec(tmp_path, **{"pretrain.epochs": "10"}))
    # the SQuAD head takes an MLP like classification (the zoo plan's one hidden layer)
    assert load_spec(_spec(tmp_path, **{"finetune.squad.head": {"hidden_sizes": [768]}}))
    with pytest.raises(UserError, match="set by the zoo"):
        check_engines(load_spec(_spec(tmp_path, **{"pretrain.extra_args": {"learning_rate": 1}})))
    with pytest.raises(UserError, match="not a flag"):
        check_engines(load_spec(_spec(tmp_path, **{"pretrain.extra_args": {"no_such_flag": 1}})))
    with pytest.raises(UserError, match="name the negation"):
        check_engines(load_spec(_spec(tmp_path, **{"finetune.sst2.extra_args": {"tensorboard": False}})))
    with pytest.raises(
        UserError, match="train_pretrain.py refuses the pretrain runs' arguments: --long_after"
    ):
        check_engines(load_spec(_spec(tmp_path, **{"pretrain.extra_args": {"long_after": 2.0}})))
    check_engines(
        load_spec(
            _spec(
                tmp_path,
                **{
                    "pretrain.extra_args": {"masking": "whole_word"},
                    "finetune.sst2.extra_args": {"no-tensorboard": True},
                },
            )
        )
    )


def test_shards_partition_the_runs_by_lineage():
    runs = expand(load_spec(REPO_ROOT / "configs" / "zoo" / "bert_zoo.json"))
    for n in (1, 4, 6):
        shards = [select(runs, "all", (i, n)) for i in range(n)]
        ids = [r.run_id for s in shards for r in s]
        assert sorted(ids) == sorted(r.run_id for r in runs)  # a partition: every run exactly once
        for s in shards:  # a fine-tune always travels with its pretraining run
            mine = {r.run_id for r in s}
            assert all(r.parent in mine for r in s if r.stage == "finetune")
        assert [[r.run_id for r in s] for s in shards] == [
            [r.run_id for r in select(runs, "all", (i, n))] for i in range(n)
        ]
    sizes = [len(select(runs, "finetune", (i, 5))) for i in range(5)]
    assert sum(sizes) == 72 and max(sizes) - min(sizes) <= 1  # run-level units when one stage is chosen
    with pytest.raises(UserError, match="--shard"):
        parse_shard("4/4")


def test_slurm_script(tmp_path):
    text = sbatch_script(
        "bert_zoo", REPO_ROOT / "configs/zoo/bert_zoo.json", tmp_path / "z", 6, "all", 4, partition="gpu"
    )
    assert "#SBATCH --array=0-5" in text and "#SBATCH --gpus-per-task=4" in text and "--partition=gpu" in text
    assert '--shard "$SLURM_ARRAY_TASK_ID/6" --workers 4' in text
    path = tmp_path / "job.sbatch"
    path.write_text(text)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0  # valid bash


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("level", [0.5, 0.8, 0.9])
def test_sparsification_reaches_the_level_exactly(scope, level):
    g = torch.Generator().manual_seed(0)
    state = {
        "encoder.layers.0.ffn_in.weight": torch.randn(30, 10, generator=g),
        "encoder.layers.0.ffn_in.bias": torch.randn(30, generator=g),
        "encoder.layers.1.ffn_out.weight": torch.randint(-3, 4, (10, 30), generator=g).float(),  # many ties
        "classifier.1.weight": torch.randn(2, 10, generator=g) * 5,
        "encoder.embeddings.word_embeddings.weight": torch.randn(50, 10, generator=g),
    }
    names = prunable_names(state)
    assert names == [
        "encoder.layers.0.ffn_in.weight",
        "encoder.layers.1.ffn_out.weight",
        "classifier.1.weight",
    ]
    masks = prune_masks(state, level, scope, names)
    total = sum(state[n].numel() for n in names)
    assert sum(int(m.sum()) for m in masks.values()) == (
        round(level * total) if scope == "global" else sum(round(level * state[n].numel()) for n in names)
    )
    if scope == "layer":
        assert all(int(masks[n].sum()) == round(level * state[n].numel()) for n in names)
    kept = torch.cat([state[n].abs()[~masks[n]] for n in names]) if scope == "global" else None
    if scope == "global":  # every pruned magnitude <= every kept one
        assert torch.cat([state[n].abs()[masks[n]] for n in names]).max() <= kept.min()
    model = torch.nn.Module()
    for i, t in enumerate(state.values()):
        model.register_parameter(f"p{i}", torch.nn.Parameter(t.clone()))
    achieved = sparsify_(model, level, scope, pattern=r"^p[023]$")  # the same three tensors
    sizes = [state[n].numel() for n in names]
    zeros = round(level * sum(sizes)) if scope == "global" else sum(round(level * n) for n in sizes)
    assert achieved == zeros / sum(sizes)
    assert sum(int((getattr(model, f"p{i}") == 0).sum()) for i in (0, 2, 3)) == zeros
    assert model.p1.count_nonzero() == 30 and model.p4.count_nonzero() == 500  # bias, embeddings untouched


def test_agreement_matrix_and_summary():
    preds = [
        {"a": 0, "b": 1, "c": 1, "d": 0},
        {"a": 0, "b": 0, "c": 1, "d": 0},
        {"a": 1, "b": 0, "c": 0, "d": 1},
    ]
    m = agreement_matrix(preds)
    assert np.array_equal(m, m.T) and np.all(np.diag(m) == 1.0)
    assert m[0, 1] == 0.75 and m[0, 2] == 0.0 and m[1, 2] == 0.25
    rows = [
        {"hp.learning_rate": 1e-5, "hp.seed": 0},
        {"hp.learning_rate": 1e-5, "hp.seed": 1},
        {"hp.learning_rate": 3e-5, "hp.seed": 0},
    ]
    summary = {s["hparam"]: s for s in agreement_by_hparam(rows, m)}
    assert summary["hp.learning_rate"]["same_mean"] == 0.75
    assert summary["hp.learning_rate"]["different_mean"] == pytest.approx(0.125)
    assert summary["hp.seed"]["same_pairs"] == 1 and summary["hp.seed"]["same_mean"] == 0.0


def test_ridge_closed_form():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    w_true = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    y = x @ w_true + 0.7 + rng.normal(scale=0.05, size=60)
    w, b = ridge_fit(x, y, 1e-9)  # tiny alpha: least squares
    ref = np.linalg.lstsq(np.c_[x, np.ones(60)], y, rcond=None)[0]
    assert np.allclose(np.r_[w, b], ref, atol=1e-6)
    wide = rng.normal(size=(8, 20))  # more features than rows: the dual form must agree with the primal
    yw = rng.normal(size=8)
    wd, bd = ridge_fit(wide, yw, 0.3)
    xc = wide - wide.mean(0)
    wp = np.linalg.solve(xc.T @ xc + 0.3 * np.eye(20), xc.T @ (yw - yw.mean()))
    assert np.allclose(wd, wp, atol=1e-8)
    splits = ["train"] * 40 + ["validation"] * 10 + ["test"] * 10
    out = ridge_predict(x, y, splits)
    assert out["r2_test"] > 0.99 and out["n_test"] == 10
    assert r2(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0])) == 1.0


def test_flatten_unflatten_and_layer_selection():
    g = torch.Generator().manual_seed(1)
    weights = {
        "encoder.layers.0.attention.qkv.weight": torch.randn(6, 4, generator=g),
        "encoder.layers.1.attention.qkv.weight": torch.randn(6, 4, generator=g),
        "encoder.layers.10.ffn_in.bias": torch.randn(3, generator=g),
        "classifier.1.weight": torch.randn(2, 4, generator=g).bfloat16().float(),
    }
    vector, index = flatten(weights)
    assert vector.shape == (24 + 24 + 3 + 8,) and index[2].start == 48 and index[2].shape == (3,)
    back = unflatten(vector, index)
    assert list(back) == list(weights) and all(torch.equal(back[k], weights[k]) for k in weights)
    assert select_names(weights, [1, "classifier.*"]) == [
        "encoder.layers.1.attention.qkv.weight",
        "classifier.1.weight",
    ]
    with pytest.raises(UserError, match="match no tensor"):
        select_names(weights, ["pooler.*"])


def test_model_level_split_has_no_leakage():
    rows = []
    for lineage in range(6):
        pt = f"pt{lineage}"
        rows += [
            {"run_id": pt, "stage": "pretrain", "lineage": pt, "parent_run": None, "epoch": e} for e in (1, 2)
        ]
        for k in range(5):
            ft = f"ft{lineage}_{k}"
            rows += [
                {"run_id": ft, "stage": "finetune", "lineage": pt, "parent_run": pt, "epoch": e}
                for e in range(3)
            ]
            rows.append(
                {"run_id": f"sp_{ft}", "stage": "sparse", "lineage": pt, "parent_run": ft, "epoch": 2}
            )
    for group_by in ("lineage", "run"):
        splits = model_split(rows, (0.6, 0.2, 0.2), seed=3, group_by=group_by)
        assert set(splits) == {"train", "validation", "test"}
        owner = {}
        for r, s in zip(rows, splits):  # every group (model) in exactly one split
            assert owner.setdefault(group_of(r, group_by), s) == s
        assert splits == model_split(rows, (0.6, 0.2, 0.2), seed=3, group_by=group_by)  # deterministic
    lineage_split = dict(zip((r["run_id"] for r in rows), model_split(rows, seed=0)))
    assert all(lineage_split[r["run_id"]] == lineage_split[r["lineage"]] for r in rows)
    assert split_groups(list("abcdefghij"), seed=0) != split_groups(list("abcdefghij"), seed=1)
