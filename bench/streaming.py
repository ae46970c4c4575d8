"""What a reader of the chat app waits for: Enter -> evidence shown, -> first token, -> first
*verified* sentence, -> final answer; the streamed, sentence-verified chat against the old one that
streamed raw text and verified only at the end (the baseline: this branch's base commit of
``main``, served from a snapshot), same questions, same model, same run.

Both apps run as ``rag ui`` processes with the real model, warmed up (``rag ui`` loads the index,
the embedder and the model and reads the system prompt once before the first question); they stay
loaded side by side but only one answers at a time, and questions alternate between them so that
machine noise hits both alike. Chromium (Debian's, via Playwright) presses Enter; a
MutationObserver in the page stamps each milestone when the DOM changes, on the page's own clock.

Run (loads the 1.5B model twice; take the model lock):
``flock /tmp/model.lock python -m bench.streaming [--limit 6] [--out bench/results]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "eval" / "data" / "dev.jsonl"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
# One or two questions of each kind of the dev split (the split we tune on; never the test split).
PER_TYPE = {"number": 2, "fact": 1, "multi": 1, "paraphrase": 1, "unanswerable": 1}
MILESTONES = ("evidence", "first_token", "first_verified", "final")

# Stamps milestones on the page's clock: t0 is the Enter keydown, the others the first DOM change
# that shows them. The statuses are those both apps write (`ui.format.status_line`, and the
# streaming app's "N sentence(s) checked").
OBSERVE_JS = """() => {
  const box = document.querySelector('#question textarea');
  const status = document.querySelector('#status');
  const chat = document.querySelector('#chat');
  window.__m = {};
  box.addEventListener('keydown', e => { if (e.key === 'Enter' && !window.__m.t0) window.__m.t0 = e.timeStamp; });
  const stamp = (name) => { if (window.__m.t0 && !(name in window.__m)) window.__m[name] = performance.now() - window.__m.t0; };
  const look = () => {
    if (!window.__m.t0) return;
    if (document.querySelector('#evidence .ev-card')) stamp('evidence');
    if (chat.textContent.includes('\u258d')) stamp('first_token');
    const s = status.textContent;
    if (/\\d+ sentences? checked|sentences verified|refused \u00b7/.test(s)) stamp('first_verified');
    if (/sentences verified|refused \u00b7/.test(s)) stamp('final');
  };
  new MutationObserver(look).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dev_questions(limit: int) -> list[dict[str, Any]]:
    """The first questions of each type of the dev split (``PER_TYPE``), at most ``limit``."""
    rows = [json.loads(line) for line in DEV.read_text(encoding="utf-8").splitlines() if line.strip()]
    picked: list[dict[str, Any]] = []
    for kind, n in PER_TYPE.items():
        picked += [r for r in rows if r.get("type") == kind][:n]
    return picked[:limit]


def snapshot(ref: str, into: Path) -> str:
    """The code of ``ref`` (a commit of this repository) extracted into ``into``; its commit id."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", ref], check=True, capture_output=True, text=True)
    sha = commit.stdout.strip()
    with tempfile.TemporaryFile() as tar:
        subprocess.run(["git", "-C", str(ROOT), "archive", sha], check=True, stdout=tar)
        tar.seek(0)
        with tarfile.open(fileobj=tar) as archive:
            archive.extractall(into, filter="data")
    return sha


@contextlib.contextmanager
def rag_ui(code: Path, index: Path, model: str, log: Path) -> Iterator[str]:
    """``rag ui`` of the code in ``code``, warm (the health check says the model is ready); its URL."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "rag.cli", "ui", "--port", str(port), "--index", str(index), "--model", model]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=code, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"rag ui of {code} stopped; see {log}")
            with contextlib.suppress(OSError, ValueError):
                with urllib.request.urlopen(url + "api/health", timeout=5) as response:  # noqa: S310 (loopback)
                    health = json.load(response)
                if health["model"]["status"] == "ready":
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"rag ui of {code} did not warm up in 10 minutes; see {log}")
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def ask_once(page: Any, url: str, question: str, shots: dict[str, Path] | None = None) -> dict[str, Any]:
    """One question in a fresh chat; the milestones in seconds after Enter, and what was shown.

    ``shots``: where to save a screenshot of a streamed answer with a supported and an
    unsupported sentence, mid-stream ("midstream") and final ("final"), the first time one is seen.
    """
    page.goto(url)
    page.wait_for_selector("#question textarea", state="visible")
    page.wait_for_timeout(1000)  # a ready page, as a user would see it before typing
    page.evaluate(OBSERVE_JS)
    box = page.locator("#question textarea")
    box.fill(question)
    box.press("Enter")
    deadline = time.monotonic() + 300
    while True:
        marks = page.evaluate("window.__m")
        if shots and "midstream" in shots and not shots["midstream"].exists():
            text = page.locator("#chat").text_content() or ""
            if "\u258d" in text and "not supported:" in text and "[1]" in text:
                page.screenshot(path=str(shots["midstream"]), full_page=True)
        if "final" in marks or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    page.wait_for_timeout(300)
    status = page.locator("#status").inner_text()
    chat = page.locator("#chat").inner_text()
    if shots and "final" in shots and not shots["final"].exists() and "not supported:" in chat and "[1]" in chat:
        page.screenshot(path=str(shots["final"]), full_page=True)
    return {
        **{k: round(marks[k] / 1000, 3) for k in MILESTONES if k in marks},
        "status": status,
        "answer": chat.split("\n", 1)[-1][:600],
    }


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for app in ("baseline", "streaming"):
        mine = [r for r in rows if r["app"] == app]
        out[app] = {
            k: round(statistics.median([r[k] for r in mine if k in r]), 2)
            for k in MILESTONES
            if any(k in r for r in mine)
        }
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Streaming benchmark, {result['date']}",
        "",
        f"Model `{result['model']}`, {len(result['questions'])} dev questions, warm `rag ui` apps, Chromium; "
        f"baseline = commit `{result['baseline_commit'][:10]}` (raw stream, verified at the end), "
        f"streaming = `{result['streaming_commit'][:10]}` (each sentence verified as it completes). "
        "Seconds after Enter; medians.",
        "",
        "| app | evidence | first token | first verified sentence | final answer |",
        "|---|---|---|---|---|",
    ]
    for app, m in result["medians"].items():
        lines.append(f"| {app} | " + " | ".join(f"{m[k]:.2f}" if k in m else "-" for k in MILESTONES) + " |")
    lines += [
        "",
        "| question | app | evidence | first token | first verified | final | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        cells = " | ".join(f"{r[k]:.2f}" if k in r else "-" for k in MILESTONES)
        lines.append(f"| {r['id']} | {r['app']} | {cells} | {r['status'].split(' · ')[0]} |")
    lines += ["", result["goal"]]
    return "\n".join(lines) + "\n"


def fake_screenshot(path: Path, delay_s: float = 0.15) -> None:
    """A screenshot of a streamed answer with one supported and one unsupported sentence, taken
    mid-stream from the chat app with a fake model (the bundled test listing, the hashing embedder,
    a fixed reply written word by word): for when the real model wrote no unsupported sentence."""
    import threading

    from playwright.sync_api import sync_playwright

    from index_build.build import build_index
    from rag.answer import Answerer
    from rag.config import get_config
    from rag.llm import FakeGenerator, Message
    from rag.models import HashEmbedder
    from rag.store import open_index
    from ui.app import CSS, build_app

    reply = (
        "OwlSet has 12,000 thermal images of animals at night [1]. "
        "Tiny Owl runs at 95 frames per second on a phone [1]. Tiny Owl reaches 61.3 mAP on OwlSet [1]."
    )

    class Slow(FakeGenerator):
        def stream(self, messages: Sequence[Message], *, max_tokens: int) -> Iterator[str]:
            for piece in super().stream(messages, max_tokens=max_tokens):
                time.sleep(delay_s)
                yield piece

    with tempfile.TemporaryDirectory(prefix="bench-shot-") as tmp:
        embedder = HashEmbedder(dimension=64, max_tokens=256)
        cfg = get_config(
            {
                "index_dir": Path(tmp) / "index",
                "corpus": [ROOT / "tests" / "data" / "listing_plain.txt"],
                "progress": False,
                "top_k": 3,
                "min_relevance": 0.05,
            }
        )
        build_index(cfg, embedder=embedder)
        answerer = Answerer(cfg, index=open_index(cfg.index_dir, embedder), generator=Slow(reply))
        port = free_port()
        app = build_app(cfg, lambda model: answerer, models=["fake"])
        app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, css=CSS, quiet=True)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(f"http://127.0.0.1:{port}/")
                box = page.locator("#question textarea")
                box.fill("How many thermal images of animals at night are in OwlSet?")
                box.press("Enter")
                # The unsupported sentence is marked and the next one is still being written.
                page.wait_for_function(
                    "(() => { const t = document.querySelector('.rag-tail');"
                    " return document.querySelector('#chat').innerText.includes('not supported:')"
                    " && t && t.textContent.split(' ').length >= 4; })()",
                    timeout=60_000,
                )
                page.screenshot(path=str(path), full_page=True)
                browser.close()
        finally:
            threading.Thread(target=app.close, daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.streaming", description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=6, help="questions from the dev split (default 6)")
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--index", type=Path, default=ROOT / ".rag" / "index")
    parser.add_argument(
        "--baseline",
        default="main",
        help="the commit whose chat app is the baseline: the merge base of this branch and it (default main)",
    )
    parser.add_argument(
        "--baseline-index",
        type=Path,
        default=None,
        help="the index the baseline app opens, when the baseline's code cannot open --index "
        "(an index built by newer code); default: --index",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--fake-screenshot",
        action="store_true",
        help="only take the mid-stream screenshot with a fake model (no real model, no timings)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.fake_screenshot:
        shot = args.out / f"streaming-{date.today().isoformat()}-fake-midstream.png"
        fake_screenshot(shot)
        print(f"wrote {shot}")
        return 0
    from playwright.sync_api import sync_playwright

    questions = dev_questions(args.limit)
    args.out.mkdir(parents=True, exist_ok=True)
    today = date.today().isoformat()
    stem = args.out / f"streaming-{today}"
    shots = {"midstream": Path(f"{stem}-midstream.png"), "final": Path(f"{stem}-final.png")}
    for shot in shots.values():
        shot.unlink(missing_ok=True)
    base = subprocess.run(
        ["git", "-C", str(ROOT), "merge-base", "HEAD", args.baseline], check=True, capture_output=True, text=True
    ).stdout.strip()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-streaming-") as tmp:
        old_code = Path(tmp) / "baseline"
        snapshot(base, old_code)
        logs = Path(tmp)
        with (
            rag_ui(
                old_code, (args.baseline_index or args.index).resolve(), args.model, logs / "baseline.log"
            ) as old_url,
            rag_ui(ROOT, args.index.resolve(), args.model, logs / "streaming.log") as new_url,
            sync_playwright() as p,
        ):
            browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            apps = {"baseline": old_url, "streaming": new_url}
            for url in apps.values():  # one unmeasured question each: the page and the server's first request
                ask_once(page, url, "What is Matryoshka Representation Learning?")
            for i, q in enumerate(questions):
                order = ("baseline", "streaming") if i % 2 == 0 else ("streaming", "baseline")
                for app in order:
                    row = {
                        "id": q["id"],
                        "app": app,
                        **ask_once(page, apps[app], q["question"], shots if app == "streaming" else None),
                    }
                    logger.info("%s %s %s", q["id"], app, {k: row.get(k) for k in MILESTONES})
                    rows.append(row)
            browser.close()
    streaming = [r for r in rows if r["app"] == "streaming" and "first_token" in r and "first_verified" in r]
    within = [r for r in streaming if r["first_verified"] - r["first_token"] <= 2.0]
    gaps = sorted(round(r["first_verified"] - r["first_token"], 2) for r in streaming)
    result = {
        "date": today,
        "model": args.model,
        "baseline_commit": base,
        "streaming_commit": head.stdout.strip(),
        "questions": [q["id"] for q in questions],
        "rows": rows,
        "medians": summarise(rows),
        "goal": f"Goal first verified sentence <= first token + 2 s: met for {len(within)} of {len(streaming)} "
        f"streamed answers (gaps in s: {gaps}).",
        "screenshots": [str(s.relative_to(ROOT)) for s in shots.values() if s.exists()],
    }
    Path(f"{stem}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    Path(f"{stem}.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
