"""Training throughput of our BERT against Hugging Face's BertForPreTraining, in the same process.

    python benchmarks/throughput.py --case cpu_small                       # fp32, 2 threads
    python benchmarks/throughput.py --case gpu_base_128 --device cuda [--compile]
    python benchmarks/throughput.py --case gpu_base_512 --device cuda [--compile]
    python benchmarks/throughput.py --case cpu_small --ablations --json out.json

Both models start from the same weights (ours exported with model.convert.save_hf_bert), train on the
same real batches (data.pretraining.PretrainingData: MLM 15% + NSP, short_p 0.1) with fused AdamW,
gradient clipping at 1.0 and the same autocast; HF gets full-length -100-filled labels. Steps are
interleaved in blocks (order alternating) after warm-up, so machine noise hits both. --ablations also
times our model with one fast-path option switched back to the plain path (benchmarks/reference.py).
MFU counts model FLOPs per token 6N + 12*L*d*s (N: parameters, unpadded vocabulary) for both models.
Needs transformers (requirements-dev.txt; the package itself never imports it): a one-line error without.
The checkpoint share prices the EarlyBERTs schedule (31 kept checkpoints up to step 40k) against 40k
steps of the measured step time, saving with training.checkpoint.CheckpointWriter.
"""

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.batches import corpus_batches, make_corpus, padding_share  # noqa: E402
from benchmarks.reference import ExplicitMaskObjective, FullLogitObjective, unfuse_qkv, with_config  # noqa: E402
from benchmarks.runners import HFRunner, OursRunner, static_bytes, step_memory, sync  # noqa: E402
from model import ModelConfig, PretrainingModel  # noqa: E402
from model.convert import save_hf_bert  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.files import write_json_atomic  # noqa: E402
from utils.paths import REPO_ROOT  # noqa: E402
from utils.repro import code_version  # noqa: E402

CASES = {  # config file, changes, device, precision, batch, length, steps, warm-up
    "cpu_small": ("bert_small.json", {"vocab_size": 30522}, "cpu", "no", 16, 128, 6, 2),
    "gpu_base_128": ("bert_base.json", {}, "cuda", "bf16", 256, 128, 60, 15),
    "gpu_base_512": ("bert_base.json", {}, "cuda", "bf16", 64, 512, 30, 10),
}
# dense bf16 TFLOP/s by device-name fragment, first match wins (H100/H200 SXM: 989; PCIe cards less)
PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0, "H200": 989.0, "A100": 312.0}
EARLYBERTS_STEPS = 40_000


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", default="cpu_small", choices=[*CASES, "all"])
    p.add_argument("--device", help="cpu | cuda (default: the case's)")
    p.add_argument("--steps", type=int, help="timed steps per model and repeat (default: the case's)")
    p.add_argument("--warmup", type=int, help="untimed steps per model first (default: the case's)")
    p.add_argument("--batch_size", type=int)
    p.add_argument("--seq_length", type=int)
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--repeats", type=int, default=1, help="timed rounds; the table shows their median")
    p.add_argument("--block", type=int, help="steps per model before switching (default 1 on CPU, 5 on CUDA)")
    p.add_argument(
        "--ablations",
        nargs="?",
        const="all",
        help="also time the plain-path variants of ours: all, or some of their names, comma-separated",
    )
    p.add_argument("--optimizer", default="adamw", choices=["adamw", "lamb"], help="ours; HF always AdamW")
    p.add_argument("--input_path", help="processed corpus (default: 6 Gutenberg books, made on the fly)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads on CPU")
    p.add_argument("--peak_tflops", type=float, help="device bf16 peak for MFU (default: from its name)")
    p.add_argument("--no_checkpoint_cost", action="store_true", help="skip timing checkpoint saves")
    p.add_argument("--json", help="write the results here")
    return p.parse_args(argv)


