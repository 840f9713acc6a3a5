"""The ``ltcl`` command: Lightning's CLI in subclass mode, driven by YAML files in ``experiments/``.

``ltcl fit|validate|test --config experiments/<dataset>/<method>.yaml`` — the model's
``num_classes`` and ``class_counts`` are linked from the datamodule, so a config names them once.

What the CLI adds to Lightning's, so that long runs cannot go silently wrong:

* ``--ckpt_path`` is read with clear errors (empty, truncated or foreign files) and refused when
  it was written by another method or datamodule than the config's (Lightning's CLI would
  otherwise swap the config's model class for the checkpoint's);
* an explicit ``num_classes`` / ``class_counts`` that disagrees with the data is refused (the
  links would drop it);
* errors raised by the datamodule while the links are computed reach the user as they are
  (not wrapped in jsonargparse's "Call to compute_fn of link ... failed");
* every trainer stops at the first non-finite loss and saves a resumable checkpoint on SIGTERM
  (``callbacks/safety.py``; listing either callback in the config replaces the default);
* checkpoints are written atomically (:class:`~ltcl_lightning.utils.checkpoint.AtomicCheckpointIO`);
* the link functions are module-level, so the parser pickles (``--trainer.strategy=ddp_spawn``);
* ``config.yaml`` goes into the run's own folder and the effective config into every logger,
  W&B runs get a name, group and tags (``callbacks/metadata.py``).
"""

from __future__ import annotations

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.cli import LightningCLI

from ltcl_lightning.callbacks.metadata import RunConfig, log_test_into_training_run, wandb_run_defaults
from ltcl_lightning.data.base import LongTailDataModule
from ltcl_lightning.methods.base import LongTailMethod
from ltcl_lightning.utils.checkpoint import AtomicCheckpointIO, check_checkpoint_classes, load_checkpoint

_LINKED = ("num_classes", "class_counts")
_LINK_FAILED = "Call to compute_fn of link"


def data_num_classes(dm) -> int:
    """Link source of ``model.init_args.num_classes`` (module-level: the parser must pickle)."""
    return dm.num_classes


def data_class_counts(dm) -> list[int]:
    """Link source of ``model.init_args.class_counts`` (module-level: the parser must pickle)."""
    return dm.class_counts


def _get(cfg, dotted: str):
    for key in dotted.split("."):
        if cfg is None:
            return None
        cfg = cfg.get(key) if hasattr(cfg, "get") else None
    return cfg


class LTCLCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data", "model.init_args.num_classes", compute_fn=data_num_classes, apply_on="instantiate")
        parser.link_arguments("data", "model.init_args.class_counts", compute_fn=data_class_counts, apply_on="instantiate")

    def _section(self):
        sub = self.config.get("subcommand")
        return self.config[sub] if sub else self.config

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        section = self._section()
        # what the user wrote for the linked arguments, before the checkpoint's hyper-parameters
        # are merged in and before the links overwrite them
        self._explicit = {k: _get(section, f"model.init_args.{k}") for k in _LINKED}
        ckpt_path = section.get("ckpt_path") if hasattr(section, "get") else None
        if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry"):
            ckpt = load_checkpoint(ckpt_path, map_location="cpu", weights_only=True)
            check_checkpoint_classes(
                ckpt, str(ckpt_path), model_class=_get(section, "model.class_path"), data_class=_get(section, "data.class_path")
            )

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as err:
            # the datamodule's own error (missing archive, bad split file, ...) comes first
            if str(err).startswith(_LINK_FAILED) and err.__cause__ is not None:
                raise err.__cause__ from None
            raise

    def after_instantiate_classes(self) -> None:
        dm = self.datamodule
        explicit = getattr(self, "_explicit", {})
        if dm is None:
            return
        given_c, given_counts = explicit.get("num_classes"), explicit.get("class_counts")
        if given_c is not None and int(given_c) != dm.num_classes:
            raise ValueError(
                f"model num_classes={given_c} was given, but {type(dm).__name__} has {dm.num_classes} classes. "
                "The CLI links num_classes from the data: drop --model.init_args.num_classes (or fix the data)."
            )
        if given_counts is not None and list(map(int, given_counts)) != list(dm.class_counts):
            raise ValueError(
                f"model class_counts were given ({len(given_counts)} classes, {sum(map(int, given_counts))} images), but "
                f"{type(dm).__name__}'s training set has {dm.num_classes} classes and {sum(dm.class_counts)} images. "
                "The CLI links class_counts from the data: drop --model.init_args.class_counts (or fix the data)."
            )

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        # exactly Lightning's default IO (not a user's plugin): make local saves atomic
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def before_instantiate_classes(self) -> None:
        # W&B runs get a name, a group (the method) and tags (dataset, imbalance) unless given
        section = self.config[self.subcommand] if self.subcommand else self.config
        wandb_run_defaults(section)
        if self.subcommand == "test":  # a checkpoint's test is logged into its training run's folder
            log_test_into_training_run(section)


def cli_main(args: list[str] | None = None, run: bool = True) -> LTCLCLI:
    return LTCLCLI(
        LongTailMethod,
        LongTailDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=RunConfig,  # config.yaml in the run's folder, the config in every logger
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )


def main(argv: list[str] | None = None) -> None:
    """``ltcl`` (older installs' console script): :func:`ltcl_lightning.commands.main`, whose
    return value is dropped (a console script's return value becomes its exit status)."""
    from ltcl_lightning.commands import main as dispatch

    dispatch(argv)


if __name__ == "__main__":
    main()
