"""Screenshot one task in Label Studio, as an annotator sees it, with headless Chromium.

Not part of the test suite (it needs Debian's ``chromium`` and the ``playwright`` package, which
``make screenshot-deps`` installs); run it against the demo to check what annotators see::

    make screenshot-deps   # once
    make demo              # in another terminal, leaves Label Studio on :8080
    .venv/bin/python -m ml_backend.tools.screenshot --project 1 --out task.png
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--email", default="admin@example.com")
    ap.add_argument("--password", default="admin12345")
    ap.add_argument("--project", type=int, required=True)
    ap.add_argument("--task", type=int, help="task id (default: the project's first task)")
    ap.add_argument("--view", help="instead of a task, screenshot the Data Manager tab with this title")
    ap.add_argument("--page", help="instead of a task, screenshot this page of the project, e.g. settings/model")
    ap.add_argument("--out", default="task.png")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args(argv)

    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=args.chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{args.url}/user/login/")
        page.fill("input[name=email]", args.email)
        page.fill("input[name=password]", args.password)
        page.click("button[type=submit], input[type=submit]")
        page.wait_for_load_state("networkidle")
        if args.page or args.view:  # a page of the project, or a Data Manager tab
            if args.page:
                where, what = f"{args.project}/{args.page.lstrip('/')}", f"page {args.page}"
            else:
                views = page.request.get(f"{args.url}/api/dm/views?project={args.project}").json()
                view = next(v for v in views if v["data"].get("title") == args.view)
                where, what = f"{args.project}/data?tab={view['id']}", f"tab {args.view!r}"
            page.goto(f"{args.url}/projects/{where}")
            page.wait_for_timeout(5000)
            page.screenshot(path=args.out)
            browser.close()
            print(f"wrote {args.out} (project {args.project}, {what})")
            return 0
        task = args.task
        if task is None:
            resp = page.request.get(f"{args.url}/api/tasks?project={args.project}&page_size=1")
            task = resp.json()["tasks"][0]["id"]
        page.goto(f"{args.url}/projects/{args.project}/data?task={task}")
        page.wait_for_selector("canvas", timeout=60_000)
        page.wait_for_timeout(4000)  # let the image and the regions render
        page.screenshot(path=args.out)
        browser.close()
    print(f"wrote {args.out} (project {args.project}, task {task})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
