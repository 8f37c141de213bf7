"""`promptsr app`: the model in a browser page (gradio), served from this machine only.

    promptsr app --model demo_out/model_tiny            # then open http://127.0.0.1:7860

Two halves. `Studio` is the model side and knows nothing of gradio: it reads uploads (header first,
so a non-image or an oversized image is refused before anything is decoded), degrades a bundled
photo on the spot, turns the page's controls or free text into a prompt (the CLI's rules: strict
vocabulary, else the paraphrase normaliser's "understood as", else an error listing the vocabulary),
runs one upscale at a time under a lock with a cancel check between denoising steps, and writes each
run's LR, output and a `jobs.jsonl` line (times, prompt, the reproducing command) into its folder.
`build_page` lays the gradio page over it.

Offline by construction: gradio's analytics and version check are off (GRADIO_ANALYTICS_ENABLED),
the theme uses the system's fonts (no font files at all), server-side rendering is off (it would
start Node), and no share link is made unless asked for. Everything the page loads comes from the
app's own address; the end-to-end test records every request the browser makes to check it.
"""

from __future__ import annotations

import json
import os
import shlex
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from sr_degrade.config import FIRST_OPS, LEVELS, RESIZE1_LEVELS
from sr_degrade.errors import SrDegradeError
from sr_degrade.imageio import check_image_size, decode_image, write_image
from sr_degrade.text import NONE, canonical_prompt, parse_prompt, vocabulary

from .options import SamplingOptions
from .prompts import find_estimator, open_estimator, understood

#: Levels a component control offers: "none" leaves its phrase out (or, for a model trained without
#: omitted operations, becomes the lightest level with a note, as `canonical_prompt` does).
CHOICES: dict[str, tuple[str, ...]] = {
    "blur": (NONE, *LEVELS),
    "resize1": (NONE, *RESIZE1_LEVELS),
    "noise": (NONE, *LEVELS),
    "jpeg": (NONE, *LEVELS),
}
#: Where the prompt comes from; "auto" only when the model folder holds a degradation estimator.
SOURCES = ("controls", "text", "auto")
SCHEDULERS = ("ddim", "dpm-solver++", "euler", "unipc")
TILES = (64, 128, 256, 512)
#: LR pixels the page accepts by default (a 1000 x 1000 LR makes a 16 MP x4 output).
MAX_PIXELS = 1_000_000
EMPTY_NOTICE = "empty prompt: the model's 'without prompt' setting (the paper's ablation), not a description"


class Cancelled(Exception):
    """Raised from the sampler's step callback when the page's Stop was pressed."""


#: The sampling options of one run (`promptsr.options.SamplingOptions`; the page sets no batch or clip).
Settings = SamplingOptions
DEFAULTS = SamplingOptions()


