"""``nar index hf`` (registered on import by :mod:`nar_plugin.cli`).

Mounted in the ``nar index`` group of :mod:`nar_plugin.cli.index` (which also serves
``nar serve hf-webhook`` through :func:`nar_plugin.integrations.hf.make_webhook_app`).
"""

from __future__ import annotations

import argparse

from nar_plugin.cli.main import console, emit
from nar_plugin.cli.index import register_index_command


# ------------------------------------------------------------------ nar index hf
def _index_hf_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("repos", nargs="*", metavar="REPO", help="repo ids, optionally with @revision")
    p.add_argument("--from-file", metavar="F", help="file with one repo id per line (# comments allowed)")
    p.add_argument("--workers", type=int, default=4, help="parallel downloads (default 4)")
    p.add_argument("--token", help="Hub token (default: the logged-in token / HF_TOKEN)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _index_hf(args: argparse.Namespace) -> int:
    from nar_plugin.integrations.hf import _specs_from_file, index_repos

    specs = list(args.repos) + (_specs_from_file(args.from_file) if args.from_file else [])
    if not specs:
        raise ValueError("give at least one REPO or --from-file")
    summary = index_repos(specs, workers=args.workers, progress=not args.json, token=args.token,
                          index=getattr(args, "index", None))

    def human() -> None:
        from rich.table import Table

        c = console()
        c.print(f"indexed [bold]{len(summary.indexed)}[/bold] of {len(specs)} repos in {summary.seconds:.1f} s "
                f"({summary.repos_per_minute:.1f}/min)")
        if summary.failed:
            t = Table("repo", "error", "message", title="Failures")
            for f in summary.failed:
                t.add_row(f.repo, f.error, f.message)
            c.print(t)

    emit(args, summary.to_dict(), human)
    return 0 if summary.ok else 1


register_index_command("hf", "index Hugging Face Hub model repos by id (config.json only, no weights)",
                       _index_hf_args, _index_hf)