def build_models(config: ModelConfig, work: Path):
    """Ours (vocabulary padded to 64) and HF BertForPreTraining (sdpa) holding the same weights."""
    from transformers import BertForPreTraining

    torch.manual_seed(0)
    ours = PretrainingModel(config)
    save_hf_bert(ours, work / "hf")
    hf = BertForPreTraining.from_pretrained(work / "hf", attn_implementation="sdpa", dtype=torch.float32)
    return ours, hf


def runners_for(case_args, ours, hf, batches, args):
    device, precision = case_args["device"], case_args["precision"]
    common = dict(batches=batches, device=device, precision=precision, compile=args.compile)
    runs = [OursRunner("ours", ours, optimizer=args.optimizer, **common), HFRunner("hf", hf, **common)]
    if not args.ablations:
        return runs
    copy = lambda **kw: with_config(ours, **kw)  # noqa: E731  (same weights, fresh optimizer state)
    full_logits = FullLogitObjective(nsp=True, explicit_mask=False)
    variants = {  # name -> our model with one fast-path option switched back, built only when chosen
        "full-logit head": lambda: OursRunner("full-logit head", copy(), objective=full_logits, **common),
        "unfused QKV": lambda: OursRunner("unfused QKV", unfuse_qkv(copy()), **common),
        "mask always": lambda: OursRunner(
            "mask always", copy(), objective=ExplicitMaskObjective(nsp=True), **common
        ),
        "vocab unpadded": lambda: OursRunner("vocab unpadded", copy(pad_vocab_to_multiple_of=1), **common),
        "AdamW for-loop": lambda: OursRunner("AdamW for-loop", copy(), optimizer="adamw_loop", **common),
        "AdamW foreach": lambda: OursRunner("AdamW foreach", copy(), optimizer="adamw_foreach", **common),
        "LAMB foreach": lambda: OursRunner("LAMB foreach", copy(), optimizer="lamb", **common),
        "LAMB per-param loop": lambda: OursRunner(
            "LAMB per-param loop", copy(), optimizer="lamb_loop", **common
        ),
    }
    if device.type == "cuda":
        no_bf16 = {**common, "precision": "no"}
        variants["no bf16 autocast"] = lambda: OursRunner("no bf16 autocast", copy(), **no_bf16)
    wanted = list(variants) if args.ablations == "all" else [n.strip() for n in args.ablations.split(",")]
    unknown = [n for n in wanted if n not in variants]
    if unknown:
        raise UserError(f"--ablations: no variant {unknown[0]!r} (known: {', '.join(variants)})")
    return runs + [variants[n]() for n in wanted]


def time_interleaved(runs, steps: int, warmup: int, block: int, repeats: int) -> dict[str, dict]:
    """Per runner and repeat: wall seconds per step, and CPU seconds per step of this process (all
    threads; robust to other jobs on a shared CPU, meaningless on a GPU). Blocks of `block` steps,
    the order rotating each block."""
    device = runs[0].device
    for i in range(warmup):
        for r in runs:
            r.step(i)
    sync(device)
    out = {r.name: {"wall": [], "cpu": []} for r in runs}
    for _ in range(repeats):
        wall, cpu = {r.name: 0.0 for r in runs}, {r.name: 0.0 for r in runs}
        for b in range(0, steps, block):
            k = b // block
            for r in runs[k % len(runs) :] + runs[: k % len(runs)]:
                start, start_cpu = time.perf_counter(), time.process_time()
                for i in range(b, min(b + block, steps)):
                    r.step(warmup + i)
                sync(device)
                wall[r.name] += time.perf_counter() - start
                cpu[r.name] += time.process_time() - start_cpu
        for r in runs:
            out[r.name]["wall"].append(wall[r.name] / steps)
            out[r.name]["cpu"].append(cpu[r.name] / steps)
    return out


