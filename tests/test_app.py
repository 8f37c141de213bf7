"""`promptsr app` (issue 12) end to end: the real command serves a real tiny model on a free local port, and
headless Chromium (Debian's package, driven by playwright) uses the page as a person would: uploads, prompt
controls, free text, runs, the queue, Stop, the download and the reproducing command. Every request the
page makes is recorded: none may leave 127.0.0.1. Skipped only where Chromium is not installed."""

from __future__ import annotations

import json
import shlex
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import expect
from test_cli_contract import ENV, EXE, loads_torch, one_error, promptsr
from test_safety_data import png

from sr_degrade import DegradationConfig
from sr_degrade.imageio import read_image, write_image
from sr_degrade.params import degrade, sample_params, sample_rng
from sr_degrade.samples import load_sample
from sr_degrade.text import describe

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (the browser test's optional system dependency: apt-get install chromium)",
)
#: The controls' defaults for a model trained without omitted ops, with blur and noise set by the test.
EXPECTED = "heavy blur, unchange, medium noise, light compression, downsample"
#: Chromium flags for a closed network: no background connections, no first-run work.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-quic", "--no-first-run"]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    """`promptsr app` on a free port, 2 steps by default; (url, run folder, process)."""
    out = tmp_path_factory.mktemp("app_runs")
    port = _free_port()
    log = open(out.parent / "app.log", "w+")
    proc = subprocess.Popen(
        [EXE, "app", "--model", str(model_dir), "--port", str(port), "--out", str(out), "--steps", "2"],
        stdout=log, stderr=subprocess.STDOUT, env=ENV,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            proc.kill()
            pytest.fail(f"promptsr app did not start (exit {proc.poll()}):\n{log.read()}")
        time.sleep(0.5)
    yield url, out, proc
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(server, browser):
    """A fresh page on the app, every request it makes recorded; afterwards none may have left 127.0.0.1."""
    url = server[0]
    context = browser.new_context(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    requests: list[str] = []
    context.on("request", lambda r: requests.append(r.url))
    pg = context.new_page()
    pg.on("websocket", lambda ws: requests.append(ws.url))
    pg.goto(url)
    pg.wait_for_selector("#run")
    yield pg
    context.close()
    outside = [u for u in requests if not (u.startswith(url) or u.startswith(("data:", "blob:")))]
    assert requests and not outside, f"requests that left 127.0.0.1: {outside}"
    fonts = [u for u in requests if u.split("?")[0].endswith((".woff", ".woff2", ".ttf", ".otf"))]
    assert not fonts, f"the page loaded font files (its theme uses the system's fonts): {fonts}"


def _lr(tmp_path: Path, side: int = 32) -> tuple[Path, np.ndarray]:
    """A bundled photo's crop degraded with the default config: a real LR of side x side pixels."""
    cfg = DegradationConfig()
    hr = np.ascontiguousarray(load_sample("coffee")[100 : 100 + 4 * side, 200 : 200 + 4 * side])
    lr = degrade(hr, sample_params(cfg, sample_rng(0, "coffee.png")))
    path = tmp_path / f"coffee_lr{side}.png"
    write_image(path, lr)
    return path, lr


def _upload(pg, path: Path) -> str:
    pg.locator("#upload input[type=file]").set_input_files(str(path))
    info = pg.locator("#lr_info")
    info.filter(has_text=path.name).wait_for(timeout=20000)
    return info.inner_text()


def _choose(pg, component: str, level: str) -> None:
    pg.locator(f"#level_{component} input").click()
    pg.locator(f"#level_{component}").get_by_role("option", name=level, exact=True).click()


def _set_number(pg, elem: str, value: int) -> None:
    box = pg.locator(f"#{elem} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    expect(pg.locator(f"#{elem} input[type=range]")).to_have_value(str(value), timeout=5000)  # the page took it


def _jobs(out: Path) -> list[dict]:
    path = out / "jobs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _wait_jobs(out: Path, n: int, timeout: float = 120) -> list[dict]:
    deadline = time.monotonic() + timeout
    while len(_jobs(out)) < n:
        assert time.monotonic() < deadline, f"{len(_jobs(out))} of {n} jobs finished in {timeout} s"
        time.sleep(0.2)
    return _jobs(out)


@needs_chromium
def test_controls_run_queued_and_the_command_reproduces_the_download(page, server, tmp_path):
    _, out, _ = server
    before = len(_jobs(out))
    lr_path, lr = _lr(tmp_path)
    assert "32x32 LR -> 128x128 output" in _upload(page, lr_path)
    assert page.locator("#source").get_by_label("auto").count() == 0  # the model folder has no estimator
    _choose(page, "blur", "heavy")
    _choose(page, "noise", "medium")
    page.locator("#prompt_info").filter(has_text=EXPECTED).wait_for(timeout=10000)

    page.locator("#run").click()
    page.locator("#run").click()  # a second click queues a second run: never two on the model at once
    first, second = _wait_jobs(out, before + 2)[before:]
    assert first["end"] <= second["start"], (first, second)
    expect(page.locator("#command textarea")).to_have_value(second["command"], timeout=30000)  # the page shows run 2
    assert f"prompt: {EXPECTED}" in page.locator("#status").inner_text()
    sizes = page.eval_on_selector_all("#result img", "els => els.map(e => [e.naturalWidth, e.naturalHeight])")
    assert sizes and all(s == [128, 128] for s in sizes), sizes  # bicubic and PromptSR, 4x, same zoom

    with page.expect_download() as download:
        page.locator("#download").click()
    got = tmp_path / "downloaded.png"
    download.value.save_as(got)
    sr = read_image(got)
    assert sr.shape == (128, 128, 3)
    page.screenshot(path=str(tmp_path / "app.png"), full_page=True)

    argv = shlex.split(second["command"])
    opts = dict(zip(argv[3::2], argv[4::2]))
    assert argv[:2] == ["promptsr", "upscale"] and argv[3] == "-o"
    assert opts["--prompt"] == EXPECTED and opts["--steps"] == "2" and opts["--seed"] == "0"
    assert [opts[k] for k in ("--scheduler", "--tile", "--color-fix", "--strength")] == ["ddim", "512", "none", "1.0"]
    assert np.array_equal(read_image(argv[2]), lr)  # the LR the page saved is the uploaded pixels
    r = subprocess.run([EXE, *argv[1:]], cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / opts["-o"]).read_bytes() == got.read_bytes() == Path(second["output"]).read_bytes()
    assert Path(first["output"]).read_bytes() == got.read_bytes()  # the same settings twice: the same bytes


@needs_chromium
def test_an_invalid_prompt_is_shown_inline_and_starts_no_job(page, server, tmp_path):
    _, out, _ = server
    _upload(page, _lr(tmp_path)[0])
    page.locator("#prompt_text textarea").fill("heavy blurr, downsample")
    info = page.locator("#prompt_info")
    info.filter(has_text="not in the vocabulary").wait_for(timeout=10000)
    assert "'heavy blurr'" in info.inner_text() and "heavy compression" in info.inner_text()  # the vocabulary
    assert page.locator("#source").get_by_label("text").is_checked()  # typing switched the source to the text
    jobs, runs = len(_jobs(out)), sorted(out.glob("*_run*.png"))
    page.locator("#run").click()
    page.locator("#prompt_text").filter(has_text="not in the vocabulary").wait_for(timeout=10000)  # the refusal
    assert page.locator("#status").inner_text().strip() == ""

    page.locator("#prompt_text textarea").fill("very blurry and a bit noisy")  # the paraphrase normaliser
    info.filter(has_text="understood as").wait_for(timeout=10000)
    assert "heavy blur" in info.inner_text() and "light noise" in info.inner_text()
    page.locator("#prompt_text textarea").fill("")  # the empty prompt: allowed, with the notice
    info.filter(has_text="without prompt").wait_for(timeout=10000)
    page.locator("#run").click()
    job = _wait_jobs(out, jobs + 1)[-1]
    assert job["prompt"] == "" and "--prompt ''" in job["command"]
    page.locator("#status").filter(has_text="without prompt").wait_for(timeout=30000)
    # The queue runs one job at a time, in order: had the refused click started one, it would have finished
    # before this one. Exactly one job and one output more, the valid run's, means the refusal started none.
    assert len(_jobs(out)) == jobs + 1 and len(sorted(out.glob("*_run*.png"))) == len(runs) + 1


@needs_chromium
def test_bad_uploads_are_refused_on_the_page_and_a_bundled_photo_loads_after(page, server, tmp_path):
    fake = tmp_path / "holiday.png"
    fake.write_text("this is not an image")
    assert "holiday.png: not a readable image" in _upload(page, fake)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png(60000, 60000))  # a few hundred bytes whose header claims 3.6 gigapixels
    text = _upload(page, bomb)
    assert "60000x60000" in text and "up to 1 megapixels" in text
    page.locator("#run").click()
    page.get_by_text("load an LR image first").first.wait_for(timeout=10000)

    # A bundled photo degraded on the spot, as `sr-degrade demo` does: its true prompt is shown and set.
    cfg = DegradationConfig()
    true_prompt = describe(sample_params(cfg, sample_rng(0, "chelsea.png")), cfg=cfg)
    page.locator("#photo input").click()
    page.locator("#photo").get_by_role("option", name="chelsea", exact=True).click()
    page.locator("#degrade").click()
    page.locator("#lr_info").filter(has_text="112x75 LR").wait_for(timeout=20000)
    assert true_prompt in page.locator("#lr_info").inner_text()
    page.locator("#prompt_info").filter(has_text=f"prompt: {true_prompt}").wait_for(timeout=10000)


@needs_chromium
def test_stop_cancels_between_denoising_steps(page, server, tmp_path):
    _, out, _ = server
    _upload(page, _lr(tmp_path, side=48)[0])
    _set_number(page, "steps", 200)
    runs = sorted(out.glob("*_run*.png"))
    page.locator("#run").click()
    page.get_by_text("denoising").first.wait_for(timeout=30000)  # per-step progress on the page
    page.locator("#stop").click()
    page.locator("#status").filter(has_text="Cancelled").wait_for(timeout=30000)
    done = int(page.locator("#status").inner_text().split("after step ")[1].split()[0])
    assert 0 <= done < 200
    assert sorted(out.glob("*_run*.png")) == runs  # nothing written for a stopped run


def test_a_model_folder_that_cannot_load_stops_the_app_with_one_error_line(model_dir, tmp_path):
    assert loads_torch("app", "--model", str(tmp_path / "missing")) == (2, False)  # refused before torch loads
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    r = promptsr("app", "--model", str(broken), "--port", str(_free_port()))
    assert "cannot load the denoiser" in one_error(r) and "Running on" not in r.stdout + r.stderr


def test_auto_is_offered_only_with_an_estimator_in_the_model_folder(model_dir, tmp_path):
    """The page built on a real model folder, with and without an (untrained) estimator copied into it."""
    from promptsr.app import CHOICES, Studio, build_page
    from promptsr.estimator import Estimator, EstimatorConfig, save_estimator

    def sources(folder: Path) -> list[str]:
        page = build_page(Studio(folder, tmp_path / "runs"))
        radios = [c for c in page.config["components"] if c["props"].get("elem_id") == "source"]
        return [choice[0] for choice in radios[0]["props"]["choices"]]

    assert sources(model_dir) == ["controls", "text"]
    with_est = tmp_path / "with_estimator"
    shutil.copytree(model_dir, with_est)
    cfg = EstimatorConfig(width=4, degradation=DegradationConfig().to_dict())
    save_estimator(Estimator(4), cfg, with_est / "estimator")
    assert sources(with_est) == ["controls", "text", "auto"]
    studio = Studio(with_est, tmp_path / "runs")
    lr = load_sample("coffee")[:64, :64]
    estimated = studio.resolve("auto", {}, "", lr)
    assert estimated.text and estimated.text.endswith("downsample") and "estimated prompt" in estimated.message
    # The controls follow the estimate: the same levels give the same prompt from the controls.
    levels = studio.estimated_levels(lr)
    assert set(levels) == {"blur", "resize1", "noise", "jpeg"}
    assert all(levels[c] in CHOICES[c] for c in levels)
    assert studio.resolve("controls", levels, "", None).text == estimated.text
    assert studio.estimated_levels(np.zeros((4, 4, 3), np.uint8)) is None  # too small to judge: controls untouched
    assert Studio(model_dir, tmp_path / "runs").estimated_levels(lr) is None  # no estimator
