"""``rag bench``: build, retrieval, answering and scale benchmarks, each against a baseline
measured in the same run, reported as ratios; writes JSON, Markdown and PNG under ``--out``."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from rag.cli import add_index_argument, config_from_args

STEPS = ("build", "retrieval", "answering", "scale", "load")
# Steps run when --only is not given; "load" (minutes of 8 clients on the real model) is asked for.
DEFAULT_STEPS = ("build", "retrieval", "answering", "scale")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="measure build, retrieval, answering and scale against baselines")
    p.add_argument(
        "--out", type=Path, default=Path("bench") / "results", help="results directory (default bench/results)"
    )
    p.add_argument("--only", action="append", choices=STEPS, default=None, help="run only these steps (repeatable)")
    p.add_argument("--scale-sizes", default="10000,100000,1000000", help="synthetic collection sizes (comma-separated)")
    p.add_argument("--scale-queries", type=int, default=200, help="real sentences used as queries in the scale step")
    p.add_argument(
        "--scale-hnsw-max",
        type=int,
        default=100_000,
        help="measure HNSW only up to this size (building it with efConstruction 200 at 1M takes over 15 min on 2 cores)",
    )
    p.add_argument("--scale-milvus-max", type=int, default=100_000, help="measure milvus-lite only up to this size")
    p.add_argument("--models", default="qwen2.5-coder-1.5b,qwen2.5-coder-0.5b", help="models for the answering step")
    p.add_argument("--questions", type=int, default=8, help="questions per model in the answering step")
    p.add_argument("--clients", type=int, default=8, help="concurrent chat clients in the load step")
    p.add_argument("--load-seconds", type=float, default=180.0, help="how long the load step sends requests")
    p.add_argument("--load-model", default="qwen2.5-coder-1.5b", help="the model behind the app in the load step")
    add_index_argument(p)
    p.set_defaults(func=run)


def _rag(*args: str) -> dict[str, Any]:
    """Run ``rag`` in a fresh process (so its peak memory is its own) and parse its JSON."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rag.cli", *args], capture_output=True, text=True, check=True)
    data = json.loads(proc.stdout)
    data["wall_s"] = time.perf_counter() - t
    return data