def checkpoint_cost(runner, step_s: float, work: Path) -> dict:
    """What the EarlyBERTs schedule costs over 40k steps of step_s: the loop stalls in each
    CheckpointWriter.save (device->host copy), and waits in the next save for a write still running
    when fewer steps than a whole write lie between two checkpoints."""
    from training.checkpoint import CheckpointWriter, rng_state
    from training.checkpoint_steps import parse_checkpoint_steps

    kept = parse_checkpoint_steps("earlyberts", EARLYBERTS_STEPS)
    writer = CheckpointWriter(work / "ckpt", keep_last=1)
    stalls, writes = [], []
    for step in range(3):
        state = {"trainer": runner.trainer.state_dict(), "rng": rng_state()}
        start = time.perf_counter()
        writer.save(step, runner.model, state, {}, False, {})
        stalls.append(time.perf_counter() - start)
        writer.wait()
        writes.append(time.perf_counter() - start)
    stall, write = statistics.median(stalls), statistics.median(writes)
    waits = sum(max(0.0, write - stall - (b - a) * step_s) for a, b in zip(kept, kept[1:]))
    lost = len(kept) * stall + waits
    return {
        "checkpoints": len(kept),
        "stall_s": stall,
        "write_s": write,
        "wait_s": waits,
        "share": lost / (EARLYBERTS_STEPS * step_s),
    }


def flops_per_token(config: ModelConfig, n_params: int, seq_length: int) -> float:
    return 6 * n_params + 12 * config.num_hidden_layers * config.hidden_size * seq_length


