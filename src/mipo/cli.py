"""The ``mipo`` command: a table from command name to the module that implements it.

Each command module defines ``configure_parser(parser)`` and ``main(args) -> int | None``; it is imported
only when its command runs, so ``mipo --help`` answers without loading torch.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys

from mipo import __version__
from mipo.core.errors import MipoError

# What the machine, not mipo, refuses: a full disk, a read-only or missing place, no permission.
ENVIRONMENT_ERRORS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.ENOENT,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
}

# name -> (module, one line of help)
COMMANDS: dict[str, tuple[str, str]] = {
    "pairs": (
        "mipo.pairs.build",
        "MIPO preference pairs (chosen: response to x; rejected: response to x') from prompts",
    ),
    "sample": ("mipo.sampling.replies", "sample the model's responses to a prompt set, one row per prompt"),
    "train": (
        "mipo.training.command",
        "DPO (or SFT) on a pairs file with TRL: LoRA or full, one CPU to many GPUs",
    ),
    "eval": (
        "mipo.evaluation.command",
        "score a model (and a baseline, paired) on prefs, gsm8k, arc, mmlu, pmi or your file",
    ),
    "pmi": (
        "mipo.evaluation.pmi_command",
        "measure the objective: pointwise mutual information of responses with their prompts",
    ),
    "run": (
        "mipo.run.pipeline",
        "all stages from a YAML config (prompts, pairs, train, eval, report), resumable",
    ),
    "demo": (
        "mipo.demo",
        "the whole pipeline on the embedded SmolLM2-135M, offline, on the CPU, with a report",
    ),
    "models": ("mipo.engine.model_list", "list the built-in models and whether each is installed and cached"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mipo",
        description="Mutual Information Preference Optimization: improve an instruct LLM with no new data, "
        "labels, judge or verifier.",
        epilog="Run 'mipo COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"mipo {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log debug messages, and the libraries' info too"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


# The libraries that log to the console. By default it holds mipo's lines and progress bars, and only the
# libraries' warnings and errors; --verbose adds their info (and mipo's debug lines).
LIBRARY_LOGGERS = (
    "transformers", "datasets", "huggingface_hub", "peft", "trl", "accelerate",
    "httpx", "urllib3", "filelock",
)  # fmt: skip
# The Hugging Face libraries set their loggers' level from these variables at import (unset: WARNING).
LIBRARY_VERBOSITY = ("TRANSFORMERS_VERBOSITY", "DATASETS_VERBOSITY", "HF_HUB_VERBOSITY")


def configure_logging(*, verbose: bool) -> None:
    """mipo's lines on stderr at INFO (DEBUG with --verbose); the libraries' at WARNING (INFO with --verbose).

    Only the libraries' top loggers are set. transformers 5 runs its tensor-parallel plan check (and prints
    "The following layers were not sharded: ..." at every load, though nothing is sharded) when the level of
    the ``transformers.modeling_utils`` logger itself is WARNING or above
    (``PreTrainedModel._load_pretrained_model``), so that logger is left unset: it takes the level of
    ``transformers``.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if verbose:
        for variable in LIBRARY_VERBOSITY:  # a library imported later; a user's own setting stays
            os.environ.setdefault(variable, "info")
    # A library imported already (mipo called in-process), or one that reads no variable:
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    top, rest = parser.parse_known_args(argv)
    if top.command is None:
        parser.print_help()
        return 0 if not argv else 2
    module_name, help_text = COMMANDS[top.command]
    configure_logging(verbose=top.verbose)
    try:
        module = importlib.import_module(module_name)
        sub = argparse.ArgumentParser(prog=f"mipo {top.command}", description=help_text)
        module.configure_parser(sub)
        args = sub.parse_args(rest)
        return int(module.main(args) or 0)
    except MipoError as e:
        print(f"mipo {top.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `mipo run --plan cfg | head`: the reader left; no traceback, no second error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:
        if e.errno not in ENVIRONMENT_ERRORS:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"mipo {top.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"mipo {top.command}: interrupted; partial outputs are kept (rerun with --resume)",
            file=sys.stderr,
        )
        return 130


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
