"""16 customer tasks trained together in one `train_many` run against one after another with
`train`: wall time, each task's dev metric, peak RSS, and where the time goes.

The tasks are label subsets and slices of ag_news, sst2, sms_spam, trec, rte and mrpc (from
../shared/data) plus the two demo tasks: 2 to 6 labels, three sentence-pair tasks, a few
hundred to a few thousand training rows. Both arms run in fresh processes with the same
configs, epochs and seed; each arm's phases (set-up, steps, evaluation, save with its TF-IDF
baseline) are timed by wrapping the library's own functions.

    python benchmarks/train_many.py                # 120 to 400 rows a task (see --scale)
    python benchmarks/train_many.py --quick        # 64 to 200 rows a task
    python benchmarks/train_many.py --scale 1      # the issue's size: 400 to 3,000 rows a task
    python benchmarks/train_many.py --gemm         # linear throughput: one task's batch vs a merged pass
    python benchmarks/train_many.py --threads 2 --lanes 2   # together: two lanes of one thread
    python benchmarks/train_many.py --noise-floor --threads 2  # solo runs on 2 threads vs on 1

Targets (issue 15): together <= 0.6x sequential, every task's dev metric within 1.0 point.
Ends with one JSON line: tasks, together_seconds, sequential_seconds, ratio, worst_metric_drop
(points, positive = worse together), peak_rss_mb (both arms).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, emit, require_shared  # noqa: E402

CARD_DATA = ROOT / "adapters_kit" / "cards" / "data"
STEPS = "steps (forward, backward, update)"


def _rows(path: Path, delimiter: str = "\t", encoding: str = "utf-8-sig") -> list[dict]:
    with open(path, encoding=encoding, newline="") as f:
        return list(csv.DictReader(f, delimiter=delimiter, quoting=csv.QUOTE_NONE
                                   if delimiter == "\t" else csv.QUOTE_MINIMAL))


def _trec(path: Path) -> list[dict]:
    out = []
    for line in path.read_text(encoding="latin-1").splitlines():
        label, _, text = line.partition(" ")
        out.append({"text": text.strip(), "label": label.split(":")[0]})
    return out


def _write(folder: Path, name: str, fields: list[str], rows: list[dict]) -> Path:
    path = folder / f"{name}.tsv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("\t".join(fields) + "\n")
        for r in rows:
            f.write("\t".join(str(r[k]).replace("\t", " ").replace("\n", " ") for k in fields) + "\n")
    return path


def build_tasks(shared: Path, folder: Path, scale: float, floor: int = 120,
                dev_max: int = 150) -> list[dict]:
    """The 16 task cards (as dicts) over TSV files written into `folder`."""
    rng = random.Random(0)
    ag = _rows(shared / "ag_news" / "test.csv", delimiter=",")
    ag_names = {"1": "World", "2": "Sports", "3": "Business", "4": "SciTech"}
    for r in ag:
        r["label"] = ag_names[r["label"]]
    sst = _rows(shared / "sst2" / "train.tsv")
    sst_dev = _rows(shared / "sst2" / "dev.tsv")
    sms = _rows(shared / "sms_spam" / "SMSSpamCollection.tsv")
    trec = _trec(shared / "trec" / "train_5500.label")
    rte = _rows(shared / "rte" / "train.tsv")
    rte_dev = _rows(shared / "rte" / "dev.tsv")
    mrpc = _rows(shared / "mrpc" / "msr_paraphrase_train.txt")
    intent = _rows(CARD_DATA / "support_intent.tsv")
    urgency = _rows(CARD_DATA / "support_urgency.tsv")
    for data in (ag, sst, sms, trec, rte, mrpc):
        rng.shuffle(data)

    def n(rows: int) -> int:
        return max(floor, int(rows * scale))

    def m(rows: int) -> int:  # training rows and a dev set after them
        return n(rows) + dev_max

    def pick(rows, labels, count, field="label", offset=0):
        keep = [r for r in rows if r[field] in labels]
        return keep[offset : offset + count]

    tasks = []

    def add(name, rows, dev_rows, labels, text_fields, label_field="label", epochs=1.0, lr=1e-3,
            label_map=None, max_length=64, targets="all-linear"):
        fields = [*text_fields, label_field]
        if dev_rows is None:  # the rows after the training rows
            rows, dev_rows = rows[:-dev_max], rows[-dev_max:]
        card = {"name": name, "labels": labels, "text_fields": text_fields, "label_field": label_field,
                "label_map": label_map or {}, "train": str(_write(folder, name, fields, rows)),
                "epochs": epochs, "learning_rate": lr, "batch_size": 16, "max_length": max_length,
                "targets": targets, "format": "tsv"}
        card["dev"] = str(_write(folder, name + "_dev", fields, dev_rows[:dev_max]))
        tasks.append(card)

    ag4 = ["World", "Sports", "Business", "SciTech"]
    add("ag_topics", pick(ag, ag4, m(2400)), None, ag4, ["description"], max_length=96)
    add("ag_world_sports", pick(ag, ["World", "Sports"], m(800), offset=3000), None,
        ["World", "Sports"], ["title"], lr=2e-3, max_length=32)
    add("ag_business_tech", pick(ag, ["Business", "SciTech"], m(1200), offset=3000), None,
        ["Business", "SciTech"], ["title", "description"], max_length=96)
    add("ag_three", pick(ag, ["World", "Business", "SciTech"], m(600), offset=5200), None,
        ["World", "Business", "SciTech"], ["title"], epochs=2.0, max_length=32, targets="qv")
    sst_map = {"0": "negative", "1": "positive"}
    add("sst_reviews", sst[: n(3000)], sst_dev[:400], ["negative", "positive"], ["sentence"],
        label_map=sst_map, max_length=48)
    add("sst_small", sst[20000 : 20000 + n(400)], sst_dev[400:], ["negative", "positive"],
        ["sentence"], label_map=sst_map, epochs=2.0, lr=2e-3, max_length=48, targets="qv")
    add("sms_spam", sms[: m(1500)], None, ["ham", "spam"], ["SMS"], label_field="Label",
        max_length=64)
    add("sms_spam_small", sms[3000 : 3000 + m(400)], None, ["ham", "spam"], ["SMS"],
        label_field="Label", epochs=2.0, max_length=64, targets="qv")
    trec6 = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    add("trec_coarse", trec[: m(2000)], None, trec6, ["text"], lr=2e-3, max_length=32)
    add("trec_who_where_when", pick(trec, ["HUM", "LOC", "NUM"], m(700), offset=0), None,
        ["HUM", "LOC", "NUM"], ["text"], epochs=2.0, max_length=32)
    rte_map = {"0": "entailment", "1": "not_entailment"}
    add("rte_pairs", rte[: n(2000)], rte_dev, ["entailment", "not_entailment"],
        ["sentence1", "sentence2"], label_map=rte_map, max_length=96)
    mrpc_map = {"0": "not_paraphrase", "1": "paraphrase"}
    add("mrpc_pairs", mrpc[: m(1800)], None, ["not_paraphrase", "paraphrase"],
        ["#1 String", "#2 String"], label_field="Quality", label_map=mrpc_map, max_length=96)
    add("mrpc_small", mrpc[2500 : 2500 + m(500)], None, ["not_paraphrase", "paraphrase"],
        ["#1 String", "#2 String"], label_field="Quality", label_map=mrpc_map, epochs=2.0,
        max_length=96, targets="qv")
    add("support_intent", intent[: m(480)], None, ["billing", "shipping", "account", "technical"],
        ["text"],
        label_field="intent", epochs=3.0, lr=2e-3, max_length=64)
    urgency_labels = sorted({r["urgency"] for r in urgency})
    add("support_urgency", urgency[: m(400)], None, urgency_labels, ["text"], label_field="urgency",
        epochs=3.0, lr=2e-3, max_length=64)
    add("sst_phrases", sst[40000 : 40000 + n(1000)], sst_dev, ["negative", "positive"],
        ["sentence"], label_map=sst_map, lr=1.5e-3, max_length=48)
    return tasks


# -- one arm, in its own process --------------------------------------------------------------

def run_arm(arm: str, cards: list[dict], out: Path, dropout: float | None, threads: int,
            pass_tokens: int | None = None, lanes: int = 1) -> dict:
    import warnings

    from adapters_kit import Backbone, TaskSpec, TrainConfig, TrainJob, train, train_many
    from adapters_kit.training import loop, many, save
    from adapters_kit.training.evaluate import DevEvaluator
    from adapters_kit.training.fit import Fit
    from adapters_kit.training.quality import QualityWarning

    warnings.simplefilter("ignore", QualityWarning)
    if pass_tokens:
        many.PASS_TOKENS = pass_tokens
    phases: dict[str, float] = defaultdict(float)
    # the top-level phase each thread is in (a lane is a thread): a call inside it counts once
    local = threading.local()
    adding = threading.Lock()  # lanes add into the same phases

    def timed(owner, attr, phase, part_of_another=False):
        """Time `owner.attr` into `phase`; the top-level phases sum to at most the total, a
        part (evaluation inside evaluate+checkpoint, the files inside save) is its own line."""
        fn = getattr(owner, attr)

        def wrapper(*a, **k):
            inside = local.__dict__.setdefault("phases", [])
            top = not part_of_another
            if top and inside:
                return fn(*a, **k)
            if top:
                inside.append(phase)
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                with adding:
                    phases[phase] += time.perf_counter() - t
                if top:
                    inside.pop()
        setattr(owner, attr, wrapper)

    timed(DevEvaluator, "__call__", "evaluate", part_of_another=True)
    timed(save, "save_adapter", "write adapter files", part_of_another=True)
    timed(Fit, "_evaluate", "evaluate+checkpoint")
    timed(loop, "prepare", "set-up (data, model, LoRA)")
    timed(many, "prepare", "set-up (data, model, LoRA)")
    timed(loop.Prepared, "finish", "save (baseline, report, files)")
    # the base and tokenizer `train_many` loads once before any task's set-up (`train` inside it)
    for attr in ("resolve", "tokenizer", "load_model"):
        timed(Backbone, attr, "set-up (data, model, LoRA)")
    timed(many.SharedEncoder, "__init__", "set-up (data, model, LoRA)")
    timed(Fit, "_step", STEPS)  # `train`'s step
    timed(many, "_step", STEPS)  # `train_many`'s: every task's step at once

    specs = [TaskSpec(**c) for c in cards]
    config = TrainConfig(progress=False, seed=0, evals_per_epoch=1, dropout=dropout, threads=threads)
    t0 = time.perf_counter()

    def shown(event: dict, name: str | None = None) -> None:
        if event["event"] in ("eval", "done"):
            print(f"  [{arm} {time.perf_counter() - t0:6.0f} s] {event.get('task', name)} "
                  f"{event['event']} step {event['step']}", file=sys.stderr, flush=True)

    if arm == "together":
        results = train_many([TrainJob(s, out / s.name, config) for s in specs], on_progress=shown,
                             lanes=lanes)
    else:
        results = {s.name: train(s, out / s.name, config, on_progress=lambda e, n=s.name: shown(e, n))
                   for s in specs}
    seconds = time.perf_counter() - t0
    phases["total"] = seconds
    if lanes == 1 or arm == "sequential":  # with lanes, the phases are summed over the lanes
        phases["other (the loop, progress, clock)"] = seconds - sum(
            v for k, v in phases.items() if k in ("evaluate+checkpoint", "set-up (data, model, LoRA)",
                                                  "save (baseline, report, files)", STEPS))
    return {"arm": arm, "seconds": seconds, "phases": dict(phases),
            "metrics": {s.name: results[s.name].metrics[s.metric] for s in specs},
            "metric_names": {s.name: s.metric for s in specs},
            "train_rows": {s.name: json.loads((results[s.name].path / "task.json").read_text())
                           ["training"]["train_rows"] for s in specs},
            "steps": {s.name: len(results[s.name].history["losses"]) for s in specs},
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="the smallest size: scale 0.05, at least 64 rows a task, dev sets of 100")
    p.add_argument("--scale", type=float, help="rows as a fraction of the issue-sized tasks (a few "
                   "hundred to a few thousand rows); default 0.1, at least 120 rows a task, so "
                   "that both arms finish within 25 minutes on a shared 2-core machine")
    p.add_argument("--dropout", type=float, default=0.0,
                   help="dropout override for both arms (default 0: see the README section)")
    p.add_argument("--keep-dropout", action="store_true", help="keep the model's own dropout")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads in both arms (default 1: on a machine shared with other "
                   "work, two OpenMP threads waiting on each other ran many times slower)")
    p.add_argument("--lanes", type=int, default=1,
                   help="train_many's lanes in the together arm: groups of tasks trained side by "
                   "side, the --threads divided between them (default 1; the sequential arm "
                   "trains one task at a time on all --threads)")
    p.add_argument("--pass-tokens", type=int,
                   help="most padded positions in one shared pass (default: train_many's)")
    p.add_argument("--gemm", action="store_true",
                   help="only print this machine's linear-layer throughput at one task's batch "
                   "size against a merged pass's (where the time goes), then exit")
    p.add_argument("--noise-floor", action="store_true",
                   help="instead of the together arm: the sequential arm twice, on --threads and "
                   "on 1 thread, and how far each task's dev metric moves when only the thread "
                   "count (and so the rounding of the matrix products) changes")
    p.add_argument("--arm", choices=["together", "sequential"], help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()
    dropout = None if args.keep_dropout else args.dropout
    if args.noise_floor and args.threads < 2:
        p.error("--noise-floor compares --threads T with 1 thread; give --threads 2 or more")
    if args.gemm:
        gemm_probe(args.threads)
        return
    if args.arm:
        work = Path(args.work)
        cards = json.loads((work / "tasks.json").read_text())
        out = work / f"{args.arm}-{args.threads}t"
        print(json.dumps(run_arm(args.arm, cards, out, dropout, args.threads,
                                 args.pass_tokens, args.lanes)), flush=True)
        return

    shared = require_shared("ag_news", "test.csv")
    scale = args.scale or (0.05 if args.quick else 0.1)
    floor, dev_max = (64, 100) if args.quick else (120, 150)
    with tempfile.TemporaryDirectory(prefix="train_many_") as tmp:
        work = Path(tmp)
        (work / "data").mkdir()
        cards = build_tasks(shared.parent.parent, work / "data", scale, floor, dev_max)
        (work / "tasks.json").write_text(json.dumps(cards))
        _warm(cards)
        arms = {}
        plan = ([("sequential", args.threads), ("sequential", 1)] if args.noise_floor
                else [("together", args.threads), ("sequential", args.threads)])
        for arm, threads in plan:
            cmd = [sys.executable, __file__, "--arm", arm, "--work", str(work),
                   "--threads", str(threads)]
            cmd += ["--pass-tokens", str(args.pass_tokens)] if args.pass_tokens else []
            cmd += ["--lanes", str(args.lanes)]
            cmd += ["--keep-dropout"] if args.keep_dropout else ["--dropout", str(args.dropout)]
            done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # progress: stderr
            if done.returncode != 0:
                sys.exit(f"the {arm} arm failed (exit {done.returncode})")
            name = f"{arm} on {threads} thread{'s' if threads > 1 else ''}" if args.noise_floor else arm
            arms[name] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{name}: {arms[name]['seconds']:.1f} s, peak RSS "
                  f"{arms[name]['peak_rss_mb']:.0f} MB", flush=True)
    if args.noise_floor:
        noise_report(arms, scale, dropout)
    else:
        report(arms, scale, dropout, args.threads, args.lanes)


def _drops(first: dict, second: dict) -> dict[str, float]:
    """Each task's dev metric in `first` minus in `second`, in points."""
    return {name: round(100 * (value - second["metrics"][name]), 2)
            for name, value in first["metrics"].items()}


