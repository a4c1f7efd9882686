"""``ClassificationLitModel``: the LightningModule that trains any classification config.

It wraps the model that an experiment config builds and adds what training needs: the losses,
top-1/top-5 accuracy (``train_acc1``, ``eval_acc1``, ... as metric attributes, logged as
``train_acc1``, ``val_acc1``, ``test_acc1``), the optimizer and LR schedule from the config's
factories, an optional exponential moving average of the weights (``ema``), adaptive gradient
clipping (``use_agc``) and a guard that stops training when the loss stops being finite.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
import torchmetrics
from lightning.pytorch.utilities import rank_zero_info

from bcos.data.transforms import ends_with_add_inverse
from bcos.errors import BcosError, ConfigError
from bcos.experiments.utils import Experiment, sanitize_config
from bcos.experiments.utils.run_folder import BASE_EXPERIMENTS_DIRECTORY
from bcos.training.agc import adaptive_clip_grad_
from bcos.training.ema import ExponentialMovingAverage, adjusted_ema_decay

__all__ = ["ClassificationLitModel", "NonFiniteLossError", "plain_data"]

DEFAULT_EMA_STEPS = 32


class NonFiniteLossError(BcosError, RuntimeError):
    """Training diverged: the loss (or the weights) became NaN or infinite."""


def plain_data(value: Any) -> Any:
    """``value`` as exact built-in types only (dict, list, tuple, str, int, float, bool, None).

    ``torch.load(weights_only=True)`` refuses subclasses such as numpy scalars or enums, so every
    hyper-parameter stored in a checkpoint goes through this first.
    """
    if isinstance(value, Mapping):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, tuple) and type(value) is tuple:
        return tuple(plain_data(v) for v in value)
    if isinstance(value, (list, tuple)):  # lists and tuple subclasses such as named tuples
        return [plain_data(v) for v in value]
    if value is None or isinstance(value, bool):
        return None if value is None else bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return repr(value)


def _accuracy(num_classes: int, top_k: int) -> torchmetrics.Metric:
    return torchmetrics.Accuracy(
        task="multiclass", num_classes=num_classes, top_k=min(top_k, num_classes), compute_on_cpu=True
    )


def _hard_labels(labels: torch.Tensor) -> torch.Tensor:
    # soft or multi-hot targets (mixup, cutmix, gridified batches) count as their strongest class
    return labels.argmax(dim=1) if labels.ndim == 2 else labels


class ClassificationLitModel(pl.LightningModule):
    """Trains the model of ``<dataset>/<base_network>/<experiment_name>``.

    Args:
        dataset, base_network, experiment_name: the experiment (see :class:`Experiment`).
        base_directory: where run folders live.
        channels_last: feed images in channels-last memory format (use with a channels-last model).
        track_grad_norm: log the total gradient 2-norm (``gradients/total_norm``) every step.
    """

    def __init__(
        self,
        dataset: str,
        base_network: str,
        experiment_name: str,
        base_directory: str = BASE_EXPERIMENTS_DIRECTORY,
        channels_last: bool = False,
        track_grad_norm: bool = False,
    ) -> None:
        super().__init__()
        self.experiment = Experiment(dataset, base_network, experiment_name, base_directory=base_directory)
        config = self.experiment.config
        for key in ("data", "model", "criterion", "test_criterion", "optimizer", "lr_scheduler"):
            if key not in config:
                raise ConfigError(
                    f"config {dataset}/{base_network}/{experiment_name} lacks the key {key!r}; "
                    "see docs/architecture.md for the config schema"
                )
        # the names (for load_from_checkpoint) and the config as plain data (for loggers)
        self.save_hyperparameters(
            plain_data(
                {
                    "dataset": dataset,
                    "base_network": base_network,
                    "experiment_name": experiment_name,
                    "base_directory": str(base_directory),
                    **sanitize_config(config),
                }
            )
        )

        self.experiment_name = experiment_name
        self.config = config
        self.model = self.experiment.get_model()
        self.is_bcos = bool(config["model"].get("is_bcos", False))
        data = config["data"]
        # every image this module feeds the model while fitting is [x, 1 - x]: the stem may read x alone
        self.inputs_inverse_encoded = self.is_bcos and all(
            ends_with_add_inverse(data.get(key)) for key in ("train_transform", "test_transform")
        )
        self.criterion = config["criterion"]
        self.test_criterion = config["test_criterion"]
        self.channels_last = channels_last
        self.track_grad_norm = track_grad_norm

        num_classes = int(config["data"]["num_classes"])
        self.train_acc1 = _accuracy(num_classes, 1)
        self.train_acc5 = _accuracy(num_classes, 5)
        self.eval_acc1 = _accuracy(num_classes, 1)
        self.eval_acc5 = _accuracy(num_classes, 5)

        ema_config = config.get("ema")
        self.ema: ExponentialMovingAverage | None = None
        self.ema_steps: int | None = None
        if ema_config is not None:
            self.ema_steps = int(ema_config.get("steps", DEFAULT_EMA_STEPS))
            # the decay is rescaled in setup("fit"), when the trainer's settings are known
            self.ema = ExponentialMovingAverage(self.model, decay=float(ema_config["decay"]))
            self.eval_acc1_ema = _accuracy(num_classes, 1)
            self.eval_acc5_ema = _accuracy(num_classes, 5)
        self._ema_last_step: int | None = None

        self.use_agc = bool(config.get("use_agc", False))
        if self.use_agc:
            rank_zero_info("Adaptive gradient clipping is enabled.")

    # ----------------------------------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        """Rescale the EMA decay to the run's batch size, devices and length (torchvision's rule)."""
        if stage != "fit" or self.ema is None:
            return
        max_epochs = self.trainer.max_epochs
        if max_epochs is None or max_epochs < 1:
            raise ConfigError("EMA needs trainer.max_epochs in the config (config['trainer']['max_epochs'])")
        decay = adjusted_ema_decay(
            float(self.config["ema"]["decay"]),
            steps=self.ema_steps or DEFAULT_EMA_STEPS,
            batch_size=int(self.config["data"]["batch_size"]),
            world_size=self.trainer.world_size,
            accumulate_grad_batches=self.trainer.accumulate_grad_batches,
            max_epochs=max_epochs,
        )
        self.ema.decay = decay
        rank_zero_info(f"EMA every {self.ema_steps} optimizer steps with decay {decay:.6f} per update.")

    def configure_optimizers(self) -> dict[str, Any]:
        """The config's optimizer and LR schedule (steps counted over the whole run)."""
        optimizer = self.config["optimizer"].create(self.model)
        scheduler = self.config["lr_scheduler"].create(
            optimizer, total_steps=int(self.trainer.estimated_stepping_batches)
        )
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    # ------------------------------------------------------------------------------------- steps
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of the wrapped model."""
        return self.model(images)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Loss of one batch; logs ``train_loss``, ``train_acc1`` and ``train_acc5``."""
        images, labels = batch
        outputs = self(self._prepare(images))
        loss = self.criterion(outputs, labels)
        self._stop_if_not_finite(loss, batch_idx)

        with torch.no_grad():
            hard = _hard_labels(labels)
            self.train_acc1(outputs, hard)
            self.train_acc5(outputs, hard)
        self.log("train_loss", loss, prog_bar=True)
        self.log("train_acc1", self.train_acc1, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train_acc5", self.train_acc5, on_step=True, on_epoch=True)
        return loss

    def _stop_if_not_finite(self, loss: torch.Tensor, batch_idx: int) -> None:
        bad = not bool(torch.isfinite(loss.detach()).all())
        if self.trainer.world_size > 1:  # every rank must stop together
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            raise NonFiniteLossError(
                f"training stopped: the loss became {loss.item()} at epoch {self.current_epoch}, "
                f"batch {batch_idx}; the last good checkpoint was kept (lower the learning rate, "
                "clip gradients or change --amp, then run again to resume from last.ckpt)"
            )

    def on_fit_start(self) -> None:
        """Declare the ``[x, 1 - x]`` inputs of the data pipeline to the model (and its EMA copy)."""
        self._declare_inputs_inverse_encoded(self.inputs_inverse_encoded)

    def on_fit_end(self) -> None:
        """Withdraw the declaration: after fitting, the model may see inputs that are not encoded
        (Integrated Gradients' path, Quantus perturbations)."""
        self._declare_inputs_inverse_encoded(False)

    def _declare_inputs_inverse_encoded(self, encoded: bool) -> None:
        models = [self.model] + ([self.ema.module] if self.ema is not None else [])
        for model in models:
            declare = getattr(model, "set_inputs_inverse_encoded", None)
            if declare is not None:
                declare(encoded)

    def on_train_start(self) -> None:
        """Remember the optimizer step count so EMA updates follow optimizer steps, not batches."""
        self._ema_last_step = self.trainer.global_step

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Update the EMA every ``ema_steps`` optimizer steps (copying it during LR warmup)."""
        if self.ema is None:
            return
        step = self.trainer.global_step
        if step == self._ema_last_step:  # gradient accumulation: no optimizer step this batch
            return
        self._ema_last_step = step
        if step % (self.ema_steps or DEFAULT_EMA_STEPS) != 0:
            return
        self.ema.update_parameters(self.model)
        if self._in_lr_warmup():
            # during warmup the average would mostly hold the random initialisation: restart it
            self.ema.n_averaged.fill_(0)

    def _in_lr_warmup(self) -> bool:
        scheduler = self.config["lr_scheduler"]
        warmup_epochs = getattr(scheduler, "warmup_epochs", None)
        warmup_steps = getattr(scheduler, "warmup_steps", None)
        if warmup_steps:
            return self.trainer.global_step < warmup_steps
        if warmup_epochs:
            return self.current_epoch < warmup_epochs
        return False

    def _eval_step(self, batch: Any, split: str) -> torch.Tensor:
        images, labels = batch
        images = self._prepare(images)
        outputs = self(images)
        loss = self.test_criterion(outputs, labels)
        hard = _hard_labels(labels)
        self.eval_acc1(outputs, hard)
        self.eval_acc5(outputs, hard)
        self.log(f"{split}_loss", loss, on_epoch=True, sync_dist=True)
        self.log(f"{split}_acc1", self.eval_acc1, on_epoch=True, prog_bar=True)
        self.log(f"{split}_acc5", self.eval_acc5, on_epoch=True, prog_bar=True)

        if self.ema is not None:
            ema_outputs = self.ema(images)
            ema_loss = self.test_criterion(ema_outputs, labels)
            self.eval_acc1_ema(ema_outputs, hard)
            self.eval_acc5_ema(ema_outputs, hard)
            self.log(f"{split}_loss_ema", ema_loss, on_epoch=True, sync_dist=True)
            self.log(f"{split}_acc1_ema", self.eval_acc1_ema, on_epoch=True)
            self.log(f"{split}_acc5_ema", self.eval_acc5_ema, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Logs ``val_loss``, ``val_acc1``, ``val_acc5`` (and ``*_ema`` with EMA)."""
        return self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Logs ``test_loss``, ``test_acc1``, ``test_acc5`` (and ``*_ema`` with EMA)."""
        return self._eval_step(batch, "test")

    # ------------------------------------------------------------------------------- gradients
    def _total_grad_norm(self) -> float:
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if not grads:
            return 0.0
        return float(torch.nn.utils.get_total_norm(grads, norm_type=2.0))

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Log the total gradient norm before clipping when ``track_grad_norm`` is on."""
        if self.track_grad_norm:
            self.log("gradients/total_norm", self._total_grad_norm(), on_step=True, on_epoch=True)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Adaptive gradient clipping when the config asks for it, else Lightning's clipping."""
        if self.use_agc:
            adaptive_clip_grad_(self.model.parameters())
        else:
            self.clip_gradients(
                optimizer, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm
            )
        if self.track_grad_norm and (self.use_agc or gradient_clip_val):
            self.log("gradients/clipped_total_norm", self._total_grad_norm(), on_step=True, on_epoch=True)

    # ------------------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse to save weights that are no longer finite (keeps the last good checkpoint)."""
        named = list(self.model.named_parameters())
        finite = torch.stack([torch.isfinite(p.detach()).all() for _, p in named] or [torch.tensor(True)])
        if not bool(finite.all()):  # one device synchronisation for all parameters
            name = named[int((~finite).nonzero()[0])][0]
            raise NonFiniteLossError(
                f"training stopped: the weights became non-finite ({name}) at epoch {self.current_epoch}; "
                "the last good checkpoint was kept (lower the learning rate or clip gradients, then "
                "run again to resume from last.ckpt)"
            )
        # hyper-parameters must load with torch.load(weights_only=True)
        if "hyper_parameters" in checkpoint:
            checkpoint["hyper_parameters"] = plain_data(dict(checkpoint["hyper_parameters"]))

