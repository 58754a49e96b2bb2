"""``clip-adapter demo``: the built-in default, offline, in about a minute.

Writes a toy task in a shifted domain (colours at night) as image files, encodes it
with the shipped toy CLIP, runs zero-shot and CLIP-Adapter (visual, text,
both) at 1/4/16 shots over 3 seeds with α chosen on validation, and prints the
table; the plot, the results and a trained artifact are written to --out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..apps.demo import DemoConfig, run_demo
from ..core.outputs import claim_output_dir


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the built-in offline demo", description=__doc__)
    defaults = DemoConfig()
    p.add_argument("--out", default=defaults.out, help="output folder (default: %(default)s)")
    p.add_argument("--task", default=defaults.task, help="toy task (default: %(default)s)")
    p.add_argument("--domain", default=defaults.domain, help="toy domain (default: %(default)s)")
    p.set_defaults(func=main)


def command_name() -> str:
    """How to call this tool from the user's own shell.

    ``scripts/demo.sh`` runs us inside ``.venv`` while the user's shell has not
    activated it, so a bare ``clip-adapter`` would be "command not found" there:
    name the venv's script (relative to the current folder when that is shorter).
    """
    script = Path(sys.prefix) / "bin" / "clip-adapter"
    if sys.prefix == sys.base_prefix or not script.is_file():
        return "clip-adapter"  # installed into the Python the user runs: on their PATH
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def main(args: argparse.Namespace) -> int:
    claim_output_dir(args.out, "demo", resume=True)
    result = run_demo(
        DemoConfig(task=args.task, domain=args.domain, out=args.out), log=lambda line: print(line, file=sys.stderr)
    )
    sys.stdout.write(result["table"].read_text())
    tool = command_name()
    print(
        f"\nplot: {result['plot']}\ntable: {result['table']}\nartifact: {result['artifact']} "
        f"(try: {tool} predict {result['artifact']} {result['data']}/images --top-k 3)"
    )
    print(
        f"Same on your own photos and a real CLIP: {tool} train --data ./photos --backbone ViT-B-32 "
        "--pretrained openai --shots 16 --out runs/photos   (ImageFolder: photos/<class>/<image>)"
    )
    if tool != "clip-adapter":
        print("(or first `. .venv/bin/activate`, then call clip-adapter by name)")
    return 0
