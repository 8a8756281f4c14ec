"""The ``huabu`` command line: a thin shell over ``huabu.sdk.Client``.

Client commands (generate, edit, outpaint, jobs, models) live here and need only the base install.
Server commands (up, down, status, ...) are delegated to the command line the server registers as the
``huabu.server`` entry point, loaded only when one is run, so the client never pulls in ray or torch.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TextIO, Union

import pydantic

from huabu.sdk import constants, masks
from huabu.sdk._client import Client
from huabu.sdk._errors import APIStatusError, HuabuError, JobCanceledError, JobTimeoutError
from huabu.sdk._jobs import JobHandle
from huabu.sdk._results import ImageResults
from huabu.sdk.types import Job, JobEvent

if TYPE_CHECKING:  # grpcio is an extra: huabu.sdk.grpc is imported only for --transport grpc
    from huabu.sdk.grpc import GrpcClient

# One line each for the top-level help; the commands themselves live in the server's command line.
SERVER_COMMANDS = {
    "up": "start a local Ray cluster and deploy huabu (prints its URL and development admin key)",
    "down": "remove the application and stop the local Ray cluster huabu started",
    "status": "application, deployment and replica states of the local server",
    "demo": "bring huabu up, then generate, inpaint and outpaint over HTTP and write PNGs",
    "serve-config": "print a Ray Serve config (serve deploy) generated from the settings",
    "cluster": "a local multi-node Ray cluster with GPU nodes; an offline capacity calculator",
    "keys": "create, list and revoke API keys (admin key)",
    "rollout": "canary rollouts: start, traffic, status, report, pause, resume, promote, rollback",
    "train": "train an own MMDiT checkpoint on the synthetic dataset",
    "quality": "the prompt-adherence table of a checkpoint",
    "convert": "convert Qwen-Image weights to and from the own MMDiT",
}
# Options that take a value, skipped when looking for the command's name; --base-url, --api-key and
# --json are accepted by every command, before or after its name (`huabu --api-key K keys list`).
CLIENT_VALUE_OPTIONS = ("--base-url", "--api-key", "--timeout", "--max-retries", "--transport", "--grpc-address")
SERVER_ENTRY_POINT_GROUP = "huabu.server"
SERVER_EXTRA_HINT = "this command needs the server extra: pip install 'huabu[server]'"
SERVER_EXTRA_MODULES = ("ray", "torch", "yaml", "fastapi", "safetensors")

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

DESCRIPTION = "huabu (画布): generate and edit images with a huabu server."
EPILOG = f"""\
server commands ({", ".join(SERVER_COMMANDS)}) need `pip install 'huabu[server]'`;
`huabu COMMAND --help` describes each. --base-url, --api-key and --json go before or after any command.

environment:
  {constants.BASE_URL_ENV}   server URL (default: the server `huabu up` started, else {constants.DEFAULT_BASE_URL})
  {constants.API_KEY_ENV}    API key, sent as `Authorization: Bearer <key>` (default: on the URL of a
                   server `huabu up` started, its development admin key from $HUABU_HOME/dev-admin-key)
  HUABU_GRPC_ADDRESS gRPC host:port for --transport grpc (default 127.0.0.1:9000)

examples:
  huabu generate "一只在雪地里的红狐狸" --seed 7 -o fox.png
  huabu edit fox.png "a fox wearing a scarf" --rect 8,8,24,24 -o scarf.png
  huabu outpaint fox.png "a wide snowy forest" --extend right:32 -o wide.png
  huabu jobs submit "a lighthouse at dusk"      # prints the job id at once
  huabu jobs events <job-id>                     # live progress of a running job
