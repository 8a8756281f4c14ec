"""Server-side CLI commands: ``huabu up``, ``down``, ``status``, ``demo`` and ``serve-config``.

The SDK's CLI (``huabu.sdk.cli``) delegates these here, so the client install never imports ray or
torch. ``python -m huabu.cluster.cli <command>`` runs them directly.

``up`` starts (or joins) a local Ray cluster in the background and deploys the application with
embedded defaults (no Redis, no S3); ``demo`` does the same and then generates, inpaints and
outpaints over HTTP like any client would.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import importlib
import io
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huabu.cluster.keys_cli import local_dev_key, with_dev_admin_key
from huabu.cluster.output import fail, say, warn
from huabu.sdk._devkey import is_loopback_host as is_loopback  # one rule for open servers and the dev key

if TYPE_CHECKING:
    from huabu.cluster.local import ClusterState, LocalCluster
    from huabu.deployments.core.settings import Settings

# English, Chinese and mixed prompts: the byte-level text encoder needs no separate tokenizer.
DEMO_PROMPTS = {
    "en": "a red circle on the left",
    "zh": "左边一个蓝色正方形",
    "mixed": "右边有个 yellow triangle",
}
INPAINT_PROMPT = "a green square on the right"
OUTPAINT_PROMPT = "a red circle on the left, wide blue sky"


# --- settings for a local deployment -----------------------------------------------------------


def load_settings(
    path: str | None, host: str | None = None, port: int | None = None, model: str | None = None
) -> Settings:
    """Settings from ``--settings FILE`` and ``HUABU__*`` variables; ``--host``/``--port``/``--model`` win."""
    from huabu.deployments.core.settings import Settings

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if model is not None:  # the stable variant serves it; its other settings (LoRA, defaults) stay
        overrides["variants"] = {"stable": {"model": model}}
    return Settings.load(path, **overrides)


def check_open_server(settings: Settings, force: bool) -> None:
    """An open server (no API keys) only on loopback, unless forced: anyone who reaches it may generate,
    read every job and use the admin routes."""
    from huabu.cluster.local import ClusterError

    if settings.auth.enabled or force or is_loopback(settings.host):
        return
    raise ClusterError(
        f"API keys are off (--no-auth or auth.enabled: false) and --host {settings.host} serves beyond this "
        "machine: anyone who reaches it may use every route. Serve on --host 127.0.0.1, keep API keys on, "
        "or pass --force-no-auth if the network in front of it is trusted."
    )


def check_models(settings: Settings, local: bool) -> None:
    """Every variant's model reference, before anything starts: a wrong one fails here, naming it,
    instead of as a half-deployed application. Own checkpoints are looked up only on a local cluster
    (a remote one may keep them on its workers)."""
    from huabu.cluster.local import ClusterError
    from huabu.deployments.backends.loader import check_model, is_diffusers

    for name, variant in settings.variants.items():
        if not local and not is_diffusers(variant.model):
            continue
        try:
            check_model(variant, settings)
        except Exception as exc:
            raise ClusterError(f"variant {name!r} cannot serve its model: {exc}") from None


def localize(settings: Settings, host: str, port: int, cluster: LocalCluster) -> Settings:
    """Fill what a local deployment needs and the settings leave open: absolute paths (replicas run
    in Ray's worker directories, not here), the real URL, and a per-machine URL-signing secret."""
    from huabu.cluster.local import client_host

    storage = settings.storage
    update: dict[str, Any] = {"local_dir": str(Path(storage.local_dir).expanduser().resolve())}
    if "public_base_url" not in storage.model_fields_set:
        update["public_base_url"] = f"http://{client_host(host)}:{port}"
    if "signing_secret" not in storage.model_fields_set:
        update["signing_secret"] = cluster.secret("url-signing-secret")
    return settings.model_copy(
        update={
            "host": host,
            "port": port,
            "storage": storage.model_copy(update=update),
            "model_dirs": [str(Path(d).expanduser().resolve()) for d in settings.model_dirs],
        }
    )


def app_url(settings: Settings) -> str:
    from huabu.cluster.local import client_host

    return f"http://{client_host(settings.host)}:{settings.port}{settings.route_prefix.rstrip('/')}"


# --- up / down / status ------------------------------------------------------------------------


def bring_up(args: argparse.Namespace) -> tuple[str, ClusterState, Settings]:
    """Start or join the local cluster, deploy the app, wait for ``/readyz``. -> (url, state, settings)."""
    from huabu.cluster.local import (
        ClusterError,
        LocalCluster,
        app_status,
        client_host,
        deploy,
        pick_grpc_port,
        port_open,
        start_serve,
        wait_ready,
    )

    # Fail on bad settings and model references before starting Ray.
    settings = load_settings(args.settings, args.host, args.port, args.model)
    if args.kafka:  # the Kafka door on, its missing topics created (a development broker)
        kafka = settings.ingest.kafka.model_copy(
            update={"enabled": True, "bootstrap_servers": args.kafka, "create_topics": True}
        )
        settings = settings.model_copy(update={"ingest": settings.ingest.model_copy(update={"kafka": kafka})})
    if args.no_auth:  # the only way to serve without API keys
        settings = settings.model_copy(update={"auth": settings.auth.model_copy(update={"enabled": False})})
    check_open_server(settings, args.force_no_auth)
    check_models(settings, local=not args.address)
    cluster = LocalCluster()
    started = time.monotonic()
    state = cluster.running_state()
    fresh = state is None and not args.address
    if state is not None:
        say(f"Using the running Ray cluster at {state.address}")
    elif args.address:
        state = cluster.join(args.address)
        say(f"Joined the Ray cluster at {state.address}")
    else:
        if port_open(f"{client_host(settings.host)}:{settings.port}"):  # fail before starting Ray for nothing
            raise ClusterError(f"port {settings.port} is already in use on this machine: pick another with --port")
        state = cluster.plan()
    # The application's imports (torch, ray.serve: seconds) overlap with starting Ray. The auth
    # variables go first: Ray reads them when it is imported.
    os.environ.update(state.env())
    threading.Thread(target=importlib.import_module, args=("huabu.deployments.app",), daemon=True).start()
    if fresh:
        say(f"Starting a local Ray cluster (logs: {cluster.temp_dir}/session_latest/logs) ...")
        cluster.start_head(state, num_cpus=args.num_cpus)
        say(f"Ray is up at {state.address} ({time.monotonic() - started:.1f} s)")
    cluster.connect(state)

    from huabu.deployments.app import build_app

    grpc_port = pick_grpc_port(settings.host, args.grpc_port)
    host, port, served_grpc = start_serve(settings.host, settings.port, state.proxy_location, grpc_port)
    if (host, port, served_grpc) != (settings.host, settings.port, grpc_port):
        say(
            f"Serve is already running on {host}:{port} (gRPC: {served_grpc or 'off'}); HTTP and gRPC options "
            f"apply only at its first start, so {settings.host}:{settings.port} (gRPC: {grpc_port or 'off'}) "
            "is ignored (`huabu down` first to change them)."
        )
    settings = with_dev_admin_key(localize(settings, host, port, cluster), cluster.home)
    url = app_url(settings)
    digest = hashlib.sha256(settings.model_dump_json().encode()).hexdigest()
    current = app_status(settings.app_name)
    if digest == state.settings_digest and current is not None and current.status.value == "RUNNING":
        # Redeploying would restart every replica for nothing (`huabu demo` twice, `huabu up` twice).
        say(f"{settings.app_name!r} is already deployed with these settings.")
    else:
        say(f"Deploying {settings.app_name!r} (model {settings.stable_model}) ...")
        deploy(build_app(settings), settings.app_name, settings.route_prefix)
    try:
        waited = wait_ready(url, settings.app_name, args.timeout)
    except ClusterError as exc:
        from ray import serve

        serve.delete(settings.app_name)  # never leave a half-deployed application behind
        raise ClusterError(f"{exc}\n(the application was removed; the model replicas' logs say more)") from None
    state.url, state.app_name, state.settings_digest = url, settings.app_name, digest
    state.grpc_address = f"{client_host(host)}:{served_grpc}" if served_grpc else None
    cluster.save_state(state)
    import ray

    ray.shutdown()  # only this driver disconnects: Serve and the cluster stay up in the background
    say(f"Ready after {time.monotonic() - started:.1f} s (the app took {waited:.1f} s).")
    return url, state, settings


def served_models(settings: Settings) -> list[str]:
    """One line per variant: the canary is deployed beside the stable model but gets no traffic
    until a rollout starts."""
    notes = {"stable": "", "canary": "  (0 % of traffic until `huabu rollout start`)"}
    return [f"{name:<7} {v.model}{notes.get(name, '')}" for name, v in settings.variants.items()]


def usage_text(
    url: str, api_key: str | None = None, grpc_address: str | None = None, models: list[str] | None = None
) -> str:
    body = '{"prompt": "一只在雪地里的红狐狸", "size": "32x32", "seed": 7}'
    auth = f' -H "Authorization: Bearer {api_key}"' if api_key else ""
    key_lines = (
        [
            f"  export HUABU_API_KEY={api_key}   # the development admin key, for other machines:",
            "    # here the SDK, the CLI and the examples find it on this URL ($HUABU_HOME/dev-admin-key)",
            "  huabu keys create --scope generate --rate 60/min   # a key for an app; `huabu keys --help`",
            "",
        ]
        if api_key
        else ["  (API keys are off: --no-auth)", ""]
    )
    save_png = 'open("fox.png", "wb").write(base64.b64decode(json.load(sys.stdin)["data"][0]["b64_json"]))'
    sdk = f'Client(base_url="{url}").images.generate("a red fox in the snow", seed=7, size="32x32")[0].save("fox.png")'
    return "\n".join(
        [
            f"huabu is serving at {url}",
            *([f"  and over gRPC at {grpc_address} (huabu.v1.Images; docs/GRPC.md)"] if grpc_address else []),
            *(["", "models:", *(f"  {line}" for line in models)] if models else []),
            "",
            *key_lines,
            f"  curl -s {url}/v1/images/generations -H 'content-type: application/json'{auth} \\",
            f"    -d '{body}' \\",
            f"    | python -c 'import base64, json, sys; {save_png}'",
            "",
            f"  python -c 'from huabu.sdk import Client; {sdk}'",
            "",
            '  huabu generate "一只在雪地里的红狐狸" --seed 7 -o fox.png',
            "  huabu usage     # what this key has generated",
            "",
            "  huabu status    # application and replica states",
            "  huabu down      # stop the application and the local Ray cluster",
        ]
    )


def _up_failed(exc: Exception) -> int:
    from huabu.cluster.local import LocalCluster

    hint = "\nRay keeps running for a look at its logs; `huabu down` stops it." if LocalCluster().load_state() else ""
    return fail(f"{exc}{hint}")


def cmd_up(args: argparse.Namespace) -> int:
    from huabu.cluster.local import ClusterError, LocalCluster

    try:
        url, state, settings = bring_up(args)
    except ClusterError as exc:
        return _up_failed(exc)
    say()
    say(usage_text(url, local_dev_key(settings, LocalCluster().home), state.grpc_address, served_models(settings)))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from huabu.cluster.local import ClusterError, LocalCluster

    cluster = LocalCluster()
    state = cluster.load_state()
    if state is None:
        say("No local huabu cluster is recorded; nothing to stop.")
        return 0
    if cluster.running_state() is not None:
        try:
            cluster.connect(state)
            from ray import serve

            if state.started_by_huabu:
                serve.shutdown()  # every app and Serve's own actors; Ray goes next anyway
            elif state.app_name:
                serve.delete(state.app_name)  # someone else's cluster: take only our app away
            import ray

            ray.shutdown()
        except ClusterError as exc:
            say(f"Could not reach Serve ({exc}); stopping the processes.")
    stopped = cluster.stop_processes(state) if state.started_by_huabu else 0
    cluster.clear_state()
    if state.started_by_huabu:
        say(f"Stopped the local Ray cluster ({stopped} processes; logs kept in {state.temp_dir}).")
    else:
        say(f"Removed {state.app_name!r}; the Ray cluster at {state.address} keeps running.")
    return 0


def status_report(state: ClusterState) -> dict[str, Any]:
    from ray import serve

    status = serve.status()
    return {
        "ray_address": state.address,
        "started_by_huabu": state.started_by_huabu,
        "url": state.url,
        "grpc_address": state.grpc_address,
        "proxies": {node[:12]: str(s.value) for node, s in status.proxies.items()},
        "applications": {
            name: {
                "status": str(app.status.value),
                "message": app.message,
                "deployments": {
                    dep: {
                        "status": str(d.status.value),
                        "replicas": {str(k): v for k, v in d.replica_states.items()},
                        "message": d.message,
                    }
                    for dep, d in sorted(app.deployments.items())
                },
            }
            for name, app in status.applications.items()
        },
    }


def cmd_status(args: argparse.Namespace) -> int:
    from huabu.cluster.local import ClusterError, LocalCluster

    cluster = LocalCluster()
    state = cluster.running_state()
    if state is None:
        return fail("no local huabu cluster is running: start one with `huabu up`")
    try:
        cluster.connect(state)
    except ClusterError as exc:
        return fail(str(exc))
    report = status_report(state)
    if args.json:
        say(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    origin = "started by huabu" if state.started_by_huabu else "joined"
    say(f"Ray cluster {state.address} ({origin}); serving at {state.url or 'nothing deployed yet'}")
    if state.grpc_address:
        say(f"gRPC (huabu.v1.Images) at {state.grpc_address}")
    if not report["applications"]:
        say("No Serve applications.")
    for name, app in report["applications"].items():
        say(f"\napplication {name}: {app['status']}" + (f" ({app['message']})" if app["message"] else ""))
        say(f"  {'deployment':<16} {'status':<12} replicas")
        for dep, d in app["deployments"].items():
            replicas = ", ".join(f"{k}={v}" for k, v in d["replicas"].items()) or "-"
            say(f"  {dep:<16} {d['status']:<12} {replicas}" + (f"  {d['message']}" if d["message"] else ""))
    return 0


# --- demo: the README's main command -------------------------------------------------------------


def _png(data: bytes) -> bytes:
    """Validate that ``data`` is a PNG (the server embeds generation parameters in it)."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("the server did not return a PNG")
    return data


def repaint_right_half(image_png: bytes) -> bytes:
    """An OpenAI-style mask: the image's size, transparent pixels (right half) are repainted."""
    from PIL import Image

    with Image.open(io.BytesIO(image_png)) as image:
        width, height = image.size
    mask = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (width // 2, 0, width, height))
    out = io.BytesIO()
    mask.save(out, format="PNG")
    return out.getvalue()


async def run_demo(
    url: str, out: Path, size: str, steps: int, seed: int, timeout_s: float, api_key: str | None = None
) -> list[Path]:
    """Text-to-image (English, Chinese, mixed), inpaint and outpaint over HTTP; writes the PNGs."""
    import httpx

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(name: str, response: httpx.Response, what: str) -> bytes:
        if response.status_code != 200:
            raise RuntimeError(f"{what}: HTTP {response.status_code}: {response.text[:300]}")
        image = response.json()["data"][0]
        data = _png(base64.b64decode(image["b64_json"]))
        path = out / f"{name}.png"
        path.write_bytes(data)
        written.append(path)
        say(f"  wrote {path}  ({what}, model {image.get('model')}, seed {image.get('seed')})")
        return data

    common = {"size": size, "steps": steps, "response_format": "b64_json"}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, headers=headers) as client:
        models = (await client.get("/v1/models")).json()
        say(f"Models: {', '.join(m['id'] for m in models.get('data', []))}")
        # Sent together: the model deployment batches requests of the same shape.
        t2i = await asyncio.gather(
            *(
                client.post("/v1/images/generations", json={"prompt": prompt, "seed": seed + i, **common})
                for i, prompt in enumerate(DEMO_PROMPTS.values())
            )
        )
        images = [
            save(f"generate-{lang}", r, f"text-to-image {prompt!r}")
            for (lang, prompt), r in zip(DEMO_PROMPTS.items(), t2i, strict=True)
        ]
        first = images[0]
        inpaint, outpaint = await asyncio.gather(
            client.post(
                "/v1/images/edits",
                files={
                    "image": ("image.png", first, "image/png"),
                    "mask": ("mask.png", repaint_right_half(first), "image/png"),
                },
                data={"prompt": INPAINT_PROMPT, "seed": str(seed), "steps": str(steps), "response_format": "b64_json"},
            ),
            client.post(
                "/v1/images/outpaint",
                json={
                    "prompt": OUTPAINT_PROMPT,
                    "image": base64.b64encode(first).decode(),
                    "right": 16,
                    "seed": seed,
                    "steps": steps,
                    "response_format": "b64_json",
                },
            ),
        )
        save("inpaint", inpaint, f"inpaint, right half repainted: {INPAINT_PROMPT!r}")
        save("outpaint", outpaint, f"outpaint, 16 px to the right: {OUTPAINT_PROMPT!r}")
    return written


def cmd_demo(args: argparse.Namespace) -> int:
    from huabu.cluster.local import ClusterError, LocalCluster

    started = time.monotonic()
    given = args.base_url or args.url
    url = given.rstrip("/") if given else None
    api_key = args.api_key or os.environ.get("HUABU_API_KEY")
    if url is None:
        try:
            url, _, settings = bring_up(args)
        except ClusterError as exc:
            return _up_failed(exc)
        api_key = local_dev_key(settings, LocalCluster().home) or api_key
    out = Path(args.out)
    say(f"Generating over HTTP at {url} ({args.size}, {args.steps} steps) ...")
    generation_started = time.monotonic()
    try:
        written = asyncio.run(run_demo(url, out, args.size, args.steps, args.seed, args.request_timeout, api_key))
    except Exception as exc:
        code = fail(f"demo failed: {exc}")
    else:
        code = 0
        say(
            f"{len(written)} PNGs in {out.resolve()} (images {time.monotonic() - generation_started:.1f} s, "
            f"total {time.monotonic() - started:.1f} s)"
        )
    if given:
        return code
    if args.down:
        cmd_down(args)
    elif code == 0:
        say(f"The server keeps running at {url}: try `huabu status`; stop it with `huabu down`.")
        if api_key:
            say(f"Its API key for clients: export HUABU_API_KEY={api_key}")
    return code


# --- serve-config -------------------------------------------------------------------------------


def cmd_serve_config(args: argparse.Namespace) -> int:
    from huabu.cluster.serve_config import left_out, render

    settings = load_settings(args.settings, args.host, args.port, args.model)
    text = render(settings, full=args.full, grpc_port=args.grpc_port)
    for name in left_out(settings):  # the config still deploys; it must not carry the password
        warn(f"note: {name} carries a password and was left out: set it in the cluster's environment")
    if args.output:
        Path(args.output).write_text(text)
        say(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


# --- parser --------------------------------------------------------------------------------------


def _deploy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", metavar="FILE", help="settings YAML (HUABU__SECTION__FIELD variables apply too)")
    parser.add_argument("--host", help="HTTP host (default: settings, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP port (default: settings, 8000)")
    parser.add_argument(
        "--grpc-port",
        type=int,
        metavar="PORT",
        help="gRPC port of huabu.v1.Images (default: 9000, or a free port when 9000 is taken; 0: no gRPC)",
    )
    parser.add_argument("--address", help="deploy to this running Ray cluster (GCS host:port) instead of a local one")
    parser.add_argument("--num-cpus", type=int, help="CPUs for a new local Ray head (default: this machine's)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for /readyz (default 300)")
    parser.add_argument("--no-auth", action="store_true", help="serve without API keys (development only)")
    parser.add_argument(
        "--force-no-auth",
        action="store_true",
        help="allow serving without API keys on a --host other than loopback (a trusted network only)",
    )
    parser.add_argument(
        "--kafka",
        metavar="BOOTSTRAP",
        help="also consume generation requests from Kafka at BOOTSTRAP (host:port[,...]); topics and the "
        "rest from the settings' ingest.kafka (docs/KAFKA.md); needs huabu[kafka]",
    )
    parser.add_argument(
        "--model",
        metavar="REF",
        help="serve this model as the stable variant: name@version (own checkpoint) or "
        "diffusers:<folder or hub id>, e.g. diffusers:Qwen/Qwen-Image",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="huabu", description="huabu server commands")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("up", help="start a local Ray cluster and deploy huabu on embedded defaults")
    _deploy_options(p)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", help="remove the application and stop the local Ray cluster")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("status", help="application, deployment and replica states")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("demo", help="bring huabu up, then generate, inpaint and outpaint over HTTP and write PNGs")
    _deploy_options(p)
    p.add_argument("--out", default="outputs", help="folder for the PNGs (default: outputs)")
    p.add_argument("--url", help=argparse.SUPPRESS)  # the old name of the global --base-url
    p.add_argument("--down", action="store_true", help="stop the local cluster at the end")
    p.add_argument("--size", default="32x32", help="WIDTHxHEIGHT (default 32x32)")
    p.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--request-timeout", type=float, default=300.0, help="seconds per HTTP request")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("serve-config", help="print a Ray Serve config (serve deploy) generated from the settings")
    p.add_argument("--settings", metavar="FILE", help="settings YAML (HUABU__SECTION__FIELD variables apply too)")
    p.add_argument("--host", help="HTTP host (default: settings)")
    p.add_argument("--port", type=int, help="HTTP port (default: settings)")
    p.add_argument("--grpc-port", type=int, default=9000, metavar="PORT", help="gRPC port (default 9000; 0: none)")
    p.add_argument("--model", metavar="REF", help="the stable variant's model (as for `huabu up`)")
    p.add_argument("--full", action="store_true", help="list every setting in args, not only those set")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_serve_config)

    from huabu.cluster.nodes_cli import add_cluster_commands  # argparse only: keeps the CLI quick to start

    add_cluster_commands(sub)
    return parser


# Model commands with their own argument parsers, passed through whole.
PASS_THROUGH = {
    "train": "huabu.deployments.backends.mmdit.training.train",  # train a checkpoint on the synthetic dataset
    "quality": "huabu.deployments.backends.mmdit.eval.quality",  # the prompt-adherence table of a checkpoint
    "convert": "huabu.deployments.backends.mmdit.convert",  # Qwen-Image weights <-> the own MMDiT
    "rollout": "huabu.cluster.rollout_cli",  # canary rollouts: start, status, ..., report
    "keys": "huabu.cluster.keys_cli",  # API keys: create, list, revoke
}


MODEL_TOOLS = ("train", "quality", "convert")


def global_options() -> argparse.ArgumentParser:
    """--base-url, --api-key and --json: accepted by every command, before or after its name."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--base-url", help="server URL (default: HUABU_BASE_URL, else the local server)")
    parser.add_argument("--api-key", help="API key (default: HUABU_API_KEY, else the local development key)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _as_argv(given: argparse.Namespace) -> list[str]:
    argv = [*(["--base-url", given.base_url] if given.base_url else [])]
    argv += ["--api-key", given.api_key] if given.api_key else []
    return argv + (["--json"] if given.json else [])


def main(argv: list[str] | None = None) -> int:
    import importlib

    from pydantic import ValidationError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in MODEL_TOOLS:  # their own parsers, untouched (quality has its own --json FILE)
        return int(importlib.import_module(PASS_THROUGH[argv[0]]).main(argv[1:]))
    # The global options, wherever they are: the command line that reads them gets them back at the end.
    given, argv = global_options().parse_known_args(argv)
    if argv and argv[0] in PASS_THROUGH:
        return int(importlib.import_module(PASS_THROUGH[argv[0]]).main([*argv[1:], *_as_argv(given)]))
    args = build_parser().parse_args(argv)
    args.base_url, args.api_key = given.base_url, given.api_key
    args.json = bool(given.json or getattr(args, "json", False))
    try:
        return int(args.func(args))
    except (ValidationError, OSError) as exc:  # a bad or missing settings file, an unwritable --out
        return fail(str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
