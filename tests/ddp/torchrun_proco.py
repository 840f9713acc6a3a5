"""Run by tests/ddp/test_torchrun_multinode.py under torchrun (one process per node) and directly
(the single-process reference): 2 ProCo steps on Digits-LT, then save the estimator and weights."""

import os
import sys

import lightning.pytorch as pl
import torch

from ltcl_lightning.data.digits import DigitsLTDataModule
from ltcl_lightning.methods.proco import ProCo

out, nodes, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 2
pl.seed_everything(0)
model = ProCo(10, backbone="tiny", proj_dim=8, proj_hidden_dim=16)
# batch norm normalises per rank (SyncBatchNorm needs a GPU): without it the global batch is the same computation
for module in list(model.modules()):
    for child_name, child in list(module.named_children()):
        if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
            setattr(module, child_name, torch.nn.Identity())
dm = DigitsLTDataModule(batch_size=batch, train_views=["eval"] * 3)
# 2 processes on one node (LTCL_NODES_AS_DEVICES=1) or one process on each of `nodes` nodes
devices, num_nodes = (nodes, 1) if os.environ.get("LTCL_NODES_AS_DEVICES") else (1, nodes)
trainer = pl.Trainer(
    max_steps=steps,
    accelerator="cpu",
    devices=devices,
    num_nodes=num_nodes,
    strategy="ddp" if nodes > 1 else "auto",
    limit_val_batches=0,
    logger=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    enable_checkpointing=False,
    num_sanity_val_steps=0,
    default_root_dir=out,
)
trainer.fit(model, datamodule=dm)
trainer.save_checkpoint(f"{out}/final.ckpt")
torch.save({"rank": trainer.global_rank, "estimator": model.estimator.state_dict()}, f"{out}/rank{trainer.global_rank}.pt")
# the process ends here, without interpreter finalisation: on the loaded CI box a rank that had
# finished sometimes died with SIGABRT while gloo's threads were torn down (see ddp_helpers.spawn)
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
