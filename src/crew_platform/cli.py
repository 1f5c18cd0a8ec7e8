"""`crew-platform serve | worker | migrate | api-key`."""

from __future__ import annotations

import argparse
import gc
import ipaddress
import logging
import sys

from pydantic import ValidationError

from crew_platform.settings import Settings, get_settings


def migrate() -> None:
    from crew_platform.migrations.runner import upgrade_to_head

    upgrade_to_head(get_settings().database_url)


GC_GEN0_THRESHOLD = 10_000
"""Python's default (700) runs a young collection every 700 net container allocations, and every
100th of them a full one once the survivors grew by a quarter. With many WebSocket clients
connected a full collection scans everything they hold and stalls every event in flight; at
10,000 full collections become rare, and a young one stays short (the figures are in the
benchmark findings of 2026-11-29, scenario 4)."""


def _load_app() -> None:
    """Import the app (most of start-up) with the cyclic GC paused, then freeze what it built.

    The import allocates a great many long-lived objects and hardly any garbage, so the
    collections it would trigger cost start-up time and find next to nothing; frozen, these
    objects are not scanned by later collections either. uvicorn then finds the module already
    imported. The server then collects less often (`GC_GEN0_THRESHOLD`).
    """
    gc.disable()
    try:
        import crew_platform.app  # noqa: F401
    finally:
        gc.enable()
    _quiet_gc()


def _quiet_gc() -> None:
    """Freeze what start-up built and collect less often (`GC_GEN0_THRESHOLD`)."""
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])


def configure_logging(log_level: str) -> None:
    """One line per event worth reading: the HTTP clients' line per request (one per model
    call) only at debug level. uvicorn's access log is HTTP_ACCESS_LOG (`serve`)."""
    logging.basicConfig(level=log_level.upper())
    if log_level.lower() != "debug":
        for name in ("httpx", "httpx2", "httpcore", "openai", "taskiq", "aio_pika", "aiormq"):
            logging.getLogger(name).setLevel(logging.WARNING)


def is_loopback(host: str) -> bool:
    if host.strip().lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def unauthenticated_refusal(settings: Settings, host: str, allow: bool) -> str | None:
    """Why `serve` must not bind `host`, or None. One line."""
    if settings.auth_mode != "none" or allow or is_loopback(host):
        return None
    return (
        f"crew-platform: refusing to serve on {host} with AUTH_MODE=none: anyone who reaches it "
        "could read every prompt, run up the model bill and delete everything; set AUTH_MODE="
        "api_key or jwt, bind 127.0.0.1, or pass --allow-unauthenticated"
    )


def executor_refusal(settings: Settings, *, worker: bool = False) -> str | None:
    """Why `serve` (or `worker`) must not start with these EXECUTOR settings (one line), or
    None."""
    from crew_platform.startup import executor_problem

    problem = executor_problem(settings, worker=worker)
    return None if problem is None else f"crew-platform: refusing to start: {problem}"


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def serve(host: str | None, port: int | None, reload: bool) -> None:
    import uvicorn

    from crew_platform.edge.header_timeout import HeaderTimeoutProtocol

    settings = get_settings()
    if not reload:  # with --reload the app is imported by the reloader's child process
        _load_app()
    uvicorn.run(
        "crew_platform.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        reload=reload,
        log_level=settings.log_level,
        access_log=settings.http_access_log,
        http=HeaderTimeoutProtocol,
        ws_per_message_deflate=settings.ws_compression,
        timeout_keep_alive=settings.http_keep_alive_seconds,
        # Only TRUSTED_PROXIES may set the client address; uvicorn would trust 127.0.0.1.
        proxy_headers=False,
        forwarded_allow_ips="",
    )


def worker(settings: Settings, concurrency: int | None) -> int:
    """Run a queue worker until SIGTERM or SIGINT; 0 when it stopped so, 1 when it could not
    start (one line naming the setting)."""
    import asyncio

    from crew_platform.startup import StartupFailed
    from crew_platform.taskqueue.worker import run

    _quiet_gc()
    try:
        asyncio.run(run(settings, concurrency or settings.execution_max_concurrency))
    except StartupFailed as exc:
        print(f"crew-platform worker: {exc}", file=sys.stderr)
        return 1
    return 0


def configuration_problems(error: ValidationError) -> list[str]:
    """One line per bad environment variable, named as the user set it (not pydantic's field
    path and traceback)."""
    lines = []
    for problem in error.errors():
        variable = "_".join(str(part) for part in problem["loc"]).upper() or "configuration"
        message = str(problem["msg"]).removeprefix("Value error, ")
        lines.append(message if message.startswith(variable) else f"{variable}: {message}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crew-platform")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_cmd = sub.add_parser("serve", help="serve the API (HOST/PORT from the environment)")
    serve_cmd.add_argument("--host")
    serve_cmd.add_argument("--port", type=int)
    serve_cmd.add_argument("--reload", action="store_true")
    serve_cmd.add_argument("--migrate", action="store_true", help="migrate before serving")
    serve_cmd.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="serve a non-loopback address although AUTH_MODE=none",
    )
    worker_cmd = sub.add_parser(
        "worker", help="run the executions API processes enqueue (EXECUTOR=queue, BROKER_URL)"
    )
    worker_cmd.add_argument(
        "--concurrency",
        type=_positive,
        help="executions run at once (default: EXECUTION_MAX_CONCURRENCY)",
    )
    sub.add_parser("migrate", help="apply database migrations up to head")
    from crew_platform.auth.keys_cli import add_parser as add_api_key_parser

    add_api_key_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as exc:
        print("crew-platform: invalid configuration:", file=sys.stderr)
        for line in configuration_problems(exc):
            print(f"  {line}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if args.command == "migrate":
        migrate()
    elif args.command == "api-key":
        from crew_platform.auth.keys_cli import run as run_api_key

        return run_api_key(args, settings)
    elif args.command == "worker":
        if (problem := executor_refusal(settings, worker=True)) is not None:
            print(problem, file=sys.stderr)
            return 2
        return worker(settings, args.concurrency)
    elif args.command == "serve":
        refusal = unauthenticated_refusal(
            settings, args.host or settings.host, args.allow_unauthenticated
        ) or executor_refusal(settings)
        if refusal is not None:
            print(refusal, file=sys.stderr)
            return 2
        if args.migrate:
            migrate()
        serve(args.host, args.port, args.reload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
