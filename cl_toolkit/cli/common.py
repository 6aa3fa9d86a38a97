"""The Typer apps every command module registers on, and the output helpers."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer

app = typer.Typer(
    name="cltk",
    help="Contrastive-learning toolkit: learn embeddings from pairs of views without labels, then "
         "embed, index, match and evaluate.\n\nExample:\n\n"
         "  cltk pretrain --method byol --data fashion-mnist:train --out runs/byol --minutes 10\n\n"
         "  cltk eval knn --model runs/byol --bank fashion-mnist:train --query fashion-mnist:test",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]})
eval_app = typer.Typer(help="Evaluate embeddings or models; JSON on stdout.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


# options several commands share, declared once
Device = Annotated[str, typer.Option(help="auto | cpu | cuda.")]
Threads = Annotated[Optional[int], typer.Option(min=1, help="CPU threads (default: the cores other processes "
                                                "leave free).")]
Quiet = Annotated[bool, typer.Option(help="No progress bar.")]


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    sys.stdout.flush()
