"""The ``ltcl`` command: Lightning's CLI in subclass mode, driven by YAML files in ``experiments/``.

``ltcl fit|validate|test --config experiments/<dataset>/<method>.yaml`` — the model's
``num_classes`` and ``class_counts`` are linked from the datamodule, so a config names them once.
"""

from __future__ import annotations

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


def main(argv: list[str] | None = None):
    """``ltcl``: see :mod:`ltcl_lightning.commands` (the console script's entry point)."""
    from ltcl_lightning.commands import main as dispatch

    return dispatch(argv)


if __name__ == "__main__":
    main()
