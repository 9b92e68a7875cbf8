"""Command line: ``python -m ml_backend serve | demo``."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ml_backend.settings import Settings, SettingsError


def _logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve(host: str, port: int, threads: int = 8) -> None:
    """Run the backend with gunicorn (one worker, so the model is loaded once)."""
    from gunicorn.app.base import BaseApplication

    from ml_backend.server import create_app

    settings = Settings.from_env()
    _logging(settings.log_level)

    class _App(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", 1)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", threads)
            self.cfg.set("timeout", 300)
            self.cfg.set("accesslog", "-")
            self.cfg.set("loglevel", settings.log_level.lower())
            if "control_socket_disable" in self.cfg.settings:  # gunicorn >= 25.1: one shared socket path otherwise
                self.cfg.set("control_socket_disable", True)

        def load(self):  # noqa: ANN202 - gunicorn's interface; runs in the worker, after the fork
            return create_app(settings)

    _App().run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml_backend", description="Active-learning YOLO backend for Label Studio")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the ML backend HTTP server")
    p_serve.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    p_serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "9090")))
    p_serve.add_argument("--threads", type=int, default=8)
    p_demo = sub.add_parser("demo", help="offline demo: synthetic images, a starter model, a real Label Studio, connected")
    p_demo.add_argument("--dir", default="demo_state", help="where the demo keeps its files")
    p_demo.add_argument("--ls-port", type=int, default=8080)
    p_demo.add_argument("--backend-port", type=int, default=9090)
    p_demo.add_argument("--images", type=int, default=12)
    p_demo.add_argument("--epochs", type=int, default=60, help="starter model training epochs")
    p_demo.add_argument("--no-wait", action="store_true", help="set everything up, print, and stop (no serving)")
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            serve(args.host, args.port, args.threads)
        elif args.command == "demo":
            from ml_backend.demo import run_demo

            _logging("INFO")
            run_demo(args.dir, ls_port=args.ls_port, backend_port=args.backend_port, n_images=args.images, epochs=args.epochs, wait=not args.no_wait)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
