"""The argument parser every benchmark module's `main` starts from: its docstring as its help."""

from __future__ import annotations

import argparse


def documented_parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """`python -m <module>`'s parser: the docstring's first paragraph describes it, the rest (usage
    examples, kept as written) follows the options."""
    if doc is None:
        raise RuntimeError(f"{module} has no docstring (python -OO strips them)")
    summary, _, details = doc.partition("\n\n")
    return argparse.ArgumentParser(
        prog=f"python -m {module}",
        description=summary,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=details,
    )
