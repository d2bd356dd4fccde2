"""Checks of the lock-step timer that serving_engine.py's P1 stands on.

    python benchmarks/lockstep_check.py [--rounds 20] [--k 8] [--batch 64] [--length 32]

DistilBERT-base shape, random weights, as serving_engine.py builds it. Each round runs, in
turn: the merged model alone, the engine alone (K adapters in the batch), one lock-step pass
pair of the two, and one lock-step pass pair of the merged model against a copy of itself.
  A/A     the merged model against its copy in lock-step: the ratio should read 1, and its
          spread is the method's own noise;
  cost    each side's lock-step time over its time alone in the same round: interleaving must
          not slow either side (a fixed cost per segment would pull every ratio towards 1);
  faults  minor page faults per pass pair, in lock-step and alone.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import resource
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from _common import emit, temp_dir  # noqa: E402
from _lockstep import linears, lockstep  # noqa: E402
from serving_engine import load_engine, make_adapters, make_base, merged_model, token_batch  # noqa: E402

from adapters_kit.backbones import Backbone  # noqa: E402


def faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed(fn) -> tuple[float, int]:
    f, t = faults(), time.perf_counter()
    fn()
    return time.perf_counter() - t, faults() - f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--length", type=int, default=32)
    args = ap.parse_args()
    work = temp_dir("lockstep-check-")
    os.environ.setdefault("ADAPTERS_KIT_CACHE", str(work / "cache"))
    backbone = Backbone.resolve(make_base(work, "distilbert"))
    paths = make_adapters(backbone, args.k, work)
    engine, names = load_engine(backbone, paths)
    merged = merged_model(backbone, paths[0])
    twin = copy.deepcopy(merged)
    ids = token_batch(args.batch, args.length)
    mask = torch.ones_like(ids)
    id_lists = ids.tolist()
    tasks = [engine.tasks[names[i % args.k]] for i in range(args.batch)]

    def run_engine():
        engine.forward(id_lists, tasks)

    def pass_of(model):
        def run():
            with torch.inference_mode():
                model(input_ids=ids, attention_mask=mask)
        return run

    run_merged, run_twin = pass_of(merged), pass_of(twin)
    for fn in (run_merged, run_twin, run_engine):
        fn()
    rows = []
    gc.collect()
    gc.disable()
    try:
        for i in range(args.rounds):  # who starts a lock-step pair alternates
            m_alone, m_faults = timed(run_merged)
            e_alone, e_faults = timed(run_engine)
            f = faults()
            if i % 2 == 0:
                m_seg, e_seg = lockstep(run_merged, merged, run_engine, engine.model, at=linears)
            else:
                e_seg, m_seg = lockstep(run_engine, engine.model, run_merged, merged, at=linears)
            lock_faults = faults() - f
            if i % 2 == 0:
                a_seg, b_seg = lockstep(run_merged, merged, run_twin, twin, at=linears)
            else:
                b_seg, a_seg = lockstep(run_twin, twin, run_merged, merged, at=linears)
            rows.append({"m_alone": m_alone, "e_alone": e_alone, "m_lock": sum(m_seg),
                         "e_lock": sum(e_seg), "aa": sum(b_seg) / sum(a_seg),
                         "faults_alone": m_faults + e_faults, "faults_lock": lock_faults})
            last = rows[-1]
            print(f"  round {i + 1}/{args.rounds}: engine/merged x{last['e_lock'] / last['m_lock']:.3f}"
                  f" in lock-step, A/A x{last['aa']:.3f}", flush=True)
    finally:
        gc.enable()
    med = statistics.median
    aa = [r["aa"] for r in rows]
    out = {
        "batch": args.batch, "length": args.length, "k": args.k, "rounds": args.rounds,
        "aa_median_ratio": round(med(aa), 4),
        "aa_ratio_sd": round(statistics.stdev(aa), 4) if len(aa) > 1 else None,
        "engine_ratio_lockstep": round(med(r["e_lock"] / r["m_lock"] for r in rows), 4),
        "engine_ratio_alone": round(med(r["e_alone"] / r["m_alone"] for r in rows), 4),
        "merged_lockstep_over_alone": round(med(r["m_lock"] / r["m_alone"] for r in rows), 4),
        "engine_lockstep_over_alone": round(med(r["e_lock"] / r["e_alone"] for r in rows), 4),
        "minor_faults_per_pair_alone": int(med(r["faults_alone"] for r in rows)),
        "minor_faults_per_pair_lockstep": int(med(r["faults_lock"] for r in rows)),
    }
    print(f"A/A: merged against its copy in lock-step x{out['aa_median_ratio']:.4f} "
          f"(sd of one pair's ratio {out['aa_ratio_sd']}); lock-step time / time alone: merged "
          f"x{out['merged_lockstep_over_alone']:.3f}, engine x{out['engine_lockstep_over_alone']:.3f}; "
          f"minor faults per pass pair: {out['minor_faults_per_pair_lockstep']} in lock-step, "
          f"{out['minor_faults_per_pair_alone']} alone")
    emit(out)


if __name__ == "__main__":
    main()
