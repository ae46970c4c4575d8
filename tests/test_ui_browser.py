"""The chat app in a real browser: Playwright drives Debian's Chromium against a local server."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from servers import SlowFake, serve

from rag.answer import Answerer
from rag.llm import Message

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make test installs it)"
)
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


def reply(messages: Sequence[Message]) -> str:
    q = messages[-1]["content"].split("Question:")[-1]
    if "hostile" in q.lower():
        return "The sources do not answer this question."
    return "OwlSet has 12,000 thermal images of animals at night [1]."


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield b
        b.close()


@pytest.fixture
def fake_app(small_corpus: Path, tmp_path: Path, fake_embedder, data_dir: Path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    from index_build.build import build_index
    from rag.config import get_config
    from rag.store import open_index
    from ui.app import build_app

    shutil.copy(data_dir / "listing_hostile.txt", small_corpus)
    cfg = get_config(
        {
            "index_dir": tmp_path / "index",
            "corpus": [small_corpus],
            "progress": False,
            "min_relevance": 0.05,
            "top_k": 3,
        }
    )
    build_index(cfg, embedder=fake_embedder)
    answerer = Answerer(cfg, index=open_index(cfg.index_dir, fake_embedder), generator=SlowFake(reply))
    url, app = serve(build_app(cfg, lambda model: answerer, models=["fake"]))
    yield url
    app.close()


def ask(page: Any, question: str) -> None:
    box = page.locator("#question textarea")
    box.fill(question)
    box.press("Enter")


def with_screenshot(page: Any, tmp_path: Path, fn: Any) -> None:
    try:
        fn()
    except Exception:
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        raise


def watch_for_cursor(page: Any) -> None:
    """Note whether the streaming cursor ('▍') is ever shown in the chat: on a loaded machine the
    few streamed updates of the fake model can come and go between two polls of the page."""
    page.wait_for_selector("#chat", state="attached")
    page.evaluate(
        """() => {
            window.__sawCursor = false;
            const chat = document.querySelector('#chat');
            new MutationObserver(() => {
                if (chat.innerText.includes('\u258d')) window.__sawCursor = true;
            }).observe(chat, {subtree: true, childList: true, characterData: true});
        }"""
    )


def test_chat_streams_with_evidence_and_citations(browser, fake_app: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page()
    page.goto(fake_app)

    def check() -> None:
        watch_for_cursor(page)
        ask(page, "How many thermal images of animals at night are in OwlSet?")
        page.wait_for_selector("#evidence .ev-card", timeout=20_000)
        assert "Tiny Owls" in page.locator("#evidence").inner_text()
        page.wait_for_function("window.__sawCursor === true", timeout=20_000)
        page.wait_for_function(
            "document.querySelector('#status').innerText.includes('sentences verified')", timeout=30_000
        )
        chat = page.locator("#chat").inner_text()
        assert "OwlSet has 12,000 thermal images" in chat and "Tiny Owls" in chat and "References" in chat
        assert page.locator("#chat a[href='#t1-ref-1']").count() >= 1
        assert page.locator("#evidence .ev-is-cited").count() == 1
        assert "cited as [1]" in page.locator("#evidence").inner_text()
        assert "sentences verified" in page.locator("#status").inner_text()
        page.locator("#settings").get_by_role("button").first.click()
        page.wait_for_selector("#topk", state="visible", timeout=5_000)
        assert page.locator("#mode").is_visible() and page.locator("#strict").is_visible()
        page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)

    with_screenshot(page, tmp_path, check)


def test_hostile_abstract_renders_as_text(browser, fake_app: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page()
    page.goto(fake_app)

    def check() -> None:
        ask(page, "What do hostile thermal owls papers claim?")
        page.wait_for_function("document.querySelector('#chat').innerText.includes('does not answer')", timeout=30_000)
        evidence = page.locator("#evidence")
        text = evidence.inner_text()
        assert "<script>window.__pwned = 1</script>" in text  # shown literally
        assert "[click me](http://evil.example)" in text
        assert evidence.locator("script, img").count() == 0
        assert page.locator("#chat script, #chat img[src='x']").count() == 0
        assert page.evaluate("window.__pwned === undefined")
        assert page.locator("a[href='http://evil.example']").count() == 0

    with_screenshot(page, tmp_path, check)


SUPPORTED = "OwlSet has 12,000 thermal images of animals at night"
UNSUPPORTED = "Tiny Owl runs at 95 frames per second on a phone"
# Records the chat after every change the browser makes to it: the verified text (outside the
# dimmed tail), the tail, and the tail's opacity. Nothing between two records is ever on screen.
RECORD_JS = """() => {
  window.__samples = [];
  const chat = document.querySelector('#chat');
  const take = () => {
    const clone = chat.cloneNode(true);
    const tails = [...chat.querySelectorAll('.rag-tail')];
    clone.querySelectorAll('.rag-tail').forEach(t => t.remove());
    window.__samples.push({
      main: clone.textContent,
      tail: tails.map(t => t.textContent).join(' '),
      opacity: tails.length ? parseFloat(getComputedStyle(tails[0]).opacity) : null,
    });
  };
  new MutationObserver(take).observe(chat, {subtree: true, childList: true, characterData: true});
}"""


def two_sentences(messages: Sequence[Message]) -> str:
    return f"{SUPPORTED} [1]. {UNSUPPORTED} [1]. Tiny Owl reaches 61.3 mAP on OwlSet [1]."


@pytest.fixture
def streaming_app(small_corpus: Path, tmp_path: Path, fake_embedder) -> Iterator[str]:  # type: ignore[no-untyped-def]
    from index_build.build import build_index
    from rag.config import get_config
    from rag.store import open_index
    from ui.app import build_app

    cfg = get_config({"index_dir": tmp_path / "index", "corpus": [small_corpus], "progress": False, "top_k": 3})
    cfg = cfg.replace(min_relevance=0.05)
    build_index(cfg, embedder=fake_embedder)
    # Slow enough that the browser renders many states of each sentence.
    answerer = Answerer(
        cfg, index=open_index(cfg.index_dir, fake_embedder), generator=SlowFake(two_sentences, delay_s=0.12)
    )
    url, app = serve(build_app(cfg, lambda model: answerer, models=["fake"]))
    yield url
    app.close()


def test_streamed_sentences_are_never_shown_without_their_verdict(browser, streaming_app: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page()
    page.goto(streaming_app)

    def check() -> None:
        page.wait_for_selector("#question textarea", state="visible")
        page.evaluate(RECORD_JS)
        ask(page, "How many thermal images of animals at night are in OwlSet?")
        page.wait_for_function(
            "document.querySelector('#status').innerText.includes('sentences verified')", timeout=60_000
        )
        samples = page.evaluate("window.__samples")
        streaming = [s for s in samples if "▍" in s["main"]]
        assert len(streaming) > 20, len(streaming)  # the stream was watched, not just its end
        tails = [s for s in samples if s["tail"].strip()]
        assert tails and all(s["opacity"] < 0.8 for s in tails)  # the unverified tail is dimmed
        for s in samples:
            main = s["main"]
            # An unsupported sentence is shown only with its mark and reason, never bare.
            at = main.find(UNSUPPORTED)
            if at >= 0:
                assert "[not supported: the number 95 is not in" in main[at : at + 200], main
            # The dimmed tail is only the sentence being written: a finished one has left it.
            assert not re.search(r"[.!?]\s+\w", s["tail"]), s
            # A supported sentence has its citation before the next sentence shows at all.
            if "Tiny" in s["tail"] or "Tiny Owl runs" in main:
                assert re.search(re.escape(SUPPORTED) + r"\.\s*\[1\]", main), s
        # The unsupported sentence was shown marked while the model was still writing.
        assert any(UNSUPPORTED in s["main"] and "61.3" in s["tail"] for s in samples)
        final = page.locator("#chat").inner_text()
        assert "61.3 mAP" in final and "References" in final and "▍" not in final
        assert page.locator("#chat a[href='#t1-ref-1']").count() >= 1
        page.screenshot(path=str(tmp_path / "streamed.png"), full_page=True)

    with_screenshot(page, tmp_path, check)


def test_anchors_are_unique_per_turn(browser, fake_app: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page()
    page.goto(fake_app)

    def check() -> None:
        for turn in (1, 2):
            ask(page, "How many thermal images of animals at night are in OwlSet?")
            page.wait_for_function(
                f"document.querySelectorAll('#chat a[href=\"#t{turn}-ref-1\"]').length > 0"
                " && document.querySelector('#status').innerText.includes('sentences verified')",
                timeout=30_000,
            )
        # Each turn's [1] jumps to its own reference, not to the first answer's.
        for turn in (1, 2):
            assert page.locator(f"#chat a[href='#t{turn}-ref-1']").count() >= 1
            assert page.locator(f"#chat [id$='t{turn}-ref-1']").count() == 1
        ids = page.evaluate("[...document.querySelectorAll('#chat [id]')].map(e => e.id)")
        assert len(ids) == len(set(ids))

    with_screenshot(page, tmp_path, check)


@pytest.mark.slow
def test_real_model_in_the_browser(browser, real_index, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from rag.config import get_config
    from ui.app import build_app

    cfg = get_config({"index_dir": real_index.index_dir})
    answerer = Answerer(cfg, index=real_index)
    answerer.warm_up()  # what `rag ui` does at start, so the timing is what a user sees
    url, app = serve(build_app(cfg, lambda model: answerer))
    page = browser.new_page()
    try:
        page.goto(url)

        def check() -> None:
            # Time from a ready page, as a user would press Enter (Gradio keeps a connection open,
            # so "network idle" never comes; the visible input and a short settle stand for it).
            page.wait_for_selector("#question textarea", state="visible")
            page.wait_for_timeout(1000)
            start = time.perf_counter()
            ask(page, "How many frames does the 8-Calves dataset contain?")
            page.wait_for_selector("#evidence .ev-card", timeout=60_000)
            evidence_s = time.perf_counter() - start
            page.wait_for_function("document.querySelector('#chat').innerText.includes('▍')", timeout=120_000)
            first_token_s = time.perf_counter() - start
            page.wait_for_function(
                "/sentences? checked|sentences verified/.test(document.querySelector('#status').innerText)",
                timeout=180_000,
            )
            first_sentence_s = time.perf_counter() - start
            page.wait_for_function(
                "document.querySelector('#status').innerText.includes('sentences verified')", timeout=180_000
            )
            chat = page.locator("#chat").inner_text()
            assert "67,760" in chat and "8-Calves Image dataset" in chat and "References" in chat
            (tmp_path / "timings.txt").write_text(
                f"evidence {evidence_s:.2f} s, first token {first_token_s:.2f} s, "
                f"first verified sentence {first_sentence_s:.2f} s\n"
            )
            page.screenshot(path=str(tmp_path / "real.png"), full_page=True)

        with_screenshot(page, tmp_path, check)
    finally:
        app.close()


def tides_reply(messages: Sequence[Message]) -> str:
    q = messages[-1]["content"].split("Question:")[-1]
    if "tidal" in q.lower():
        return "Tidal turbines recover sea temperature to within 0.3 degrees from strain alone [1]."
    return reply(messages)


def test_add_papers_from_the_chat_and_ask_about_them(  # type: ignore[no-untyped-def]
    browser, small_corpus: Path, tmp_path: Path, fake_embedder, data_dir: Path
) -> None:
    """Upload a .bib, watch the build finish, ask about a new paper: cited with authors, year and
    a DOI link. The app is not restarted."""
    from index_build.build import build_index
    from rag.config import get_config
    from rag.store import open_index
    from ui.app import build_app
    from ui.library import Library

    cfg = get_config({"index_dir": tmp_path / "index", "corpus": [small_corpus], "progress": False,
                      "min_relevance": 0.05, "top_k": 3})  # fmt: skip
    build_index(cfg, embedder=fake_embedder)
    answerer = Answerer(cfg, index=open_index(cfg.index_dir, fake_embedder), generator=SlowFake(tides_reply, 0.01))
    library = Library(cfg, lambda model: answerer)
    url, app = serve(build_app(cfg, library, models=["fake"]))
    upload = tmp_path / "upload" / "my_library.bib"
    upload.parent.mkdir()
    upload.write_bytes((data_dir / "sample.bib").read_bytes())
    page = browser.new_page()
    try:
        page.goto(url)

        def check() -> None:
            page.locator("#addpapers").get_by_role("button").first.click()
            page.locator("#upload input[type=file]").set_input_files(str(upload))
            page.wait_for_selector("#upload :text('my_library.bib')", timeout=20_000)
            page.locator("#add-papers").click()
            page.wait_for_selector("#add-status .add-status[data-state='done']", timeout=60_000)
            status = page.locator("#add-status").inner_text()
            assert "added 4 new paper(s)" in status, status
            assert page.locator("#add-progress").get_attribute("value") == "100"
            assert "alcorn2019strike" in status and "no abstract" in status  # a problem per entry
            assert (cfg.index_dir / "uploads" / "my_library.bib").is_file()

            ask(page, "How well do tidal turbines measure sea temperature?")
            page.wait_for_function("document.querySelector('#chat').innerText.includes('References')", timeout=30_000)
            chat = page.locator("#chat").inner_text()
            assert "Okafor and Lindqvist (2025)" in chat and "Tidal Turbines as Ocean Thermometers" in chat, chat
            link = page.locator("#chat a[href='https://doi.org/10.5555/jos.2025.0042']")
            assert link.count() >= 1
            evidence = page.locator("#evidence").inner_text()
            assert "Okafor and Lindqvist (2025)" in evidence
            page.screenshot(path=str(tmp_path / "added.png"), full_page=True)

            page.locator("#refsbox").get_by_role("button").first.click()
            button = page.locator("#download-refs")
            page.wait_for_selector("#download-refs", state="visible", timeout=20_000)
            deadline = time.perf_counter() + 20
            while not button.is_enabled() and time.perf_counter() < deadline:  # enabled once an answer cites
                page.wait_for_timeout(100)
            with page.expect_download(timeout=20_000) as info:
                button.click()
            bib = Path(info.value.path()).read_text(encoding="utf-8")
            assert "@article{okafor2025tides," in bib and "10.5555/jos.2025.0042" in bib

        with_screenshot(page, tmp_path, check)
    finally:
        app.close()
