"""Self-supervised pretraining of SEM encoders: FCMAE, DenseCL, MoCo v2 and MatSSL behind one entry point.

* :class:`PretrainConfig` / :func:`pretrain` (:mod:`semkit.ssl.pretrain`) -- one settings object, one call that
  builds the unlabeled pool, trains through the project's Lightning trainer and exports ``encoder.pt``;
* :data:`METHODS` -- method name -> module with ``build_module(config)`` and ``view_transform(config)``;
* :class:`UnlabeledDataModule` (:mod:`semkit.ssl.data`) -- random crops of the unlabeled pool.

Method modules are imported on demand, so ``import semkit.ssl`` stays light.
"""

from semkit.ssl.data import PoolImage, RandomCrops, UnlabeledDataModule, build_pool, sample_crops, split_pool
from semkit.ssl.pretrain import (
    BACKENDS,
    METHODS,
    PretrainConfig,
    export_encoder,
    load_module,
    loss_history,
    method_module,
    plot_loss_curves,
    pretrain,
    scaled_lr,
    warmup_cosine_lambda,
)

__all__ = [
    "BACKENDS",
    "METHODS",
    "PoolImage",
    "PretrainConfig",
    "RandomCrops",
    "UnlabeledDataModule",
    "build_pool",
    "export_encoder",
    "load_module",
    "loss_history",
    "method_module",
    "plot_loss_curves",
    "pretrain",
    "sample_crops",
    "scaled_lr",
    "split_pool",
    "warmup_cosine_lambda",
]