"""


# --- the progress bar -------------------------------------------------------------------------


class ProgressBar:
    """A plain text bar on stderr, redrawn in place on a terminal, one line per status change otherwise."""

    def __init__(self, job_id: str, stream: TextIO | None = None, *, enabled: bool = True, width: int = 30) -> None:
        self.job_id = job_id
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.width = width
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_status: str | None = None
        self._drawn = False

    def render(self, step: int, total: int, status: str, *, cached: bool = False) -> str:
        if cached:  # answered from the result cache: no denoising steps ran
            return f"[{'#' * self.width}] cached {status:<9} {self.job_id}"
        filled = int(self.width * step / total) if total else 0
        bar = "#" * filled + "-" * (self.width - filled)
        return f"[{bar}] {step}/{total} {status:<9} {self.job_id}"

    def update(self, event: JobEvent) -> None:
        if not self.enabled:
            return
        status = event.status.value
        if event.queue_position is not None:  # waiting: its place in the queue and when it should be done
            eta = f" ~{event.eta_s:.0f}s" if event.eta_s is not None else ""
            status = f"{status} #{event.queue_position}{eta}"
        step, total = event.step or 0, event.total or 0
        images = event.result.data if event.result is not None else []
        cached = bool(images) and all(image.cached for image in images)
        if self.interactive:
            self.stream.write("\r" + self.render(step, total, status, cached=cached))
            self._drawn = True
        elif status != self._last_status or event.is_terminal:
            self.stream.write(self.render(step, total, status, cached=cached) + "\n")
        self._last_status = status
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.interactive and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


# --- argument parsing -------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _box(text: str) -> tuple[int, int, int, int]:
    parts = text.split(",")
    if len(parts) != 4:
        raise argparse.ArgumentTypeError("expected LEFT,TOP,RIGHT,BOTTOM in pixels, e.g. 8,8,24,24")
    try:
        left, top, right, bottom = (int(p) for p in parts)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not integers: {text}") from exc
    return left, top, right, bottom


def _extension(text: str) -> masks.Extents:
    direction, sep, pixels = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError("expected DIRECTION:PIXELS, e.g. right:64 or all:16")
    try:
        return masks.extend(direction, int(pixels))  # type: ignore[arg-type]  # masks.extend validates it
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _connection_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # The same options on the main parser and each subcommand, defaults suppressed so the subcommand
    # never overwrites a value given before it (`huabu --base-url X generate ...`).
    default = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("connection")
    group.add_argument("--base-url", default=default, help=f"server URL (env {constants.BASE_URL_ENV})")
    group.add_argument("--api-key", default=default, help=f"API key (env {constants.API_KEY_ENV})")
    group.add_argument("--json", action="store_true", default=default, help="print machine-readable JSON on stdout")
    group.add_argument("--timeout", type=float, default=default, help="total deadline per request, seconds")
    group.add_argument("--max-retries", type=int, default=default, help="retries on overload and network errors")
    group.add_argument(
        "--transport",
        choices=["http", "grpc"],
        default=default,
        help="http (default) or grpc (huabu.v1.Images; needs `pip install 'huabu[grpc]'`)",
    )
    group.add_argument("--grpc-address", default=default, metavar="HOST:PORT", help="env HUABU_GRPC_ADDRESS")


def _generation_options(parser: argparse.ArgumentParser, *, sized: bool = True) -> None:
    group = parser.add_argument_group("generation")
    group.add_argument("--model", help="'name@version' or 'name' (default: the server's default model)")
    group.add_argument("-n", "--n", type=int, default=None, help="number of images (1-4)")
    if sized:
        group.add_argument("--size", help="WIDTHxHEIGHT in pixels, e.g. 64x64")
    group.add_argument("--seed", type=int, help="seed for reproducible images")
    group.add_argument("--steps", type=_positive_int, help="denoising steps")
    group.add_argument("--guidance-scale", "--cfg", dest="guidance_scale", type=float, help="classifier-free guidance")
    group.add_argument("--negative-prompt", help="what the image should not show")
    group.add_argument("--cache", choices=["use", "bypass", "refresh"], help="result cache behaviour (default: use)")
    group.add_argument("--user", help="end-user id (sticky A/B assignment, abuse tracking)")


def _output_options(
    parser: argparse.ArgumentParser, *, outputs: bool = True, url: bool = False, direct: bool = False
) -> None:
    group = parser.add_argument_group("output")
    if outputs:
        group.add_argument(
            "-o",
            "--output",
            action="append",
            default=[],
            metavar="PATH",
            help="where to save; repeat per image, or use {i}, {seed}, {id} in the name (default huabu-{seed}.png)",
        )
        group.add_argument("--wait-timeout", type=float, default=constants.DEFAULT_WAIT_TIMEOUT, help="seconds")
    if url:
        group.add_argument("--url", action="store_true", help="ask for URL results (downloaded to save them)")
    if direct:
        group.add_argument("--direct", action="store_true", help="one blocking request instead of a job (no progress)")
    group.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="huabu", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _connection_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    def command(name: str, help: str, **kwargs: Any) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help, **kwargs)
        _connection_options(sub, suppress=True)
        return sub

    gen = command("generate", "text to image")
    gen.add_argument("prompt", help="what to draw (any language)")
    _generation_options(gen)
    _output_options(gen, url=True, direct=True)

    edit = command("edit", "inpaint: repaint the masked area of an image (or img2img without a mask)")
    edit.add_argument("image", type=Path, help="input image file")
    edit.add_argument("prompt", help="what the repainted area should show")
    area = edit.add_mutually_exclusive_group()
    area.add_argument("--mask", type=Path, help="mask PNG: transparent = repaint (OpenAI convention)")
    area.add_argument("--mask-bw", type=Path, help="black/white mask: white = repaint")
    area.add_argument("--rect", type=_box, metavar="L,T,R,B", help="repaint this rectangle")
    area.add_argument("--ellipse", type=_box, metavar="L,T,R,B", help="repaint the ellipse in this box")
    area.add_argument("--alpha", action="store_true", help="repaint where the input image is transparent")
    edit.add_argument("--feather", type=float, default=0.0, help="soften --rect/--ellipse edges (pixels)")
    edit.add_argument("--strength", type=float, help="img2img strength 0..1 (1 repaints fully)")
    _generation_options(edit)
    _output_options(edit, url=True, direct=True)

    out = command("outpaint", "extend an image beyond its borders")
    out.add_argument("image", type=Path, help="input image file")
    out.add_argument("prompt", help="what the whole extended canvas shows")
    for side in ("left", "right", "top", "bottom"):
        out.add_argument(f"--{side}", type=int, default=0, metavar="PX", help=f"pixels to add on the {side}")
    out.add_argument(
        "--extend", type=_extension, action="append", default=[], metavar="DIR:PX", help="e.g. right:64, all:16"
    )
    out.add_argument("--aspect", help="grow to an aspect ratio, e.g. 16:9 (centered)")
    _generation_options(out, sized=False)
    _output_options(out, url=True, direct=True)

    jobs = command("jobs", "submit and follow jobs")
    job_commands = jobs.add_subparsers(dest="job_command", metavar="JOB_COMMAND", required=True)
    submit = job_commands.add_parser("submit", help="queue a text-to-image job and print its id at once")
    submit.add_argument("prompt")
    _generation_options(submit)
    submit.add_argument("--wait", action="store_true", help="also wait with a progress bar and save the images")
    _output_options(submit, url=True)
    for name, help in (
        ("get", "show a job's state"),
        ("cancel", "cancel a job (it stops at the next denoising step)"),
        ("events", "follow a job's events (progress bar, or JSON lines with --json)"),
        ("result", "wait for a job and save its images"),
    ):
        sub = job_commands.add_parser(name, help=help, description=help)
        sub.add_argument("job_id")
        if name == "events":
            sub.add_argument("--ws", action="store_true", help="use the WebSocket instead of SSE (needs websockets)")
        _output_options(sub, outputs=name == "result")
        _connection_options(sub, suppress=True)

    command("models", "list the served models")

    usage = command("usage", "images, cached images, steps and generation time metered for an API key")
    usage.add_argument("--days", type=_positive_int, default=7, help="UTC days, newest first (default 7, at most 31)")
    usage.add_argument("--key-id", help="another key's usage (needs an admin key)")

    # Listed with a line each and accepted as a choice; main() hands them to the server's command line.
    for name, line in SERVER_COMMANDS.items():
        commands.add_parser(name, help=line, add_help=False)
    return parser


# --- commands ---------------------------------------------------------------------------------

AnyClient = Union[Client, "GrpcClient"]  # a runtime alias with a forward reference
ClientFactory = Callable[[argparse.Namespace], AnyClient]
GRPC_COMMANDS = "generate, edit, outpaint, jobs submit/get/cancel/events/result and models"


def make_client(args: argparse.Namespace) -> AnyClient:
    if getattr(args, "transport", None) == "grpc":
        try:
            from huabu.sdk.grpc import GrpcClient
        except ImportError as exc:
            raise ValueError(f"--transport grpc needs the grpc extra: pip install 'huabu[grpc]' ({exc})") from exc
        return GrpcClient(
            getattr(args, "grpc_address", None),
            getattr(args, "api_key", None),
            timeout=getattr(args, "timeout", None),
            max_retries=getattr(args, "max_retries", None),
        )
    return Client(
        base_url=getattr(args, "base_url", None),
        api_key=getattr(args, "api_key", None),
        timeout=getattr(args, "timeout", None),
        max_retries=getattr(args, "max_retries", None),
    )


client_factory: ClientFactory = make_client  # tests swap this for a client on a mock transport


def _generation_params(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    keys = ("model", "n", "size", "seed", "steps", "guidance_scale", "negative_prompt", "cache", "user", *names)
    params = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    if getattr(args, "url", False):
        params["response_format"] = "url"
    return params


def output_paths(outputs: Sequence[str], results: ImageResults) -> list[Path]:
    count = len(results)
    if outputs and len(outputs) not in (1, count):
        raise ValueError(f"got {len(outputs)} -o paths for {count} images: give one per image or one pattern")
    templates = list(outputs) if outputs else ["huabu-{seed}.png"]
    paths = []
    for i, image in enumerate(results):
        template = templates[i] if len(templates) == count else templates[0]
        fields = {"i": i, "seed": image.seed if image.seed is not None else i, "id": image.id or i}
        if re.search(r"\{(i|seed|id)\}", template):
            name = template.format(**fields)
        elif count > 1 and len(templates) == 1:
            path = Path(template)
            name = str(path.with_name(f"{path.stem}-{i}{path.suffix or '.png'}"))
        else:
            name = template
        paths.append(Path(name))
    if len(set(paths)) != len(paths):
        raise ValueError("the output paths collide: use {i} in the -o pattern")
    return paths


def _save(args: argparse.Namespace, results: ImageResults, out: IO[str]) -> None:
    paths = output_paths(args.output, results)
    for image, path in zip(results, paths, strict=True):
        image.save(path)
    if args.json:
        images = [
            {
                "path": str(path),
                "id": image.id,
                "seed": image.seed,
                "model": image.model,
                "cached": image.cached,
                "variant": image.variant,
                "url": image.url,
            }
            for image, path in zip(results, paths, strict=True)
        ]
        doc = {"job_id": results.job_id, "request_id": results.request_id, "images": images}
        out.write(json.dumps(doc, ensure_ascii=False) + "\n")
    else:
        for path in paths:
            out.write(f"{path}\n")


def _follow(handle: JobHandle, args: argparse.Namespace, err: TextIO) -> Job:
    bar = ProgressBar(handle.id, err, enabled=not args.no_progress)
    try:
        return handle.wait(timeout=getattr(args, "wait_timeout", None), on_event=bar.update)
    finally:
        bar.close()


def _run_images(client: AnyClient, args: argparse.Namespace, out: IO[str], err: TextIO) -> int:
    """generate / edit / outpaint: a job followed with a progress bar, or one direct request."""
    params = _generation_params(args)
    direct: Callable[..., ImageResults]
    submit: Callable[..., JobHandle]
    if args.command == "generate":
        inputs: tuple[Any, ...] = (args.prompt,)
        direct, submit = client.images.generate, client.jobs.submit
    elif args.command == "edit":
        params["mask"] = _mask(args)
        if args.strength is not None:
            params["strength"] = args.strength
        inputs = (args.image.read_bytes(), args.prompt)
        direct, submit = client.images.edit, client.jobs.submit_edit
    else:
        image = args.image.read_bytes()
        params.update(_extents(args, image).as_kwargs())
        inputs = (image, args.prompt)
        direct, submit = client.images.outpaint, client.jobs.submit_outpaint
    if args.direct:
        _save(args, direct(*inputs, **params), out)
        return EXIT_OK
    return _finish(submit(*inputs, **params), args, out, err)


def _finish(handle: JobHandle, args: argparse.Namespace, out: IO[str], err: TextIO) -> int:
    if not args.json:
        err.write(f"job {handle.id}\n")
    try:
        _follow(handle, args, err)
    except KeyboardInterrupt:
        err.write(f"\ninterrupted; job {handle.id} keeps running: `huabu jobs result {handle.id}` to fetch it later\n")
        return EXIT_INTERRUPTED
    _save(args, handle.result(timeout=None), out)
    return EXIT_OK


def _mask(args: argparse.Namespace) -> bytes | None:
    if args.mask is not None:
        return bytes(args.mask.read_bytes())
    if args.mask_bw is not None:
        return masks.from_black_white(args.mask_bw)
    if args.rect is not None:
        return masks.rectangle(args.image, args.rect, feather=args.feather)
    if args.ellipse is not None:
        return masks.ellipse(args.image, args.ellipse, feather=args.feather)
    if args.alpha:
        return masks.from_alpha(args.image)
    return None


def _extents(args: argparse.Namespace, image: bytes) -> masks.Extents:
    extents = masks.Extents(args.left, args.right, args.top, args.bottom)
    for extra in args.extend:
        extents = extents + extra
    if args.aspect:
        extents = extents + masks.to_aspect(extents.output_size(image), args.aspect)
    if extents == masks.Extents():
        raise ValueError("say how far to extend: --left/--right/--top/--bottom, --extend DIR:PX or --aspect W:H")
    return extents


def _describe(job: Job) -> str:
    progress = f"{job.progress.step}/{job.progress.total}" if job.progress.total else "-"
    parts = [job.id, job.status.value, job.kind, progress]
    if job.model:
        parts.append(job.model)
    if job.error is not None:
        parts.append(f"error: {job.error.message}")
    return "  ".join(parts)


def _run_jobs(client: AnyClient, args: argparse.Namespace, out: IO[str], err: TextIO) -> int:
    if args.job_command == "submit":
        handle = client.jobs.submit(args.prompt, **_generation_params(args))
        if args.wait:
            return _finish(handle, args, out, err)
        out.write((handle.job.model_dump_json() if args.json and handle.job else handle.id) + "\n")
        return EXIT_OK
    if args.job_command == "get":
        job = client.jobs.get(args.job_id).job
        assert job is not None
        out.write((job.model_dump_json() if args.json else _describe(job)) + "\n")
        return EXIT_OK
    if args.job_command == "cancel":
        job = client.jobs.cancel(args.job_id)
        out.write((job.model_dump_json() if args.json else _describe(job)) + "\n")
        return EXIT_OK
    if args.job_command == "events":
        handle = JobHandle(client, args.job_id) if isinstance(client, Client) else client.jobs.get(args.job_id)
        bar = ProgressBar(handle.id, err, enabled=not (args.no_progress or args.json))
        try:
            for event in handle.events(transport="ws" if args.ws else "sse"):
                bar.update(event)
                if args.json:
                    out.write(event.model_dump_json(exclude_none=True) + "\n")
                    out.flush()
        finally:
            bar.close()
        last = handle.last_event
        if last is not None and last.error is not None:
            err.write(f"huabu: job {handle.id} failed: {last.error.message}\n")
            return EXIT_ERROR
        return EXIT_OK
    handle = client.jobs.get(args.job_id)  # result
    return _finish(handle, args, out, err)


def _run_usage(client: AnyClient, args: argparse.Namespace, out: IO[str]) -> int:
    if not isinstance(client, Client):
        raise ValueError(f"usage is not available over gRPC (only {GRPC_COMMANDS})")
    report = client.usage.retrieve(days=args.days, key_id=args.key_id)
    if args.json:
        out.write(report.model_dump_json() + "\n")
        return EXIT_OK
    out.write(f"usage of key {report.key_id} (UTC days, newest first)\n")
    out.write(f"  {'date':<10} {'images':>7} {'cached':>7} {'steps':>7} {'generation s':>13}\n")
    for day in [*report.data, report.total]:
        row = f"{day.date:<10} {day.images:>7} {day.cached_images:>7} {day.steps:>7} {day.generation_s:>13.1f}"
        out.write(f"  {row}\n")
    return EXIT_OK


def _run_models(client: AnyClient, args: argparse.Namespace, out: IO[str]) -> int:
    listing = client.models.list()
    if args.json:
        out.write(listing.model_dump_json() + "\n")
    else:
        for model in listing.data:
            out.write(f"{model.id}\n")
    return EXIT_OK


def _format_validation(exc: pydantic.ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors())


def _delegate(argv: list[str]) -> int:
    # The server registers its command line under an entry point, so the SDK names no server module.
    # Its modules ship in every wheel and import their dependencies lazily: look for the extra's
    # packages first, so an SDK-only install gets the hint, not a traceback halfway in.
    commands = entry_points(group=SERVER_ENTRY_POINT_GROUP, name="main")
    missing = [name for name in SERVER_EXTRA_MODULES if importlib.util.find_spec(name) is None]
    if not commands:
        sys.stderr.write(f"{SERVER_EXTRA_HINT}\n")
        return EXIT_USAGE
    try:
        if missing:
            raise ImportError(name=missing[0])
        server_main = next(iter(commands)).load()
    except ImportError as exc:
        missing_note = f" (missing: {exc.name})" if exc.name else ""
        sys.stderr.write(f"{SERVER_EXTRA_HINT}{missing_note}\n")
        return EXIT_USAGE
    return int(server_main(argv) or 0)


def _command_index(argv: Sequence[str]) -> int | None:
    """Where the command's name is: the first word that is neither an option nor an option's value."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word in CLIENT_VALUE_OPTIONS:
            i += 2
        elif word.startswith("-"):
            i += 1
        else:
            return i
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    at = _command_index(args_list)
    if at is not None and args_list[at] in SERVER_COMMANDS:
        # Options given before the command follow it, where every server command accepts the global ones.
        return _delegate([args_list[at], *args_list[at + 1 :], *args_list[:at]])
    parser = build_parser()
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    out, err = sys.stdout, sys.stderr
    try:
        with client_factory(args) as client:
            if args.command in ("generate", "edit", "outpaint"):
                return _run_images(client, args, out, err)
            if args.command == "jobs":
                return _run_jobs(client, args, out, err)
            if args.command == "usage":
                return _run_usage(client, args, out)
            return _run_models(client, args, out)
    except pydantic.ValidationError as exc:
        err.write(f"huabu: invalid argument: {_format_validation(exc)}\n")
        return EXIT_USAGE
    except (ValueError, OSError) as exc:  # bad local input: unreadable file, bad -o pattern, bad mask box
        err.write(f"huabu: error: {exc}\n")
        return EXIT_USAGE
    except JobCanceledError as exc:
        err.write(f"huabu: {exc}\n")
        return EXIT_ERROR
    except JobTimeoutError as exc:
        err.write(f"huabu: {exc}\n")
        return EXIT_ERROR
    except APIStatusError as exc:
        err.write(f"huabu: error: {exc}\n")
        return EXIT_ERROR
    except HuabuError as exc:
        err.write(f"huabu: error: {exc}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        err.write("\ninterrupted\n")
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
