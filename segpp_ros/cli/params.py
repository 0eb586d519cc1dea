"""segpp-params: the node's parameters as a params file (config/segpp.yaml) or a table.

    segpp-params --yaml > config/segpp.yaml     # every parameter with its default
    segpp-params --markdown                     # the table in docs/parameters.md
"""
from __future__ import annotations

import argparse
import sys

from ..ros.params import render_markdown, render_yaml


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="segpp-params", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--yaml", action="store_true", help="params file with every default (default)")
    group.add_argument("--markdown", action="store_true", help="Markdown table of every parameter")
    args = p.parse_args(argv)
    sys.stdout.write(render_markdown() + "\n" if args.markdown else render_yaml())
    return 0


if __name__ == "__main__":
    sys.exit(main())