def run_case(name: str, args, work: Path) -> dict:
    file, changes, device, precision, batch_size, seq_length, steps, warmup = CASES[name]
    device = torch.device(args.device or device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--case {name}: --device cuda but no CUDA device is available")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    batch_size, seq_length = args.batch_size or batch_size, args.seq_length or seq_length
    steps, warmup = args.steps or steps, args.warmup if args.warmup is not None else warmup
    config = ModelConfig.from_json(REPO_ROOT / "configs" / file)
    config = ModelConfig.from_dict({**config.to_dict(), **changes, "pad_vocab_to_multiple_of": 64})
    if seq_length > config.max_position_embeddings:
        raise UserError(f"--seq_length {seq_length} exceeds max_position_embeddings")
    corpus = args.input_path or make_corpus(work)
    batches = corpus_batches(corpus, 8, batch_size, seq_length)
    if device.type == "cuda":
        batches = [{k: v.pin_memory() for k, v in b.items()} for b in batches]
    ours, hf = build_models(config, work)
    n_params = sum(p.numel() for p in hf.parameters())  # tied decoder once; = ours with vocab unpadded
    runs = runners_for({"device": device, "precision": precision}, ours, hf, batches, args)
    if args.compile:  # every distinct batch once: with and without a mask are two graphs to compile
        warmup = max(warmup, len(batches))
    block = args.block or (5 if device.type == "cuda" else 1)
    per_step = time_interleaved(runs, steps, warmup, block, args.repeats)
    memory = {r.name: static_bytes(r) + step_memory(r, steps + warmup) for r in runs}
    peak = args.peak_tflops or next(
        (
            v
            for k, v in PEAK_TFLOPS.items()
            if device.type == "cuda" and k in torch.cuda.get_device_name(device)
        ),
        None,
    )
    fpt = flops_per_token(config, n_params, seq_length)
    rows = {}
    for r in runs:
        s = statistics.median(per_step[r.name]["wall"])
        tokens = batch_size * seq_length / s
        rows[r.name] = {
            "step_s": s,
            "step_s_repeats": per_step[r.name]["wall"],
            "cpu_s_per_step": statistics.median(per_step[r.name]["cpu"]),
            "tokens_per_s": tokens,
            "sequences_per_s": batch_size / s,
            "peak_memory_gb": memory[r.name] / 2**30,
            "mfu": tokens * fpt / (peak * 1e12) if peak else None,
        }
    pad, padded = padding_share(batches)
    result = {
        "case": name,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({args.threads} threads)",
        "precision": precision,
        "compile": args.compile,
        "batch_size": batch_size,
        "seq_length": seq_length,
        "steps": steps,
        "warmup": warmup,
        "repeats": args.repeats,
        "n_params": n_params,
        "flops_per_token": fpt,
        "peak_tflops": peak,
        "padding": {"positions": pad, "batches_with_padding": padded},
        "results": rows,
        "ratio_ours_hf": rows["ours"]["tokens_per_s"] / rows["hf"]["tokens_per_s"],
        "ratio_ours_hf_cpu_time": rows["hf"]["cpu_s_per_step"] / rows["ours"]["cpu_s_per_step"],
    }
    if not args.no_checkpoint_cost:
        result["checkpoint"] = checkpoint_cost(runs[0], rows["ours"]["step_s"], work)
    return result


def report(res: dict) -> None:
    pad = res["padding"]
    print(
        f"\n## {res['case']}: {res['device']}, precision {res['precision']}, compile={res['compile']}, "
        f"batch {res['batch_size']} x {res['seq_length']}, {res['steps']} steps x {res['repeats']} repeats "
        f"after {res['warmup']} warm-up, {res['n_params'] / 1e6:.1f}M parameters, padding: "
        f"{pad['positions']:.1%} of positions, in {pad['batches_with_padding']:.0%} of batches"
    )
    head = f"{'model':<22}{'step ms':>9}{'tokens/s':>11}{'seq/s':>9}{'vs HF':>7}{'peak GB':>9}{'MFU':>7}"
    print(head + f"{'CPU s/step':>12}{'vs HF':>7}")
    hf = res["results"]["hf"]
    for name, r in res["results"].items():
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        print(
            f"{name:<22}{r['step_s'] * 1e3:>9.1f}{r['tokens_per_s']:>11.0f}{r['sequences_per_s']:>9.1f}"
            f"{r['tokens_per_s'] / hf['tokens_per_s']:>7.2f}{r['peak_memory_gb']:>9.2f}{mfu:>7}"
            f"{r['cpu_s_per_step']:>12.2f}{hf['cpu_s_per_step'] / r['cpu_s_per_step']:>7.2f}"
        )
    print(
        f"ours/HF throughput ratio: {res['ratio_ours_hf']:.2f} (wall clock), "
        f"{res['ratio_ours_hf_cpu_time']:.2f} (CPU time of this process)"
    )
    if res["peak_tflops"]:
        fpt = res["flops_per_token"] / 1e6
        print(f"MFU: model FLOPs/token 6N + 12*L*d*s = {fpt:.1f}M against {res['peak_tflops']:.0f} TFLOP/s")
    if "checkpoint" in res:
        c = res["checkpoint"]
        print(
            f"checkpoints: {c['checkpoints']} (EarlyBERTs) in {EARLYBERTS_STEPS} steps; the loop stalls "
            f"{c['stall_s'] * 1e3:.0f} ms per save, a write takes {c['write_s'] * 1e3:.0f} ms, waits on "
            f"earlier writes {c['wait_s']:.1f} s in all: {c['share']:.3%} of wall time"
        )


def require_transformers() -> None:
    """The reference here is Hugging Face's BertForPreTraining: this benchmark (like the tests, not the
    package) needs transformers, from requirements-dev.txt."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise UserError(
            "benchmarks/throughput.py times our model against Hugging Face's BertForPreTraining and needs "
            "transformers: pip install -r requirements-dev.txt"
        ) from None


def main(argv=None) -> None:
    args = parse_args(argv)
    require_transformers()  # before any work, in one line
    cases = list(CASES) if args.case == "all" else [args.case]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_") as tmp:
        for name in cases:
            work = Path(tmp) / name
            work.mkdir()
            results.append(run_case(name, args, work))
            report(results[-1])
    if args.json:
        meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), **code_version(),
                "torch": torch.__version__, "argv": sys.argv[1:]}  # fmt: skip
        write_json_atomic(args.json, {**meta, "cases": results})


if __name__ == "__main__":
    run_cli(main)
