"""Peterson et al. (2019), sections 5-7 of the paper: training on CIFAR-10H's human labels.

Sections 2-4 of the book call this module; the notebooks only orchestrate and plot.

* **Generalisation** (paper §5): train each architecture from scratch on the 10,000 CIFAR-10H
  images with k-fold cross-validation, once on human soft labels and once on the CIFAR-10 hard
  labels; evaluate on the held-out folds and on data sets of increasing distribution shift.
* **Alternatives** (paper §6, Table 1): pretrain on the 50,000 CIFAR-10 training images, then
  fine-tune on the same folds with hard labels, mixup, class-level targets, a distillation
  ensemble, human soft labels, sampled hard labels and mixup on human labels.
* **Adversarial** (paper §7, Table 2, Figure 4): FGSM and PGD on the fine-tuned hard- and
  soft-label models of the alternatives section, reloaded from the same cache entries.

Every training run goes through :func:`softlib.train.train_cached` (the fold models of one
configuration through :func:`softlib.multimodel.train_cached_many`, which trains them together on a
GPU and stores the same entries), keyed by the full training configuration and a fingerprint of
the data, folds and targets, so a rerun (or the next section) loads the weights instead of
retraining. The paper's published numbers are typed in
below (``PAPER_*``), each citing the table or figure it comes from.
"""
from .common import *  # noqa: F401,F403
from .generalisation import *  # noqa: F401,F403
from .alternatives import *  # noqa: F401,F403
from .adversarial import *  # noqa: F401,F403
from .discussion import *  # noqa: F401,F403