def page_settings(
    steps: int = 50, scheduler: str = "ddim", seed: int = 0, tile: int = 512, color: str = "none", strength: float = 1.0
) -> SamplingOptions:
    """The page's controls as sampling options: the overlap is the CLI's 64, smaller for small tiles (it
    must stay below the tile)."""
    return SamplingOptions(
        steps=steps, scheduler=scheduler, seed=seed, tile=tile, overlap=min(64, tile // 4), color=color,
        strength=strength,
    )  # fmt: skip


@dataclass
class Prompt:
    """A resolved prompt: `text` is what the model is given (None: invalid, nothing may run)."""

    text: str | None
    message: str  #: markdown shown under the prompt controls
    notes: tuple[str, ...] = ()


def reproduce_command(lr: Path, output: Path, model: Path, prompt: str, s: Settings, device: str = "cpu") -> str:
    """The `promptsr upscale` line that gives the same output bytes as the page's run (no sidecar .txt
    lies beside the saved LR, so --prompt is the prompt that runs)."""
    args = [
        "promptsr", "upscale", str(lr), "-o", str(output), "--model", str(model), "--prompt", prompt,
        "--steps", str(s.steps), "--scheduler", s.scheduler, "--seed", str(s.seed), "--tile", str(s.tile),
        "--overlap", str(s.overlap), "--color-fix", s.color, "--strength", repr(float(s.strength)),
    ]  # fmt: skip
    if device != "cpu":
        args += ["--device", device]
    return shlex.join(args)


class Studio:
    """The model side of the page: one loaded model, its optional estimator, and the run folder."""

    def __init__(self, model: Path, out: Path, device: str = "cpu", max_pixels: int = MAX_PIXELS):
        from .estimator import omits_ops
        from .inference import Upscaler

        self.model_dir, self.out, self.device, self.max_pixels = Path(model), Path(out), device, max_pixels
        self.up = Upscaler(self.model_dir, device=device)
        self.cfg = self.up.model.degradation
        self.omission = omits_ops(self.cfg)
        self.estimator = None
        est_dir = find_estimator(None, self.model_dir)
        if est_dir is not None:
            self.estimator = open_estimator(est_dir, self.up.scale, self.cfg)
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one upscale at a time, whatever the web server does
        self._count_lock = threading.Lock()
        self._cancel: threading.Event | None = None
        self._count = len(list(self.out.glob("*_lr.png")))  # a reused folder: numbering goes on
        self._runs = len(list(self.out.glob("*_run*.png")))

    # ---- inputs ---------------------------------------------------------------------------------

    def _next(self, stem: str) -> str:
        with self._count_lock:
            self._count += 1
            return f"{self._count:04d}_{stem}"

    def _check_size(self, name: str, w: int, h: int) -> None:
        """The page's pixel limit (--max-pixels), then this machine's memory (`Upscaler.check_fits`)."""
        if w * h > self.max_pixels:
            raise SrDegradeError(
                f"{name}: {w}x{h} is {w * h / 1e6:.1f} megapixels; this page takes LR images up to "
                f"{self.max_pixels / 1e6:g} megapixels (promptsr app --max-pixels): crop or downscale it"
            )
        self.up.check_fits(h, w)

    def read_upload(self, path: str | Path, name: str | None = None) -> tuple[Path, np.ndarray]:
        """An uploaded file -> (its LR saved as PNG in the run folder, the pixels). SrDegradeError for a
        non-image, or an image over the page's pixel limit or this machine's memory (from the header)."""
        name = name or Path(path).name
        data = np.fromfile(path, dtype=np.uint8)
        if data.size == 0:
            raise SrDegradeError(f"{name}: the file is empty")
        w, h = check_image_size(data, name, max_pixels=None)
        self._check_size(name, w, h)
        lr = decode_image(data, name, max_pixels=None)
        saved = self.out / f"{self._next(Path(name).stem)}_lr.png"
        write_image(saved, lr)
        return saved, lr

    def bundled(self, photo: str, seed: int) -> tuple[Path, np.ndarray, str, dict[str, str]]:
        """A bundled photo degraded on the spot with the model's degradation config, as `sr-degrade demo
        --seed SEED` degrades it: (LR saved in the run folder, LR, its true prompt, {component: level})."""
        from sr_degrade.params import degrade, sample_params, sample_rng
        from sr_degrade.samples import load_sample, sample_paths
        from sr_degrade.text import bins, describe

        paths = {p.stem: p for p in sample_paths()}
        if photo not in paths:
            raise SrDegradeError(f"no bundled photo {photo!r}; choose one of {', '.join(paths)}")
        params = sample_params(self.cfg, sample_rng(int(seed), paths[photo].name))
        lr = degrade(load_sample(photo), params)
        self._check_size(photo, lr.shape[1], lr.shape[0])
        saved = self.out / f"{self._next(photo)}_lr.png"
        write_image(saved, lr)
        levels = bins(params, self.cfg)
        return saved, lr, describe(params, cfg=self.cfg), {c: levels.get(c, NONE) for c in FIRST_OPS}

    # ---- prompts --------------------------------------------------------------------------------

    def prompt_from_controls(self, levels: dict[str, str]) -> Prompt:
        for comp, level in levels.items():
            if level not in CHOICES.get(comp, ()):
                return Prompt(None, f"**error:** {comp} has no level {level!r}")
        text, notes = canonical_prompt(levels, self.cfg, omission=self.omission)
        return Prompt(text, f"prompt: `{text}`", tuple(notes))

    def prompt_from_text(self, raw: str) -> Prompt:
        """The CLI's rules: in the vocabulary as typed; else the normaliser's reading when it understood
        every word; else an error naming the words and listing the vocabulary (nothing runs)."""
        raw = (raw or "").strip()
        if not raw:
            return Prompt("", f"prompt: (empty). **Notice:** {EMPTY_NOTICE}")
        try:
            parse_prompt(raw, strict=True, cfg=self.cfg)
            return Prompt(raw, f"prompt: `{raw}` (in the vocabulary)")
        except SrDegradeError as e:
            strict_error = str(e)
        reading = understood(raw, self.cfg, self.omission)  # the CLI's --free-text reading
        if reading.mapped and not reading.unknown:
            return Prompt(reading.text, f"understood as: `{reading.text}`", tuple(reading.notes))
        with warnings.catch_warnings():  # the lenient parse names the phrases outside the vocabulary
            warnings.simplefilter("ignore")
            try:
                phrases = parse_prompt(raw, strict=False, cfg=self.cfg).unknown
            except SrDegradeError:  # e.g. one component given two levels: the strict message says it
                phrases = ()
        why = f"not in the vocabulary: {', '.join(map(repr, phrases))}" if phrases else strict_error
        if reading.unknown:
            why += f"; words not understood: {', '.join(reading.unknown)}"
        return Prompt(
            None,
            f"**error:** {why}. Known phrases: {', '.join(vocabulary(self.cfg))}; or plain words such as "
            "'very blurry, slightly noisy, jpeg quality 40'.",
        )

    def prompt_from_estimator(self, lr: np.ndarray | None) -> Prompt:
        if self.estimator is None:
            return Prompt(None, "**error:** this model folder holds no degradation estimator")
        if lr is None:
            return Prompt(None, "estimated from the image once one is loaded")
        try:
            text, notes, _ = self.estimator.prompt(lr, omission=self.omission)
        except SrDegradeError as e:  # e.g. an image too small to judge
            return Prompt(None, f"**error:** {e}")
        return Prompt(text, f"estimated prompt: `{text}`", tuple(notes))

    def estimated_levels(self, lr: np.ndarray) -> dict[str, str] | None:
        """The estimator's level per component, for the page's controls (None: no estimator, or an image
        it cannot judge), so that with "auto" the controls show what the prompt says."""
        if self.estimator is None:
            return None
        try:
            levels, _ = self.estimator.levels(lr)
        except SrDegradeError:
            return None
        return {c: levels[c] for c in FIRST_OPS}

    def resolve(self, source: str, levels: dict[str, str], text: str, lr: np.ndarray | None) -> Prompt:
        if source == "text":
            p = self.prompt_from_text(text)
        elif source == "auto":
            p = self.prompt_from_estimator(lr)
        else:
            p = self.prompt_from_controls(levels)
        if p.notes:
            p.message += "".join(f"  \nnote: {n}" for n in p.notes)
        return p

    # ---- running --------------------------------------------------------------------------------

    def cancel(self) -> bool:
        """Ask the running upscale to stop after its current step; False when none runs."""
        event = self._cancel
        if event is None:
            return False
        event.set()
        return True

    def check(self, s: Settings) -> None:
        try:
            s.check_inputs(flag="")
        except ValueError as e:
            raise SrDegradeError(str(e)) from None
        self.up.check_settings(**s.model_checks())

    def run(
        self, lr_path: Path, prompt: str, s: Settings, progress: Callable[[int, int], None] | None = None
    ) -> dict[str, Any]:
        """Upscale the saved LR (waits while another run holds the model). Returns the job record:
        output path, bicubic image, times and the reproducing command. Raises Cancelled."""
        from sr_degrade.imageio import read_image

        from .bicubic import bicubic_uint8

        self.check(s)
        lr = read_image(lr_path, max_pixels=None)
        with self._lock:
            self._runs += 1
            output = lr_path.with_name(lr_path.name.replace("_lr.png", f"_x{self.up.scale}_run{self._runs}.png"))
            event = self._cancel = threading.Event()
            start = time.time()

            def step(i: int, n: int) -> None:
                if event.is_set():
                    raise Cancelled(f"stopped after step {i} of {n}")  # step i is done; i + 1 never starts
                if progress is not None:
                    progress(i, n)

            try:
                sr = self.up.upscale(lr, prompt, callback=step, **s.upscale_kwargs())
            finally:
                self._cancel = None
                end = time.time()
            write_image(output, sr)
        record = {
            "lr": str(lr_path), "output": str(output), "prompt": prompt, "start": start, "end": end,
            "seconds": round(end - start, 3), "size": [sr.shape[1], sr.shape[0]],
            "command": reproduce_command(lr_path, Path(output.name), self.model_dir, prompt, s, self.device),
        }  # fmt: skip
        with self._count_lock, open(self.out / "jobs.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        return {**record, "bicubic": bicubic_uint8(lr, self.up.scale), "sr": sr}


# ---- the page -------------------------------------------------------------------------------------


def _gradio():
    """gradio, imported with its analytics and version check off (they would call out)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import gradio as gr

    return gr


def _theme(gr):
    """The default theme on the system's fonts: no font files fetched, from anywhere."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def build_page(studio: Studio, defaults: Settings = DEFAULTS):
    """The gradio Blocks of the app over `studio` (queue: one upscale at a time, up to 16 waiting)."""
    gr = _gradio()
    encoder = studio.up.model.encoder.get("id") or studio.up.model.encoder.get("name") or "?"
    # Files the page shows or offers for download are copies in gradio's cache: dropped after a day.
    with gr.Blocks(title="PromptSR", analytics_enabled=False, delete_cache=(3600, 86400)) as page:
        gr.Markdown(
            f"## PromptSR x{studio.up.scale}\nModel `{studio.model_dir}` (text encoder `{encoder}`"
            f"{', degradation estimator' if studio.estimator else ''}). Each run's LR, output and command are "
            f"kept in `{studio.out}`."
        )
        c = _layout(gr, studio, defaults)
        prompt_of = _wire_prompt(gr, studio, c)
        _wire_inputs(gr, studio, c)
        _wire_run(gr, studio, c, prompt_of)
    page.queue(default_concurrency_limit=1, max_size=16)
    return page


def _layout(gr, studio: Studio, defaults: Settings) -> SimpleNamespace:
    """The page's components: the LR (upload or a bundled photo degraded), the prompt, the sampling
    controls, the run buttons and the result."""
    from sr_degrade.samples import SAMPLE_NAMES

    c = SimpleNamespace()
    sources = [s for s in SOURCES if s != "auto" or studio.estimator is not None]
    lightest = {comp: ("unchange" if comp == "resize1" else LEVELS[0]) for comp in FIRST_OPS}
    c.start_levels = {comp: NONE for comp in FIRST_OPS} if studio.omission else lightest
    c.lr_state = gr.State(None)  # the current LR: its PNG in the run folder
    with gr.Row():
        with gr.Column():
            c.upload = gr.File(label="LR image (upload)", elem_id="upload")
            with gr.Row():
                c.photo = gr.Dropdown(list(SAMPLE_NAMES), value="coffee", label="or a bundled photo", elem_id="photo")
                c.photo_seed = gr.Number(0, precision=0, minimum=0, label="degradation seed")
                c.degrade_button = gr.Button("Degrade it", elem_id="degrade")
            c.lr_view = gr.Image(label="LR", interactive=False, format="png", height=260)
            c.lr_info = gr.Markdown("Upload an LR image, or degrade a bundled photo.", elem_id="lr_info")
        with gr.Column():
            c.source = gr.Radio(sources, value="controls", label="prompt from", elem_id="source")
            with gr.Row():
                c.levels = [
                    gr.Dropdown(list(CHOICES[comp]), value=c.start_levels[comp], label=comp, elem_id=f"level_{comp}")
                    for comp in FIRST_OPS
                ]
            c.text = gr.Textbox(
                label="prompt text", placeholder="heavy blur, downsample   or   very blurry and a bit noisy",
                elem_id="prompt_text",
            )  # fmt: skip
            c.prompt_info = gr.Markdown(
                studio.resolve("controls", c.start_levels, "", None).message, elem_id="prompt_info"
            )
            _sampling_controls(gr, c, defaults)
            with gr.Row():
                c.run = gr.Button("Upscale", variant="primary", elem_id="run")
                c.stop = gr.Button("Stop", variant="stop", elem_id="stop")
    c.slider = gr.ImageSlider(label="bicubic | PromptSR", format="png", max_height=700, elem_id="result")
    c.status = gr.Markdown(elem_id="status")
    c.download = gr.DownloadButton("Download the PNG", visible=False, elem_id="download")
    c.command = gr.Textbox(label="reproduce with", interactive=False, buttons=["copy"], elem_id="command")
    c.prompt_inputs = [c.lr_state, c.source, *c.levels, c.text]
    c.run_inputs = [*c.prompt_inputs, c.steps, c.scheduler, c.seed, c.tile, c.color, c.strength]
    return c


def _sampling_controls(gr, c: SimpleNamespace, defaults: Settings) -> None:
    with gr.Accordion("sampling", open=True):
        with gr.Row():
            c.steps = gr.Slider(
                1, max(200, defaults.steps), value=defaults.steps, step=1, label="steps", elem_id="steps"
            )
            c.strength = gr.Slider(
                0.05, 1.0, value=defaults.strength, step=0.05, label="strength", elem_id="strength",
                info="1: from pure noise (the paper); less: from the bicubic image, noised",
            )  # fmt: skip
        with gr.Row():
            c.scheduler = gr.Dropdown(list(SCHEDULERS), value=defaults.scheduler, label="scheduler")
            c.seed = gr.Number(defaults.seed, precision=0, minimum=0, label="seed")
            c.tile = gr.Dropdown(list(TILES), value=defaults.tile, label="tile (HR pixels)")
            c.color = gr.Radio(["none", "adain", "wavelet"], value=defaults.color, label="colour fix")


def _wire_prompt(gr, studio: Studio, c: SimpleNamespace):
    """The prompt shown as it is built; "auto" moves the controls to the estimate. Returns prompt_of."""
    from sr_degrade.imageio import read_image

    def prompt_of(lr_path, src, *rest) -> Prompt:
        *lv, typed = rest[: len(FIRST_OPS) + 1]
        lr = read_image(lr_path, max_pixels=None) if src == "auto" and lr_path else None
        return studio.resolve(src, dict(zip(FIRST_OPS, lv)), typed, lr)

    def show_prompt(*args) -> str:
        return prompt_of(*args).message

    for comp in [c.lr_state, c.source, *c.levels]:
        comp.change(show_prompt, c.prompt_inputs, c.prompt_info, queue=False)
    c.text.change(show_prompt, c.prompt_inputs, c.prompt_info, queue=False, trigger_mode="always_last")
    c.text.focus(lambda: "text", None, c.source, queue=False)  # typing a prompt means using it
    for lv in c.levels:  # so does choosing a level: the controls' prompt
        lv.select(lambda: "controls", None, c.source, queue=False)

    def follow_estimate(lr_path, src):
        """With "auto", the controls show the estimated levels: a change starts from the estimate."""
        found = studio.estimated_levels(read_image(lr_path, max_pixels=None)) if src == "auto" and lr_path else None
        return [found[comp] for comp in FIRST_OPS] if found else [gr.skip()] * len(FIRST_OPS)

    for comp in (c.lr_state, c.source):
        comp.change(follow_estimate, [c.lr_state, c.source], c.levels, queue=False)
    return prompt_of


def _wire_inputs(gr, studio: Studio, c: SimpleNamespace) -> None:
    """An uploaded LR, or a bundled photo degraded on the spot (its true prompt set in the controls)."""
    scale = studio.up.scale

    def on_upload(file):
        # The drop zone is emptied again: the LR shows below it, and the next file can be dropped at once.
        if file is None:
            return gr.skip(), gr.skip(), gr.skip(), None
        name = Path(file).name
        try:
            saved, lr = studio.read_upload(file, name)
        except (SrDegradeError, OSError) as e:
            return None, None, f"**error:** {e}", None
        h, w = lr.shape[:2]
        return str(saved), lr, f"{name}: {w}x{h} LR -> {w * scale}x{h * scale} output", None

    c.upload.upload(on_upload, c.upload, [c.lr_state, c.lr_view, c.lr_info, c.upload])

    def on_degrade(name, photo_seed):
        photo_seed = int(photo_seed or 0)
        try:
            saved, lr, true_prompt, lv = studio.bundled(name, photo_seed)
        except (SrDegradeError, OSError) as e:
            return None, None, f"**error:** {e}", *[gr.skip()] * (1 + len(FIRST_OPS))
        h, w = lr.shape[:2]
        info = f"{name} degraded on the spot (seed {photo_seed}) with `{true_prompt}` (set below): {w}x{h} LR"
        return str(saved), lr, info, "controls", *[lv[comp] for comp in FIRST_OPS]

    c.degrade_button.click(on_degrade, [c.photo, c.photo_seed], [c.lr_state, c.lr_view, c.lr_info, c.source, *c.levels])


def _wire_run(gr, studio: Studio, c: SimpleNamespace, prompt_of) -> None:
    """Upscale (validated before it is queued; progress per step; Stop after the current step)."""
    n_prompt = len(c.prompt_inputs)

    def validate(*args):
        """Runs before the queue: an invalid prompt is shown on the text box and no job is made."""
        # An "auto" prompt needs the estimator on the image: the job itself checks it.
        p = prompt_of(*args) if args[1] != "auto" else Prompt("", "")
        ok = [gr.validate(True, "")] * len(c.run_inputs)
        ok[c.run_inputs.index(c.text)] = gr.validate(p.text is not None, p.message.replace("**", ""))
        return ok

    def upscale(*args, progress=gr.Progress()):  # noqa: B008 (gradio finds its progress bar by this default)
        lr_path, n_steps, sched, sd, tl, col, stren = args[0], *args[n_prompt:]
        if not lr_path:
            raise gr.Error("load an LR image first (upload one, or degrade a bundled photo)")
        # The slider's float rounded to its grid, so the command's --strength parses back to the same value.
        s = page_settings(int(n_steps), sched, int(sd or 0), int(tl), col, round(float(stren), 4))
        try:
            prompt = prompt_of(*args[:n_prompt])
            if prompt.text is None:
                raise SrDegradeError(prompt.message.replace("**", ""))
            progress(0, desc="waiting for the model")
            rec = studio.run(
                Path(lr_path), prompt.text, s, lambda i, n: progress((i, n), desc="denoising", unit="steps")
            )
        except Cancelled as e:
            return None, f"Cancelled: {e}.", gr.update(visible=False), ""
        except (SrDegradeError, OSError) as e:
            raise gr.Error(str(e)) from None
        w, h = rec["size"]
        shown = f"`{prompt.text}`" if prompt.text else f"(empty): {EMPTY_NOTICE}"
        info = f"prompt: {shown}  \n{w}x{h} in {rec['seconds']:.1f} s; left bicubic, right PromptSR (drag the bar)"
        return (rec["bicubic"], rec["sr"]), info, gr.update(value=rec["output"], visible=True), rec["command"]

    c.run.click(
        upscale, c.run_inputs, [c.slider, c.status, c.download, c.command], validator=validate,
        trigger_mode="multiple", concurrency_limit=1, concurrency_id="upscale",
    )  # fmt: skip
    c.stop.click(
        lambda: "Stopping after the current step." if studio.cancel() else gr.skip(), None, c.status, queue=False
    )


def serve(
    model: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    device: str = "cpu",
    out: Path | None = None,
    max_pixels: int = MAX_PIXELS,
    defaults: Settings = DEFAULTS,
    log: Callable[[str], None] = print,
) -> None:
    """Load the model (SrDegradeError / OSError when it cannot be), then serve the page until interrupted."""
    import tempfile

    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="promptsr_app_"))
    studio = Studio(model, out, device=device, max_pixels=max_pixels)
    studio.check(defaults)
    page = build_page(studio, defaults)
    gr = _gradio()
    try:
        _, local_url, share_url = page.launch(
            server_name=host, server_port=port, share=share, ssr_mode=False, pwa=False, mcp_server=False,
            theme=_theme(gr), footer_links=[], max_file_size="200mb", show_error=True, quiet=True,
            prevent_thread_lock=True,
        )  # fmt: skip
    except OSError as e:  # gradio's own text names its environment variables, not our flags
        raise SrDegradeError(
            f"cannot listen on {host}:{port} (the port is taken, or {host} is not an address of this machine): "
            "choose another --port or --host"
        ) from e
    log(f"PromptSR app on {local_url}" + (f" and {share_url}" if share_url else "") + " (Ctrl+C stops it)")
    log(f"each run's LR, output PNG and command go to {out} (jobs.jsonl)")
    try:
        page.block_thread()
    finally:
        page.close()