def noise_report(arms: dict, scale: float, dropout) -> None:
    """How far the solo runs' dev metrics move between two thread counts: the same rows, steps
    and seeds, only the matrix products' rounding differs (as it does in a merged pass)."""
    (a_name, a), (b_name, b) = arms.items()
    print(f"\n{'task':<22} {a_name:>24} {b_name:>24} {'difference':>11}")
    diffs = _drops(a, b)
    for task, value in a["metrics"].items():
        print(f"{task:<22} {value:>24.4f} {b['metrics'][task]:>24.4f} {diffs[task]:>11.2f}")
    worst = max(abs(d) for d in diffs.values())
    print(f"\nthe same solo runs on two thread counts: worst dev-metric difference {worst:.2f} "
          f"points, {sum(d != 0 for d in diffs.values())} of {len(diffs)} tasks moved; row scale "
          f"{scale}, dropout {dropout}")
    emit({"noise_floor": True, "tasks": len(diffs), "arms": [a_name, b_name],
          "seconds": {a_name: round(a["seconds"], 1), b_name: round(b["seconds"], 1)},
          "worst_metric_difference": worst, "metric_differences": diffs, "scale": scale,
          "dropout": dropout})


def gemm_probe(threads: int) -> None:
    """GFLOP/s of the encoder's FFN linear (384 -> 1536) with M rows of tokens: one task's
    batch (16 rows of ~50 word pieces: ~800) against merged passes of several tasks' rows. A
    merged pass can only be faster where more rows make the matrix product faster."""
    import torch

    torch.set_num_threads(threads)
    figures = {}
    for dtype in (torch.float32, torch.bfloat16):
        w = torch.randn(1536, 384, dtype=dtype)
        for m in (800, 3200, 12800):
            x = torch.randn(m, 384, dtype=dtype)
            for _ in range(3):
                torch.nn.functional.linear(x, w)
            n = max(5, 80_000 // m)
            t = time.perf_counter()
            for _ in range(n):
                torch.nn.functional.linear(x, w)
            gflops = 2 * m * 384 * 1536 * n / (time.perf_counter() - t) / 1e9
            figures[f"{str(dtype).split('.')[-1]}_m{m}"] = round(gflops, 1)
            print(f"  {str(dtype).split('.')[-1]:>8}  M={m:>6} rows: {gflops:7.1f} GFLOP/s", flush=True)
    emit({"threads": threads, "gflops": figures})


def _warm(cards: list[dict]) -> None:
    """Build the base's head folders for every label count once, outside both arms' clocks."""
    from adapters_kit import Backbone

    backbone = Backbone.resolve()
    for c in cards:
        backbone.head_dir(len(c["labels"]))


def report(arms: dict, scale: float, dropout, threads: int = 1, lanes: int = 1) -> None:
    tog, seq = arms["together"], arms["sequential"]
    print(f"\n{'task':<22} {'rows':>5} {'steps':>5} {'metric':<9} {'alone':>7} {'together':>8} {'drop':>6}")
    drops = _drops(seq, tog)
    for name, alone in seq["metrics"].items():
        together = tog["metrics"][name]
        print(f"{name:<22} {seq['train_rows'][name]:>5} {seq['steps'][name]:>5} "
              f"{seq['metric_names'][name]:<9} {alone:>7.4f} {together:>8.4f} {drops[name]:>6.2f}")
    print("\nwhere the time goes (seconds; evaluation is inside evaluate+checkpoint, the "
          "adapter files inside save" + (f"; the together arm's phases are summed over its {lanes} "
                                         "lanes, which ran side by side" if lanes > 1 else "") + "):")
    for phase in sorted(set(tog["phases"]) | set(seq["phases"])):
        print(f"  {phase:<32} together {tog['phases'].get(phase, 0):8.1f}   "
              f"sequential {seq['phases'].get(phase, 0):8.1f}")
    ratio = tog["seconds"] / seq["seconds"]
    print(f"\ntogether {tog['seconds']:.1f} s, one after another {seq['seconds']:.1f} s: "
          f"ratio {ratio:.3f} (target <= 0.6); worst metric drop {max(drops.values()):.2f} points "
          f"(target <= 1.0); row scale {scale}, dropout {dropout}, {threads} threads, "
          f"together in {lanes} lane{'s' if lanes > 1 else ''}")
    emit({"tasks": len(drops), "together_seconds": round(tog["seconds"], 1),
          "sequential_seconds": round(seq["seconds"], 1), "ratio": round(ratio, 3),
          "worst_metric_drop": max(drops.values()),
          "peak_rss_mb": {"together": round(tog["peak_rss_mb"], 1),
                          "sequential": round(seq["peak_rss_mb"], 1)},
          "metric_drops": drops, "scale": scale, "dropout": dropout, "threads": threads,
          "lanes": lanes})


if __name__ == "__main__":
    main()
