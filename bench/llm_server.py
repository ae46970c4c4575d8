"""Answering through a local OpenAI-compatible server against in process, same model, same run.

Three measurements, each beside its baseline:

1. **Overhead**: the same questions answered by the model in this process and through
   ``python -m llama_cpp.server`` (llama-cpp-python's server, started here on loopback with the
   same GGUF file and threads), alternating, after a warm-up of both; first token and total p50,
   and the ratio server / in process. The answers are compared too (greedy: they should match).
2. **Concurrency through the chat app**: ``clients`` chat sessions against the app whose model is
   the server (``--llm-url``), against one client asking in turn (``bench.load``).
3. **What the bundled server does with concurrent requests** (as several app processes sharing
   one server would send them): ``clients`` answers at once, straight to the server, with its
   default ``interrupt_requests=True`` and with ``--interrupt_requests False``.
4. **llama.cpp's ``llama-server`` with parallel slots** (``--llama-server PATH --parallel 1,4``):
   the same ``clients`` answers at once, straight to a ``llama-server`` started here on loopback
   with ``--parallel N --ctx-size 2048*N`` (2,048 tokens a slot) for each N, and the ratios
   against N=1 (one slot: requests queue, as with the bundled server).

The bundled server serves one request at a time (a lock around its one ``Llama``), so throughput
cannot grow with clients; ``llama-server --parallel N`` decodes up to N requests in one batch
(continuous batching), which is what step 4 measures.

Run: ``python -m bench.llm_server [--model NAME] [--questions 8] [--clients 8] [--out DIR]``;
``--llama-server PATH [--parallel 1,4] --skip-bundled`` for step 4 alone
(minutes: run it alone, under the machine's model lock if it has one).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

QUESTIONS = Path(__file__).parent / "data" / "questions.jsonl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _ServerProcess:
    """A server process on a free loopback port, started by ``_start`` and ready once its
    readiness URL answers; ended by ``stop()`` (or ``kill()``)."""

    name = "server"
    port: int
    log: Any
    proc: subprocess.Popen[bytes]
    start_s: float

    def _start(self, cmd: list[str], ready_url: str, timeout_s: float, env: dict[str, str] | None = None) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix=f"{self.name}-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)  # noqa: S603
        t = time.perf_counter()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}); log: {self.log.name}")
            try:
                with urllib.request.urlopen(ready_url, timeout=2) as resp:  # noqa: S310 - loopback
                    if resp.status == 200:
                        break
            except urllib.error.HTTPError as exc:  # up, and asking for its key
                if exc.code in (401, 403):
                    break
            except OSError:  # not listening yet, or 503 while the model loads
                pass
            if time.perf_counter() - t > timeout_s:
                self.stop()
                raise RuntimeError(f"{self.name} did not start in {timeout_s:.0f} s; log: {self.log.name}")
            time.sleep(0.1)
        self.start_s = time.perf_counter() - t

    def kill(self) -> None:
        """End the server at once (SIGKILL), as a crash would."""
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class LlamaCppServer(_ServerProcess):
    """``python -m llama_cpp.server`` on a free loopback port, serving one bundled model (or
    GGUF path) under ``alias``; ready when constructed, ended by ``stop()`` (or ``kill()``)."""

    name = "llama_cpp.server"

    def __init__(
        self,
        model: str,
        alias: str,
        *,
        n_threads: int = 2,
        n_ctx: int = 2048,
        interrupt_requests: bool = True,
        api_key: str | None = None,
        timeout_s: float = 180,
    ) -> None:
        from rag.llm import resolve_model

        _, path = resolve_model(model)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.alias = alias
        cmd = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(path), "--model_alias", alias,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_threads", str(n_threads), "--n_threads_batch", str(n_threads), "--n_ctx", str(n_ctx),
            "--interrupt_requests", str(interrupt_requests),
        ]  # fmt: skip
        if api_key:
            cmd += ["--api_key", api_key]
        self._start(cmd, f"{self.url}/models", timeout_s, env={**os.environ, "HF_HUB_OFFLINE": "1"})


class LlamaServer(_ServerProcess):
    """llama.cpp's ``llama-server`` binary on a free loopback port with ``parallel`` slots of
    ``ctx_per_slot`` tokens each, serving a GGUF file under ``alias``; ready (``/health`` answers
    200) when constructed, ended by ``stop()``."""

    name = "llama-server"

    def __init__(
        self,
        binary: Path,
        gguf: Path,
        alias: str,
        *,
        parallel: int = 1,
        n_threads: int = 2,
        ctx_per_slot: int = 2048,
        timeout_s: float = 300,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.alias = alias
        self.cmd = llama_server_cmd(
            binary, gguf, alias, port=self.port, parallel=parallel, n_threads=n_threads, ctx_per_slot=ctx_per_slot
        )
        self._start(self.cmd, f"http://127.0.0.1:{self.port}/health", timeout_s)


def llama_server_cmd(
    binary: Path, gguf: Path, alias: str, *, port: int, parallel: int, n_threads: int, ctx_per_slot: int
) -> list[str]:
    """The ``llama-server`` command line: ``--ctx-size`` is shared among the slots, so it is
    ``ctx_per_slot * parallel``."""
    return [
        str(binary), "-m", str(gguf), "--alias", alias,
        "--host", "127.0.0.1", "--port", str(port),
        "--parallel", str(parallel), "--ctx-size", str(ctx_per_slot * parallel),
        "-t", str(n_threads),
    ]  # fmt: skip


def parse_parallel(text: str) -> list[int]:
    """``"1,4"`` -> ``[1, 4]``: slot counts to measure, each a positive integer, no repeats."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated slot counts such as 1,4, got {text!r}") from None
    if not values or any(v < 1 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct positive slot counts such as 1,4, got {text!r}")
    return values


def _p(values: Sequence[float], q: int) -> float | None:
    vals = sorted(values)
    if not vals:
        return None
    if len(vals) == 1:
        return float(vals[0])
    return float(statistics.quantiles(vals, n=100, method="inclusive")[q - 1])


def overhead(local: Any, remote: Any, questions: Sequence[str]) -> dict[str, Any]:
    """Each question in process and through the server, alternating which goes first."""
    rows = []
    for i, q in enumerate(questions):
        order = [("in_process", local), ("server", remote)]
        if i % 2:
            order.reverse()
        got = {name: answerer.ask(q) for name, answerer in order}
        a, b = got["in_process"], got["server"]
        rows.append(
            {
                "question": q,
                **{f"{name}_{k}": got[name].timings.get(k) for name in got for k in ("first_token", "total")},
                "same_raw_text": a.raw_text == b.raw_text,
                "same_answer": (a.text, a.refused) == (b.text, b.refused),
                "server_incomplete": b.incomplete,
            }
        )
    out: dict[str, Any] = {"questions": len(rows), "rows": rows}
    for k in ("first_token", "total"):
        loc = _p([r[f"in_process_{k}"] for r in rows if r[f"in_process_{k}"] is not None], 50)
        srv = _p([r[f"server_{k}"] for r in rows if r[f"server_{k}"] is not None], 50)
        out[f"{k}_p50_in_process_s"], out[f"{k}_p50_server_s"] = loc, srv
        out[f"{k}_ratio"] = srv / loc if loc and srv else None
    out["same_answers"] = sum(r["same_answer"] for r in rows)
    out["same_raw_text"] = sum(r["same_raw_text"] for r in rows)
    return out


def concurrent_direct(answerer: Any, questions: Sequence[str], clients: int) -> dict[str, Any]:
    """``clients`` answers at once through one server (as that many app processes would ask)."""
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        q = questions[i % len(questions)]
        t = time.perf_counter()
        try:
            ans = answerer.ask(q)
            row = {"latency_s": time.perf_counter() - t, "incomplete": ans.incomplete, "error": None}
        except Exception as exc:  # noqa: BLE001 - counted, not raised
            row = {"latency_s": time.perf_counter() - t, "incomplete": False, "error": str(exc)[:200]}
        with lock:
            results.append(row)

    start = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(1800)
    wall = time.perf_counter() - start
    done = [r["latency_s"] for r in results if not r["error"]]
    return {
        "clients": clients,
        "wall_s": round(wall, 1),
        "complete": sum(1 for r in results if not r["error"] and not r["incomplete"]),
        "incomplete": sum(1 for r in results if r["incomplete"]),
        "errors": sum(1 for r in results if r["error"]),
        "latency_p50_s": _p(done, 50),
        "latency_p95_s": _p(done, 95),
        "complete_per_min": round(sum(1 for r in results if not r["error"] and not r["incomplete"]) / wall * 60, 2),
        "error_messages": sorted({r["error"] for r in results if r["error"]})[:5],
    }


def with_ratios(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Add to each run (keyed by slot count) its p50, p95 and throughput against the 1-slot run."""
    base = runs.get("1")
    for d in runs.values():
        for k in ("latency_p50_s", "latency_p95_s", "complete_per_min"):
            d[f"{k}_ratio"] = d[k] / base[k] if base and d.get(k) and base.get(k) else None
    return runs


def parallel_slots(
    binary: Path,
    model: str,
    base: Any,
    index: Any,
    questions: Sequence[str],
    clients: int,
    parallel: Sequence[int],
    threads: int,
) -> dict[str, Any]:
    """``clients`` answers at once to ``llama-server`` with each slot count in ``parallel`` (one
    server at a time, warmed up with one request), and the ratios against one slot."""
    from rag.answer import Answerer
    from rag.llm import resolve_model
    from rag.llm_server import OpenAIGenerator

    _, gguf = resolve_model(model)
    runs: dict[str, dict[str, Any]] = {}
    for n in parallel:
        server = LlamaServer(binary, Path(gguf), model, parallel=n, n_threads=threads)
        try:
            remote = Answerer(base, index=index, generator=OpenAIGenerator(server.url, model, timeout=1800))
            remote.warm_up()
            print(f"llama-server --parallel {n}: {clients} at once...", file=sys.stderr)
            logger.info("llama-server: %s", " ".join(server.cmd))
            d = concurrent_direct(remote, questions, clients)
            d["server_start_s"] = round(server.start_s, 1)
            d["command"] = " ".join(["llama-server", *server.cmd[1:]]).replace(str(gguf), "MODEL.gguf")
            runs[str(n)] = d
        finally:
            server.stop()
    return {"binary": str(binary), "runs": with_ratios(runs)}


def through_app(cfg: Any, questions: Sequence[str], clients: int, duration_s: float, baseline: int) -> dict[str, Any]:
    """The chat app with the server as its model: one client in turn, then ``clients`` at once."""
    from bench.load import LoadQuestion, one_against_many

    return one_against_many(cfg, [LoadQuestion(q) for q in questions], clients, duration_s, baseline)


def _f(x: Any, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def markdown(res: dict[str, Any]) -> str:
    o = res["overhead"]
    lines = [
        f"# Answering through llama_cpp.server vs in process ({res['date']})",
        "",
        f"Model {res['model']}; {res['machine']}; server start {res['server_start_s']:.1f} s.",
        "",
        f"## Overhead ({o['questions']} questions, alternating, after a warm-up of both)",
        "",
        "| metric | in process | through the server | ratio |",
        "|---|---|---|---|",
        f"| first token p50 (s) | {_f(o['first_token_p50_in_process_s'], 2)} | {_f(o['first_token_p50_server_s'], 2)} "
        f"| {_f(o['first_token_ratio'], 2)}x |",
        f"| total p50 (s) | {_f(o['total_p50_in_process_s'], 2)} | {_f(o['total_p50_server_s'], 2)} "
        f"| {_f(o['total_ratio'], 2)}x |",
        f"| same verified answer | | {o['same_answers']}/{o['questions']} | |",
        f"| same model text | | {o['same_raw_text']}/{o['questions']} | |",
    ]
    if "app" in res:
        a = res["app"]
        one, many = a["one_client"], a["many_clients"]
        lines += [
            "",
            f"## {many['clients']} chat clients through the app, model behind --llm-url",
            "",
            "| | 1 client | " + f"{many['clients']} clients |",
            "|---|---|---|",
            f"| requests | {one['requests']} | {many['requests']} |",
            f"| answered + refused | {one['answered'] + one['refused']} | {many['answered'] + many['refused']} |",
            f"| errors / mixed up | {one['errors']} / {one['mixed_up']} | {many['errors']} / {many['mixed_up']} |",
            f"| latency p50 (s) | {_f(one['latency_p50_s'])} | {_f(many['latency_p50_s'])} |",
            f"| latency p95 (s) | {_f(one['latency_p95_s'])} | {_f(many['latency_p95_s'])} |",
            f"| throughput (answers/min) | {_f(one['throughput_per_min'], 2)} | {_f(many['throughput_per_min'], 2)} |",
            f"| p50 ratio | | {_f(a['p50_ratio'], 2)}x |",
        ]
    if "direct" in res:
        lines += [
            "",
            "## Concurrent requests straight to llama_cpp.server (as several app processes would send them)",
            "",
            "| server setting | clients | complete | cut off (incomplete) | errors | p50 (s) | p95 (s) | complete/min |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, d in res["direct"].items():
            lines.append(
                f"| {name} | {d['clients']} | {d['complete']} | {d['incomplete']} | {d['errors']} | "
                f"{_f(d['latency_p50_s'])} | {_f(d['latency_p95_s'])} | {_f(d['complete_per_min'], 2)} |"
            )
    lines += ["", res["note"]]
    return "\n".join(lines)


def markdown_parallel(res: dict[str, Any]) -> str:
    """The ``llama-server`` slot comparison as a Markdown table, ratios against one slot."""
    ls = res["llama_server"]
    runs = ls["runs"]
    clients = next(iter(runs.values()))["clients"] if runs else 0
    lines = [
        f"# llama-server with parallel slots vs 1 slot ({res['date']})",
        "",
        f"Model {res['model']}; {res['machine']}; {res['threads']} threads; {clients} answers requested at once "
        "straight to the server (as several app processes would send them), each with the app's evidence "
        "prompt and answer budget. Binary: llama.cpp vendored in llama-cpp-python 0.3.36.",
        "",
        "| slots (--parallel) | clients | complete | cut off (incomplete) | errors | p50 (s) | p95 (s) "
        "| complete/min | p50 vs 1 slot | p95 vs 1 slot | throughput vs 1 slot |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, d in runs.items():
        lines.append(
            f"| {n} | {d['clients']} | {d['complete']} | {d['incomplete']} | {d['errors']} | "
            f"{_f(d['latency_p50_s'])} | {_f(d['latency_p95_s'])} | {_f(d['complete_per_min'], 2)} | "
            f"{_f(d['latency_p50_s_ratio'], 2)}x | {_f(d['latency_p95_s_ratio'], 2)}x | "
            f"{_f(d['complete_per_min_ratio'], 2)}x |"
        )
    lines += ["", "Commands (MODEL.gguf: the bundled model's GGUF file):", ""]
    lines += [f"- `{d['command']}`" for d in runs.values()]
    for d in runs.values():
        if d["error_messages"]:
            lines += ["", "Errors: " + "; ".join(d["error_messages"])]
            break
    return "\n".join(lines)


NOTE = (
    "llama_cpp.server runs one request at a time (a lock around its one model); with its default "
    "interrupt_requests=True a new request ends the one being streamed (its stream stops without a "
    "finish reason: an answer cut after its first token is verified as far as it got and marked incomplete, "
    "one cut before it is an error), so a shared server "
    "must run with --interrupt_requests False, and then requests queue. For llama-server with parallel "
    "slots see bench.llm_server --llama-server (llm-server-parallel-* results)."
)


def main(argv: Sequence[str] | None = None) -> int:
    from rag.answer import Answerer
    from rag.config import get_config
    from rag.store import open_index

    parser = argparse.ArgumentParser(prog="python -m bench.llm_server", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=get_config().model)
    parser.add_argument("--questions", type=int, default=8, help="questions for the overhead comparison")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--load-seconds", type=float, default=30.0, help="how long the app's clients keep asking")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads, in process and in the server")
    parser.add_argument("--skip-app", action="store_true", help="skip the chat-app load step")
    parser.add_argument("--skip-direct", action="store_true", help="skip the concurrent direct requests step")
    parser.add_argument("--skip-bundled", action="store_true", help="skip every step with llama_cpp.server (steps 1-3)")
    parser.add_argument(
        "--llama-server", type=Path, default=None, metavar="PATH", help="a llama-server binary: measure its slots"
    )
    parser.add_argument(
        "--parallel", type=parse_parallel, default=[1, 4], metavar="N,N", help="llama-server slot counts (1,4)"
    )
    parser.add_argument("--index", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.llama_server is not None and not args.llama_server.is_file():
        parser.error(f"--llama-server: no such file: {args.llama_server}")
    if args.skip_bundled and args.llama_server is None:
        parser.error("--skip-bundled leaves nothing to measure without --llama-server")

    questions = [json.loads(line)["question"] for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line]
    base = get_config({"model": args.model, **({"index_dir": args.index} if args.index else {})})
    first = Answerer(base)
    index = open_index(base.index_dir, first.embedder)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.skip_bundled:
        bundled(args, base, index, questions)
    if args.llama_server is not None:
        started = time.perf_counter()
        res: dict[str, Any] = {
            "date": date.today().isoformat(),
            "model": args.model,
            "machine": f"{os.cpu_count()} cores",
            "threads": args.threads,
        }
        res["llama_server"] = parallel_slots(
            args.llama_server, args.model, base, index, questions, args.clients, args.parallel, args.threads
        )
        res["seconds"] = time.perf_counter() - started
        stem = f"llm-server-parallel-{res['date']}-{args.model.replace('/', '_')}"
        (args.out / f"{stem}.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
        table = markdown_parallel(res)
        (args.out / f"{stem}.md").write_text(table + "\n", encoding="utf-8")
        print(table)
    return 0


def bundled(args: argparse.Namespace, base: Any, index: Any, questions: Sequence[str]) -> None:
    """Steps 1-3 with ``python -m llama_cpp.server``; writes ``llm-server-<date>-<model>.*``."""
    from rag.answer import Answerer
    from rag.llm import LlamaCppGenerator
    from rag.llm_server import OpenAIGenerator

    started = time.perf_counter()
    res: dict[str, Any] = {
        "date": date.today().isoformat(),
        "model": args.model,
        "machine": f"{os.cpu_count()} cores",
        "threads": args.threads,
        "note": NOTE,
    }
    server = LlamaCppServer(args.model, args.model, n_threads=args.threads, interrupt_requests=False)
    try:
        res["server_start_s"] = server.start_s
        local = Answerer(base, index=index, generator=LlamaCppGenerator(args.model, n_threads=args.threads))
        remote = Answerer(base, index=index, generator=OpenAIGenerator(server.url, args.model, timeout=600))
        local.warm_up()
        remote.warm_up()
        print(f"overhead: {args.questions} questions in process and through the server...", file=sys.stderr)
        res["overhead"] = overhead(local, remote, questions[: args.questions])
        del local  # free the in-process model before the load steps
        if not args.skip_app:
            print(f"app: 1 client, then {args.clients} for {args.load_seconds:.0f} s...", file=sys.stderr)
            cfg = base.replace(llm_url=server.url, llm_timeout=600.0)
            res["app"] = through_app(cfg, questions, args.clients, args.load_seconds, baseline=3)
        if not args.skip_direct:
            res["direct"] = {}
            print(f"direct: {args.clients} at once, interrupt_requests False...", file=sys.stderr)
            res["direct"]["--interrupt_requests False"] = concurrent_direct(remote, questions, args.clients)
    finally:
        server.stop()
    if not args.skip_direct:
        server = LlamaCppServer(args.model, args.model, n_threads=args.threads, interrupt_requests=True)
        try:
            remote = Answerer(base, index=index, generator=OpenAIGenerator(server.url, args.model, timeout=600))
            remote.warm_up()
            print(f"direct: {args.clients} at once, interrupt_requests True (default)...", file=sys.stderr)
            res["direct"]["interrupt_requests True (default)"] = concurrent_direct(remote, questions, args.clients)
        finally:
            server.stop()
    res["seconds"] = time.perf_counter() - started
    stem = f"llm-server-{res['date']}-{args.model.replace('/', '_')}"
    (args.out / f"{stem}.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    table = markdown(res)
    (args.out / f"{stem}.md").write_text(table + "\n", encoding="utf-8")
    print(table)


if __name__ == "__main__":
    sys.exit(main())