def bench_scale(index_dir: Path, args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """FAISS and milvus-lite at each size on vectors mixed from the index's real chunk embeddings."""
    import numpy as np

    from bench.scale import load_base, measure, real_recall, sentences
    from rag.faiss_index import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, IVF_NPROBE
    from rag.models import load_embedder

    base = load_base(index_dir)
    texts = sentences(index_dir, args.scale_queries)
    queries = np.asarray(load_embedder().embed(texts), dtype=np.float32)
    print(f"scale: {len(base)} real chunk vectors, {len(queries)} real sentences as queries", file=sys.stderr)
    rows: list[dict[str, Any]] = []
    for n in (int(x) for x in args.scale_sizes.split(",") if x):
        print(f"scale: {n:,} vectors...", file=sys.stderr)
        hnsw = ((40, (64, 256)), (HNSW_EF_CONSTRUCTION, (64, 128, 256, 512))) if n <= args.scale_hnsw_max else ()
        milvus = (IVF_NPROBE,) if n <= args.scale_milvus_max else None
        rows += measure(n, base, queries, hnsw=hnsw, milvus_nprobes=milvus)
    for row in rows:  # the settings `rag build --index-type ivf|hnsw` uses
        p = row["params"]
        row["default"] = (row["index"] == "ivf" and p.get("nprobe") == IVF_NPROBE) or (
            row["index"] == "hnsw"
            and p.get("ef_construction") == HNSW_EF_CONSTRUCTION
            and p.get("ef_search") == HNSW_EF_SEARCH
        )
    return rows, real_recall(base, queries)


def bench_build(corpus: Path) -> dict[str, Any]:
    """Cold build, warm rebuild (no change), and a rebuild after adding 10 papers."""
    from index_build.corpus import read_corpus

    work = Path(tempfile.mkdtemp(prefix="rag-bench-build-"))
    try:
        shutil.copytree(corpus, work / "corpus")
        index = str(work / "index")
        common = ["build", "--corpus", str(work / "corpus"), "--index", index, "--json", "--no-progress"]
        cold = _rag(*common)
        warm = _rag(*common)
        papers, _ = read_corpus([corpus])
        with (work / "corpus" / "added.jsonl").open("w", encoding="utf-8") as fh:
            for i, paper in enumerate(papers[:10]):  # new titles, so new papers with new chunks
                fh.write(
                    json.dumps({"title": f"Benchmark addition {i}: {paper.title}", "abstract": paper.abstract}) + "\n"
                )
        added = _rag(*common)
        return {"cold": cold, "warm": warm, "add_10_papers": added}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench_answering(models: list[str], questions: int, index: Path | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in models:
        tmp = Path(tempfile.mkdtemp(prefix="rag-bench-answer-"))
        cmd = [sys.executable, "-m", "bench.answering", "--model", model, "--limit", str(questions), "--out", str(tmp)]
        if index:
            cmd += ["--index", str(index)]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        out[model] = json.loads(next(tmp.glob("*.json")).read_text())
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def machine() -> str:
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _f(x: Any, digits: int = 1) -> str:
    return "-" if x is None else (f"{x:.{digits}f}" if isinstance(x, float) else str(x))


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# Benchmarks ({results['date']})", "", f"Machine: {results['machine']}.", ""]
    if "build" in results:
        b = results["build"]
        cold, warm, add = b["cold"], b["warm"], b["add_10_papers"]
        lines += [
            "## Build (bundled corpus)",
            "",
            "| run | seconds | embedded | chunks/s | peak RSS (MB) | index (MB) | vs cold |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, r in (("cold", cold), ("warm (no change)", warm), ("after adding 10 papers", add)):
            chunks_s = r["embedded"] / r["seconds"] if r["embedded"] else None
            lines.append(
                f"| {name} | {r['wall_s']:.1f} | {r['embedded']} | {_f(chunks_s)} | {r['peak_rss_mb']:.0f} | {r['size_bytes'] / 1e6:.1f} | {r['wall_s'] / cold['wall_s']:.3f}x |"
            )
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in cold["stage_seconds"].items())
        lines += [
            "",
            f"Cold build stages: {stages}; {cold['papers']} papers, {cold['chunks']} chunks, {cold['index_type']} index.",
            "",
        ]
    if "retrieval" in results:
        r = results["retrieval"]
        base = r["llama-index as_retriever() (baseline)"]
        lines += [
            "## Retrieval (bundled index, one query at a time, query embedding included)",
            "",
            "| method | queries | p50 (ms) | p95 (ms) | p50 vs baseline |",
            "|---|---|---|---|---|",
        ]
        for name, v in r.items():
            lines.append(
                f"| {name} | {v['queries']} | {v['p50_ms']:.1f} | {v['p95_ms']:.1f} | {v['p50_ms'] / base['p50_ms']:.2f}x |"
            )
        lines.append("")
    if "answering" in results:
        lines += [
            "## Answering (product vs naive: top-4 whole abstracts, same model, same run)",
            "",
            "| model | config | prompt tokens | first evidence (s) | first token (s) | total (s) | tokens/s | gold cited | peak RSS (MB) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for model, data in results["answering"].items():
            for cfg in ("default", "naive"):
                s = data["summary"][cfg]
                lines.append(
                    f"| {model} | {cfg} | {_f(s['prompt_tokens'], 0)} | {_f(s['to_evidence'], 2)} | {_f(s['first_token'])} | {_f(s['total'])} | {_f(s['tokens_per_s'])} | {s['gold_cited']}/{s['answerable']} | {data['peak_rss_mb']:.0f} |"
                )
            d, n = data["summary"]["default"], data["summary"]["naive"]
            if d["first_token"] and n["first_token"]:
                lines.append(
                    f"| {model} | naive / default | {n['prompt_tokens'] / d['prompt_tokens']:.2f}x | | {n['first_token'] / d['first_token']:.2f}x | {n['total'] / d['total']:.2f}x | | | |"
                )
        lines.append("")
    if "scale" in results:
        lines += [
            "## Scale (vectors mixed from the real MiniLM chunk embeddings, real sentences as queries; bench/scale.py)",
            "",
            "| vectors | engine | index | parameters | build (s) | size (MB) | p50 (ms) | p95 (ms) | recall@10 vs exact | p50 vs exact FAISS |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in results["scale"]:
            exact = next(
                r
                for r in results["scale"]
                if r["vectors"] == row["vectors"] and r["index"] == "flat" and r.get("engine", "faiss") == "faiss"
            )
            params = ", ".join(f"{k} {v}" for k, v in (row.get("params") or {}).items())
            lines.append(
                f"| {row['vectors']:,} | {row.get('engine', 'faiss')} | {row['index']} | {params} | {row['build_s']:.1f} | {row['index_mb']:.0f} | {row['p50_ms']:.2f} | {row['p95_ms']:.2f} | {_f(row['recall@10'], 3)} | {row['p50_ms'] / exact['p50_ms']:.3f}x |"
            )
        if results.get("scale_real"):
            lines += ["", "recall@10 on the real chunk vectors alone: " + ", ".join(
                f"{k}: {v:.3f}" for k, v in results["scale_real"].items()
            )]  # fmt: skip
        lines.append("")
    if "load" in results:
        d = results["load"]
        one, many = d["one_client"], d["many_clients"]
        lines += [
            f"## Load: the chat app with {d['model']}, {many['clients']} clients vs one",
            "",
            "| clients | seconds | requests | answered | refused | queue full | mixed up | errors | p50 s | p95 s | max s | per min |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in (one, many):
            lines.append(
                f"| {row['clients']} | {row['duration_s']:.0f} | {row['requests']} | {row['answered']} | {row['refused']} "
                f"| {row['rejected_queue_full']} | {row['mixed_up']} | {row['errors']} | {_f(row['latency_p50_s'])} "
                f"| {_f(row['latency_p95_s'])} | {_f(row['latency_max_s'])} | {_f(row['throughput_per_min'])} |"
            )
        lines += ["", f"Median latency, {many['clients']} clients / one: {_f(d['p50_ratio'], 2)}x.", ""]
    return "\n".join(lines)


def plot(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def finish(fig: Any, ax: Any, title: str, ylabel: str, path: Path) -> Path:
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    paths = []
    if "scale" in results:
        fig, ax = plt.subplots(figsize=(6, 4))
        for kind in ("flat", "hnsw", "ivf"):
            # one line per index type: FAISS, at the parameters `auto` uses
            rows = [r for r in results["scale"] if r["index"] == kind and r.get("default", kind == "flat")]
            if rows:
                ax.plot([r["vectors"] for r in rows], [r["p50_ms"] for r in rows], marker="o", label=kind)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("vectors")
        paths.append(
            finish(
                fig,
                ax,
                "FAISS search latency by collection size",
                "p50 latency (ms)",
                out / f"scale-{results['date']}.png",
            )
        )
    if "answering" in results:
        fig, ax = plt.subplots(figsize=(6, 4))
        labels, first, total = [], [], []
        for model, data in results["answering"].items():
            for cfg in ("default", "naive"):
                s = data["summary"][cfg]
                labels.append(f"{model.split('-')[-1]}\n{cfg}")
                first.append(s["first_token"] or 0)
                total.append(s["total"] or 0)
        xs = range(len(labels))
        ax.bar([x - 0.2 for x in xs], first, 0.4, label="first token")
        ax.bar([x + 0.2 for x in xs], total, 0.4, label="total")
        ax.set_xticks(list(xs), labels)
        paths.append(
            finish(
                fig, ax, "Answer time: product vs naive", "seconds (median)", out / f"answering-{results['date']}.png"
            )
        )
    return paths


def run(args: argparse.Namespace) -> int:
    from rag.models import load_embedder
    from rag.store import open_index

    cfg = config_from_args(args, index_dir="index")
    steps = args.only or list(DEFAULT_STEPS)
    results: dict[str, Any] = {"date": date.today().isoformat(), "machine": machine(), "steps": steps}
    started = time.perf_counter()
    if "build" in steps:
        print("build: cold, warm and incremental builds of the bundled corpus...", file=sys.stderr)
        results["build"] = bench_build(cfg.corpus[0])
    if "retrieval" in steps:
        print("retrieval: dense, BM25, hybrid and the llama-index baseline...", file=sys.stderr)
        from bench.retrieval import measure

        results["retrieval"] = measure(open_index(cfg.index_dir, load_embedder(cfg.embed_model)))
    if "answering" in steps:
        models = [m for m in args.models.split(",") if m]
        print(f"answering: {', '.join(models)}, product vs naive, {args.questions} questions each...", file=sys.stderr)
        results["answering"] = bench_answering(models, args.questions, args.index)
    if "scale" in steps:
        results["scale"], results["scale_real"] = bench_scale(cfg.index_dir, args)
    if "load" in steps:
        from bench.load import bench_load

        print(f"load: {args.clients} clients on the chat app for {args.load_seconds:.0f} s...", file=sys.stderr)
        results["load"] = bench_load(cfg.index_dir, args.load_model, clients=args.clients, duration_s=args.load_seconds)
    results["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    # A partial run gets its own files, so it does not overwrite the full one of the same day.
    partial = "" if set(steps) == set(DEFAULT_STEPS) else "-" + "-".join(steps)
    stem = f"bench-{results['date']}{partial}"
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    table = markdown(results)
    (args.out / f"{stem}.md").write_text(
        table + f"\nTotal benchmark time: {results['seconds'] / 60:.1f} min.\n", encoding="utf-8"
    )
    plot(results, args.out)
    print(table)
    print(f"\n({results['seconds'] / 60:.1f} min; results in {args.out}/{stem}.*)")
    return 0
