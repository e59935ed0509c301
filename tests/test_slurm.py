"""The SLURM launchers against a real one-node SLURM cluster (Debian's slurmd, slurmctld, slurm-client,
munge), started here by scripts/slurm_local_cluster.sh or named by $BERT_TEST_SLURM_CONF (.ci/run starts
one). Pretraining with 2 ranks per job, two jobs at once on the node, scancel + resubmission resuming
bitwise, no process outliving its job; the zoo array with a killed run (its task fails) and a cancelled
task (resubmission redoes only what is missing); the preprocessing and sweep arrays with a stand-in
interpreter ($PYTHON). Without the packages or root the cluster tests skip, saying why.
The rank arithmetic of slurm_pretrain.sh (GPU nodes included) is checked with stand-in srun/scontrol."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from utils.paths import REPO_ROOT

SCRIPTS = REPO_ROOT / "scripts"
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> dict:
    """The environment for SLURM clients (SLURM_CONF set)."""
    conf = os.environ.get("BERT_TEST_SLURM_CONF")
    if conf:
        yield {**os.environ, "SLURM_CONF": conf}
        return
    missing = [c for c in DAEMONS if shutil.which(c) is None]
    if missing:
        pytest.skip(
            f"no SLURM here ({', '.join(missing)} missing): apt-get install slurmd slurmctld slurm-client "
            "munge, as .ci/run does"
        )
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (slurmd starts the jobs); CI runs as root")
    folder = tmp_path_factory.mktemp("slurm")
    subprocess.run(["bash", str(SCRIPTS / "slurm_local_cluster.sh"), "start", str(folder)], check=True)
    yield {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}
    subprocess.run(["bash", str(SCRIPTS / "slurm_local_cluster.sh"), "stop", str(folder)])


def _run(cmd, env, cwd, check=True) -> str:
    done = subprocess.run(list(map(str, cmd)), env=env, cwd=cwd, capture_output=True, text=True)
    assert not check or done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def _jobs(env, job: str) -> dict[str, dict]:
    """{job or array task id: {JobState, ExitCode, StartTime, EndTime}} from scontrol."""
    out = _run(["scontrol", "show", "job", "-o", job], env, REPO_ROOT)
    rows = {}
    for line in out.splitlines():
        fields = dict(
            re.findall(r"\b(JobId|ArrayJobId|ArrayTaskId|JobState|ExitCode|StartTime|EndTime)=(\S+)", line)
        )
        key = (
            f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}" if "ArrayTaskId" in fields else fields["JobId"]
        )
        rows[key] = fields
    return rows


def _wait(env, job: str, timeout: float = 240) -> dict[str, dict]:
    deadline = time.time() + timeout
    while _run(["squeue", "-h", "-j", job], env, REPO_ROOT, check=False).strip():
        assert time.time() < deadline, f"job {job} still queued after {timeout} s"
        time.sleep(0.3)
    return _jobs(env, job)


def _until(condition, timeout: float = 120, what: str = "condition"):
    deadline = time.time() + timeout
    while not (value := condition()):
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def _job_processes(**variables) -> list[int]:
    """Processes whose environment holds all these SLURM variables (a job's processes inherit them)."""
    wanted = {f"{k}={v}".encode() for k, v in variables.items()}
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if wanted <= set((proc / "environ").read_bytes().split(b"\0")):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _steps(run: Path) -> list[int]:
    return sorted(
        int(d.name[5:]) for d in (run / "checkpoints").glob("step_*") if (d / "model.safetensors").is_file()
    )


# ---- pretraining ------------------------------------------------------------------------------------
PRETRAIN_STEPS = 100


def test_pretrain_cancelled_job_resumes_bitwise_beside_a_second_job(
    slurm, processed_corpus, tokenizer_path, tmp_path
):
    """Submitted from outside the repository (relative --output_dir, as a user would) to a CPU node:
    job B is cancelled after its first checkpoint (no process outlives it); then B is resubmitted
    together with job A (same flags, its own folder, uninterrupted): the two run at once on the node,
    each with its own rendezvous and 2 ranks, both complete, and the resumed B equals A bitwise."""
    submit = [
        "sbatch", "--parsable", "--nodes", "1", "--cpus-per-task", "2", SCRIPTS / "slurm_pretrain.sh",
        "--config_file", REPO_ROOT / "configs" / "tiny.json", "--input_path", processed_corpus,
        "--vocab_path", tokenizer_path, "--seq_length", "64", "--batch_size", "8",
        "--max_steps", PRETRAIN_STEPS, "--save_every", "10", "--log_freq", "50", "--mixed_precision", "no",
        "--seed", "0", "--output_dir",
    ]  # fmt: skip
    b = _run([*submit, "run_b"], slurm, tmp_path).strip()
    run_b = tmp_path / "run_b"
    _until(lambda: _steps(run_b), what="job B's first checkpoint")
    _run(["scancel", b], slurm, tmp_path)
    assert _wait(slurm, b)[b]["JobState"] == "CANCELLED"
    cut_at = max(_steps(run_b))
    assert 0 < cut_at < PRETRAIN_STEPS, "job B finished before it was cancelled: nothing to resume"
    # srun ended the ranks with the job: none outlives it (KillWait is 10 s)
    _until(lambda: not _job_processes(SLURM_JOB_ID=b), 20, "job B's processes to end")

    a = _run([*submit, "run_a"], slurm, tmp_path).strip()
    b2 = _run([*submit, "run_b"], slurm, tmp_path).strip()
    jobs = {**_wait(slurm, a), **_wait(slurm, b2)}
    logs = {job: (tmp_path / f"slurm-bert-pretrain-{job}.out").read_text() for job in (a, b2)}
    for job in (a, b2):
        assert jobs[job]["JobState"] == "COMPLETED", logs[job][-3000:]
        assert "1 node(s) x 2 rank(s)" in logs[job] and "world size 2" in logs[job]
    assert f"step {cut_at} of {PRETRAIN_STEPS}" in logs[b2]  # resumed where the cancelled job stopped
    # both at once on the one node, each with its own rendezvous port
    assert max(jobs[a]["StartTime"], jobs[b2]["StartTime"]) < min(jobs[a]["EndTime"], jobs[b2]["EndTime"])
    ports = {re.search(r"rendezvous \S+:(\d+)", logs[job]).group(1) for job in (a, b2)}
    assert len(ports) == 2
    final = f"checkpoints/step_{PRETRAIN_STEPS}/model.safetensors"
    wa, wb = load_file(tmp_path / "run_a" / final), load_file(run_b / final)
    assert wa.keys() == wb.keys() and all(wa[k].equal(wb[k]) for k in wa)


@pytest.mark.parametrize(
    "env, ranks, threads",
    [
        ({"SLURM_GPUS_ON_NODE": "4"}, 4, 8),
        ({"CUDA_VISIBLE_DEVICES": "0,1,2"}, 3, 10),
        ({}, 32, 1),  # CPU partition: one single-threaded rank per CPU of the task
        ({"NPROC_PER_NODE": "2"}, 2, 16),
    ],
)
def test_pretrain_launcher_ranks_from_the_allocation(tmp_path, env, ranks, threads):
    """slurm_pretrain.sh with stand-in srun/scontrol: ranks from GPUs, else the CPUs, else the flag; the
    rendezvous port from the job id; the repository from scontrol's Command= (sbatch runs a copy)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(
        "#!/usr/bin/env python3\nimport json, os, sys\n"
        'print(json.dumps([os.environ["OMP_NUM_THREADS"], *sys.argv[1:]]))\n'
    )
    (bin_dir / "scontrol").write_text(
        '#!/bin/bash\nif [ "$2" = hostnames ]; then echo gpu-01; echo gpu-02; else\n'
        f'echo "JobId=$4 JobName=x Command={SCRIPTS / "slurm_pretrain.sh"} --seed 0 WorkDir=/"; fi\n'
    )
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    spool = tmp_path / "spool" / "job123"  # what sbatch runs: a copy, away from the repository
    spool.mkdir(parents=True)
    shutil.copy(SCRIPTS / "slurm_pretrain.sh", spool / "slurm_script")
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "CUDA_", "NPROC", "OMP_", "BERT_"))
    }
    run_env = {
        **base, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "123", "SLURM_NNODES": "2",
        "SLURM_JOB_NODELIST": "gpu-[01-02]", "SLURM_CPUS_PER_TASK": "32", "PYTHON": sys.executable, **env,
    }  # fmt: skip
    out = _run(["bash", spool / "slurm_script", "--seed", "0"], run_env, tmp_path)
    threads_seen, *argv = json.loads(out.strip().splitlines()[-1])
    assert threads_seen == str(threads)
    torchrun = argv.index("torch.distributed.run") + 1
    srun_flags = ["--kill-on-bad-exit=1", "--nodes", "2", "--ntasks-per-node", "1", "--cpus-per-task", "32"]
    assert argv[:torchrun] == [*srun_flags, sys.executable, "-m", "torch.distributed.run"]
    flags = dict(zip(argv[torchrun : torchrun + 10 : 2], argv[torchrun + 1 : torchrun + 10 : 2]))
    assert flags == {
        "--nnodes": "2", "--nproc_per_node": str(ranks), "--rdzv_id": "123", "--rdzv_backend": "c10d",
        "--rdzv_endpoint": "gpu-01:20123",
    }  # fmt: skip
    assert argv[torchrun + 10 : torchrun + 13] == ["--no-python", sys.executable, "-c"]
    assert argv[torchrun + 14 :] == [str(REPO_ROOT / "train_pretrain.py"), "--seed", "0"]
    # each rank runs through the wrapper: still the same process, now killed with its torchrun
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import ctypes, json, sys\nsig = ctypes.c_int()\nctypes.CDLL(None).prctl(2, ctypes.byref(sig))\n"
        "print(json.dumps([sig.value, sys.argv[1:]]))\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", argv[torchrun + 13], probe, "--seed", "0"], capture_output=True
    )
    assert json.loads(ran.stdout) == [signal.SIGTERM, ["--seed", "0"]]


# ---- model zoo ----------------------------------------------------------------------------------------
def test_zoo_array_killed_run_fails_its_task_and_resubmission_redoes_only_the_rest(
    slurm, processed_corpus, tokenizer_path, tmp_path
):
    """A CPU array of 2 tasks x 2 continued-pretraining runs, submitted with `zoo.py slurm ... --submit`:
    the engine of one run of task 0 is killed (task 0 then FAILS, its other run completes), task 1 is
    cancelled after its first run; resubmitting the script completes the zoo, running only what was not
    complete; the manifest records every finished state."""
    import torch

    from model import ModelConfig, PretrainingModel
    from model.io import save_model
    from zoo import runs as rf
    from zoo.manifest import read_manifest
    from zoo.plan import expand, select
    from zoo.spec import load_spec

    torch.manual_seed(0)
    save_model(
        PretrainingModel(ModelConfig.from_json(REPO_ROOT / "configs" / "tiny.json")), tmp_path / "base"
    )
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps({
        "name": "slurm", "base_model": str(tmp_path / "base"), "vocab_path": str(tokenizer_path),
        "pretrain": {
            "corpus": str(processed_corpus), "learning_rates": [1e-4, 1e-3], "weight_decays": [0.01],
            "seeds": [0, 1], "epochs": 2, "steps_per_epoch": 3, "batch_size": 8, "seq_length": 64,
            "validation_batches": 2, "save_every": 0,
        },
    }))  # fmt: skip
    zoo_dir = tmp_path / "zoo"
    shards = [[r.run_id for r in select(expand(load_spec(spec_path)), "all", (i, 2))] for i in range(2)]
    assert [len(s) for s in shards] == [2, 2]
    folder = {rid: rf.run_dir(zoo_dir, rid) for s in shards for rid in s}
    zoo_cmd = [
        sys.executable,
        REPO_ROOT / "zoo.py",
        "slurm",
        spec_path,
        "--zoo_dir",
        zoo_dir,
        "--shards",
        "2",
    ]
    out = _run([*zoo_cmd, "--submit"], slurm, tmp_path)
    array = re.search(r"submitted job array (\d+)", out).group(1)

    def engine(rid):  # the pid of the run's engine while it runs
        return ((rf.read_json(folder[rid] / "zoo.lock") or {}).get("engine_pid")) if rid in folder else None

    def running(rids):  # (run id, engine pid) of the first of these runs whose engine is up
        return next(((r, pid) for r in rids if (pid := engine(r))), None)

    killed, pid = _until(lambda: running(shards[0]), what="an engine of task 0")
    os.kill(pid, signal.SIGKILL)
    first = _until(
        lambda: next((r for r in shards[1] if rf.is_done(folder[r])), None), what="task 1's first run"
    )
    second = next(r for r in shards[1] if r != first)
    _until(lambda: running([second]), what="task 1's second run")
    _run(["scancel", f"{array}_1"], slurm, tmp_path)
    jobs = _wait(slurm, array)
    assert jobs[f"{array}_0"]["JobState"] == "FAILED" and jobs[f"{array}_0"]["ExitCode"] == "1:0"
    assert jobs[f"{array}_1"]["JobState"] == "CANCELLED"
    gone = lambda: not _job_processes(SLURM_ARRAY_JOB_ID=array, SLURM_ARRAY_TASK_ID=1)  # noqa: E731
    _until(gone, 20, "the cancelled task's processes to end")
    done_before = [r for r in folder if rf.is_done(folder[r])]
    assert killed not in done_before and second not in done_before and first in done_before
    # what finished is in the manifest the tasks wrote (the cancelled one too, on its way out)
    assert {row["run_id"] for row in read_manifest(zoo_dir, rebuild=False)} >= set(done_before)
    assert rf.read_json(folder[killed] / "zoo_failed.json")["error"] == "exit code -9"

    launches = {r: (folder[r] / "zoo.log").read_text().count("\n=== ") for r in done_before}
    again = _run(["sbatch", "--parsable", zoo_dir / "zoo_all.sbatch"], slurm, tmp_path).strip()
    jobs = _wait(slurm, again)
    assert [jobs[f"{again}_{i}"]["JobState"] for i in range(2)] == ["COMPLETED", "COMPLETED"]
    assert all(rf.is_done(f) for f in folder.values())
    for r in done_before:  # not run again
        assert (folder[r] / "zoo.log").read_text().count("\n=== ") == launches[r]
    assert len(read_manifest(zoo_dir, rebuild=False)) == 4 * 2  # every run's states at epochs 1 and 2


# ---- preprocessing and sweep arrays (stand-in interpreter: the commands are built elsewhere) ----------
def _stub(tmp_path) -> tuple[Path, Path]:
    calls = tmp_path / "calls.txt"
    stub = tmp_path / "stub_python"
    stub.write_text(
        f'#!/bin/bash\necho "$*" >> {calls}\n[ -z "$STUB_FAIL" ] || [[ "$*" != *"$STUB_FAIL"* ]]\n'
    )
    stub.chmod(0o755)
    return stub, calls


@pytest.mark.parametrize("fail", [None, "--shard 1/3"])
def test_preprocess_array_shards_then_merge(slurm, tmp_path, fail):
    """Task i gets --shard i/3 with the flags as given; the merge job runs after all three, or never
    when a task failed (it is cancelled, not left pending)."""
    stub, calls = _stub(tmp_path)
    env = {**slurm, "PYTHON": str(stub), "STUB_FAIL": fail or ""}
    flags = ["--input_path", "in dir", "--vocab_path", "tok.json", "--output_dir", "out"]
    out = _run(["bash", SCRIPTS / "slurm_preprocess.sh", "--shards", "3", "--", *flags], env, tmp_path)
    array, merge = re.search(r"array (\d+) \(3 tasks\) and merge job (\d+)", out).groups()
    _wait(slurm, array)
    jobs = _wait(slurm, merge)
    lines = calls.read_text().splitlines()
    script = f"{REPO_ROOT / 'data' / 'preprocess.py'}"
    shards = sorted(f"{script} {' '.join(flags)} --shard {i}/3" for i in range(3))
    if fail:
        assert sorted(lines) == shards and jobs[merge]["JobState"] == "CANCELLED"
    else:
        assert sorted(lines[:3]) == shards and lines[3:] == [f"{script} --merge --output_dir out"]
        assert jobs[merge]["JobState"] == "COMPLETED"


def test_sweep_array_shards(slurm, tmp_path):
    stub, calls = _stub(tmp_path)
    flags = ["--runs", "r1", "r2", "--evals", "blimp", "--output_dir", "sweep"]
    out = _run(
        ["bash", SCRIPTS / "slurm_sweep.sh", "--shards", "2", "--", *flags],
        {**slurm, "PYTHON": str(stub)},
        tmp_path,
    )
    array = re.search(r"array (\d+) \(2 tasks\)", out).group(1)
    jobs = _wait(slurm, array)
    assert [jobs[f"{array}_{i}"]["JobState"] for i in range(2)] == ["COMPLETED", "COMPLETED"]
    assert sorted(calls.read_text().splitlines()) == [
        f"-m evaluation.sweep {' '.join(flags)} --shard {i}/2" for i in range(2)
    ]


def test_array_scripts_refuse_bad_usage(tmp_path):
    for script in ("slurm_preprocess.sh", "slurm_sweep.sh"):
        done = subprocess.run(["bash", SCRIPTS / script, "--input_path", "x"], capture_output=True, text=True)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--shards N" in done.stderr


def test_zoo_slurm_cpu_array_and_bad_flags(tmp_path):
    """`zoo.py slurm` (no cluster needed): the default is a CPU array that keeps its engines off GPUs and
    asks for nothing a small node lacks; bad flags and a missing sbatch are one line, exit 2."""
    spec = REPO_ROOT / "configs" / "zoo" / "tiny_cpu.json"
    zoo = [sys.executable, REPO_ROOT / "zoo.py", "slurm", spec, "--zoo_dir", tmp_path / "z", "--shards", "3"]
    no_sbatch = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # python, but no sbatch
    done = subprocess.run(list(map(str, [*zoo, "--submit"])), capture_output=True, text=True, env=no_sbatch)
    assert done.returncode == 2 and done.stderr.strip() == (
        "error: --submit: sbatch not found (is this a SLURM login node?)"
    )
    script = (tmp_path / "z" / "zoo_all.sbatch").read_text()  # written before submitting
    headers = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert headers[:5] == [
        "#SBATCH --job-name=zoo-tiny_cpu", "#SBATCH --array=0-2", "#SBATCH --nodes=1", "#SBATCH --ntasks=1",
        "#SBATCH --cpus-per-task=1",
    ]  # fmt: skip
    assert len(headers) == 6 and headers[5].startswith("#SBATCH --output=")  # no GPU, time or memory asked
    assert (
        "export CUDA_VISIBLE_DEVICES=\n" in script
        and '--shard "$SLURM_ARRAY_TASK_ID/3" --workers 1 --gpus none' in script
    )
    gpu = _run(
        [*zoo, "--gpus_per_task", "2", "--cpus_per_task", "8", "--time", "1:00:00"], os.environ, tmp_path
    )
    assert "submit: sbatch" in gpu
    script = (tmp_path / "z" / "zoo_all.sbatch").read_text()
    assert "#SBATCH --gpus-per-task=2\n#SBATCH --cpus-per-task=8\n#SBATCH --time=1:00:00\n" in script
    assert "export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}" in script and script.rstrip().endswith(
        "--workers 2"
    )
    for bad in (["--gpus_per_task", "-1"], ["--cpus_per_task", "0"], ["--workers", "0"]):
        done = subprocess.run(list(map(str, [*zoo, *bad])), capture_output=True, text=True)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and bad[0] in done.stderr
