"""The ``ltcl`` entry point: dispatches to Lightning's CLI (fit / validate / test / predict) or to
the library's own commands, importing only what the command needs (``ltcl report`` and
``ltcl --help`` start without importing Lightning)."""

from __future__ import annotations

import importlib
import sys

#: sub-commands beside Lightning's: name -> (module with main(argv), one-line description)
EXTRA_COMMANDS = {
    "probe": ("ltcl_lightning.probe", "linear probes + kNN on frozen features of a checkpoint, on any datamodule"),
    "report": ("ltcl_lightning.report", "figures and tables from finished runs' per-class CSVs"),
    "export": ("ltcl_lightning.export", "a checkpoint's backbone as a plain state_dict (torchvision keys) + JSON"),
}
LIGHTNING_COMMANDS = {
    "fit": "train a method (--config experiments/<dataset>/<method>.yaml)",
    "validate": "evaluate on the validation set",
    "test": "evaluate on the test set (--ckpt_path)",
    "predict": "Lightning's predict loop",
}


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("ltcl-lightning")
    except PackageNotFoundError:  # run from a source tree that is not installed
        from ltcl_lightning import __version__

        return __version__


def usage() -> str:
    names = [*LIGHTNING_COMMANDS, *EXTRA_COMMANDS]
    lines = [
        f"usage: ltcl [-h] [--version] {{{','.join(names)}}} ...",
        "",
        "Long-tailed contrastive learning with PyTorch Lightning.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<10} {text}" for name, text in LIGHTNING_COMMANDS.items()]
    lines += [f"  {name:<10} {text}" for name, (_, text) in EXTRA_COMMANDS.items()]
    lines += ["", "`ltcl COMMAND --help` shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None):
    """Run one ``ltcl`` command; returns what the library's own commands return (e.g. the
    probe's numbers), the LightningCLI object for Lightning's."""
    from_sys = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return None
    if argv[0] == "--version":
        print(f"ltcl {version()}")
        return None
    if argv[0] in EXTRA_COMMANDS:
        return importlib.import_module(EXTRA_COMMANDS[argv[0]][0]).main(argv[1:])
    from ltcl_lightning.cli import cli_main

    # from the console script LightningCLI reads sys.argv itself: passing it as `args` as well
    # triggers its "args parameter ... not recommended" warning on every command
    return cli_main(None if from_sys else argv)


def entry() -> None:
    """The console script: runs :func:`main` on ``sys.argv`` (a return value would become the
    exit status, so none is returned)."""
    main()
