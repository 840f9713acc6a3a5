"""The ``ltcl`` command: Lightning's CLI in subclass mode, driven by YAML files in ``experiments/``.

``ltcl fit|validate|test --config experiments/<dataset>/<method>.yaml`` — the model's
``num_classes`` and ``class_counts`` are linked from the datamodule, so a config names them once.
"""

from __future__ import annotations

import sys

from lightning.pytorch.cli import LightningCLI

from ltcl_lightning.data.base import LongTailDataModule
from ltcl_lightning.methods.base import LongTailMethod


class LTCLCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data", "model.init_args.num_classes", compute_fn=lambda dm: dm.num_classes, apply_on="instantiate")
        parser.link_arguments("data", "model.init_args.class_counts", compute_fn=lambda dm: dm.class_counts, apply_on="instantiate")


def cli_main(args: list[str] | None = None, run: bool = True) -> LTCLCLI:
    return LTCLCLI(
        LongTailMethod,
        LongTailDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )


#: extra sub-commands beside Lightning's fit / validate / test / predict: name -> module with main(argv)
EXTRA_COMMANDS = {
    "probe": "ltcl_lightning.probe",  # linear-probe evaluation protocol (full / 100-shot / 50-shot)
    "report": "ltcl_lightning.report",  # PNG figures from a finished run's per-class CSV
}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in EXTRA_COMMANDS:
        import importlib

        importlib.import_module(EXTRA_COMMANDS[argv[0]]).main(argv[1:])
        return
    cli_main(argv)


if __name__ == "__main__":
    main()
