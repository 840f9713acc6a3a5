"""BalancedCL: the step computes alpha * LA-CE + beta * L_BalSCL with prototypes built from the
classifier weights, the prototypes carry gradient into the classifier, and every config runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ltcl_lightning.losses.balanced import balanced_contrastive_loss
from ltcl_lightning.losses.classification import logit_adjusted_cross_entropy
from ltcl_lightning.methods.balanced_cl import BalancedCL

REPO = Path(__file__).resolve().parents[2]
COUNTS = [9, 5, 3, 2, 1]


def _model(**kw):
    torch.manual_seed(0)
    return BalancedCL(len(COUNTS), backbone="tiny", class_counts=COUNTS, proj_hidden_dim=16, proj_dim=8, **kw)


def _batch(b=6, size=8):
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(b, 3, size, size, generator=g) for _ in range(3)]
    target = torch.tensor([0, 0, 0, 1, 2, 4][:b])
    return torch.arange(b), views, target


@pytest.mark.parametrize("cosine", [False, True])
def test_step_is_alpha_ce_plus_beta_balanced_loss(cosine):
    model = _model(cosine_classifier=cosine, ce_weight=0.7, contrastive_weight=0.35, temperature=0.1)
    model.train()
    index, views, target = _batch()
    out = model.training_loss(index, views, target)

    # independent recomputation from the modules (same BatchNorm batch statistics: train mode)
    b = target.shape[0]
    h = model.backbone(torch.cat(views))
    logits = model.classifier(h[:b])
    ce = logit_adjusted_cross_entropy(logits, target, model.class_prior, 1.0)
    z = F.normalize(model.projector(h), dim=1)
    # class vectors w_k: rows of nn.Linear.weight (C, d); columns of NormedLinear.weight (d, C)
    w = model.classifier.weight.T if cosine else model.classifier.weight
    assert w.shape == (len(COUNTS), model.feat_dim)
    protos = F.normalize(model.head_fc(w), dim=1)
    con = balanced_contrastive_loss([z[b : 2 * b], z[2 * b :]], target, protos, 0.1)
    torch.testing.assert_close(out["contrastive_loss"], con.detach())
    torch.testing.assert_close(out["ce_loss"], ce.detach())
    torch.testing.assert_close(out["loss"], 0.7 * ce + 0.35 * con)


@pytest.mark.parametrize("cosine", [False, True])
def test_prototypes_send_gradient_into_the_classifier_weights(cosine):
    # with alpha = 0 the classifier is reached only through the prototypes c_k = normalize(head_fc(w_k))
    model = _model(cosine_classifier=cosine, ce_weight=0.0, contrastive_weight=1.0)
    model.train()
    out = model.training_loss(*_batch())
    out["loss"].backward()
    gw = model.classifier.weight.grad
    assert gw is not None and gw.abs().sum() > 0
    # every class's weight vector gets gradient, including class 3, absent from the batch
    per_class = (gw.T if cosine else gw).abs().sum(1)
    assert (per_class > 0).all()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.head_fc.parameters() if p.ndim > 1)
    # and the prototypes are what the loss uses: detaching them removes the classifier's gradient
    model.zero_grad()
    protos = model.prototypes().detach()
    model.prototypes = lambda: protos  # type: ignore[method-assign]
    model.training_loss(*_batch())["loss"].backward()
    assert model.classifier.weight.grad is None or model.classifier.weight.grad.abs().sum() == 0


def test_one_optimiser_step_trains(tmp_path):
    import lightning.pytorch as pl

    from ltcl_lightning.data.digits import DigitsLTDataModule

    dm = DigitsLTDataModule(batch_size=32, train_views=["digits", "digits", "digits"])
    model = BalancedCL(10, backbone="tiny", proj_hidden_dim=16, proj_dim=8)
    before = model.classifier.weight.detach().clone()
    head_before = model.head_fc[0].weight.detach().clone()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        fast_dev_run=True,
    )
    trainer.fit(model, dm)
    assert not torch.equal(model.classifier.weight, before)
    assert not torch.equal(model.head_fc[0].weight, head_before)
    assert torch.isfinite(trainer.callback_metrics["train/contrastive_loss"])


@pytest.mark.parametrize("gather", [False, True])
def test_gather_option_reaches_the_loss(gather, monkeypatch):
    import ltcl_lightning.methods.balanced_cl as module

    seen = {}
    real = module.balanced_contrastive_loss

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "balanced_contrastive_loss", spy)
    model = _model(gather=gather, temperature=0.2)
    model.training_loss(*_batch())
    assert seen["gather"] is gather and seen["temperature"] == 0.2


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="num_classes >= 2"):
        BalancedCL(1, backbone="tiny")
    with pytest.raises(ValueError, match="temperature must be > 0, got -1"):
        BalancedCL(3, backbone="tiny", temperature=-1)


# ----- the recipe, one step on generated data (the run tests/test_cli.py checks too) -------------
def test_cifar_config_runs_one_step(run_recipe):
    cli = run_recipe("experiments/cifar100_lt/balanced_cl.yaml")
    assert cli.trainer.state.finished
    assert (
        isinstance(cli.model, BalancedCL) and cli.model.class_counts.sum() == 10847 - 10
    )  # the head class gives up its val_per_class hold-out
    assert (cli.model.temperature, cli.model.ce_weight, cli.model.contrastive_weight) == (0.1, 1.0, 0.3)
    assert torch.isfinite(cli.trainer.callback_metrics["train/contrastive_loss"])


# ImageNet-LT / iNat configs: tests/test_cli.py::test_config_runs_one_step runs every YAML one step
# on the imagenet_lt_folder / inat_folder fixtures (tiny backbone, batch 8, fast_dev_run).
