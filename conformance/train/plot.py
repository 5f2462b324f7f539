"""The PNG a run ends with: its loss and accuracy per epoch, as d2l's animator draws them."""

from __future__ import annotations

import io
import math

from .settings import Epoch, Settings, plan_of


def loss_axis(history: list[Epoch], classes: int) -> tuple[float, float]:
    """(the loss of a uniform guess, the top of the loss axis): the axis runs from 0 past
    both that and every loss, so noise around chance is drawn as the flat line it is."""
    chance = math.log(classes)
    losses = [v for e in history for v in (e.loss, e.test_loss) if math.isfinite(v)]
    return chance, max([chance, *losses]) * 1.15


def plot(history: list[Epoch], title: str, s: Settings) -> bytes:
    """Two panels, as d2l's animator draws the curves: the training and test loss, and the
    train and test accuracy, per epoch (markers, so a single epoch shows too). The loss
    axis starts at 0 and reaches past the loss of a guess (ln of the classes), drawn as a
    line, so a run that never leaves chance looks flat instead of magnifying noise; the
    title carries the learning rate."""
    import matplotlib

    matplotlib.use("Agg")  # no display; and set before pyplot is imported
    import matplotlib.pyplot as plt

    epochs = [e.epoch for e in history]
    chance, top = loss_axis(history, plan_of(s).num_classes)
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(8, 3.2), dpi=100)
    train_label = "train loss" + (f" (with aux x {s.aux_weight})" if s.aux_weight and plan_of(s).aux else "")
    loss_ax.plot(epochs, [e.loss for e in history], "o-", label=train_label)
    if any(math.isfinite(e.test_loss) for e in history):
        loss_ax.plot(epochs, [e.test_loss for e in history], "^-.", label="test loss")
    loss_ax.axhline(chance, color="#888888", linestyle=":", linewidth=1, label=f"chance (ln {plan_of(s).num_classes})")
    loss_ax.set_ylabel("cross-entropy")
    loss_ax.set_ylim(0, top)
    acc_ax.plot(epochs, [e.train_acc for e in history], "s--", label="train acc")
    acc_ax.plot(epochs, [e.test_acc for e in history], "^-.", label="test acc")
    acc_ax.axhline(1 / plan_of(s).num_classes, color="#888888", linestyle=":", linewidth=1, label="chance")
    acc_ax.set_ylabel("accuracy")
    acc_ax.set_ylim(0, 1.02)
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.set_xlim(0.5, max(epochs) + 0.5)
        ax.set_xticks(epochs if len(epochs) <= 12 else ax.get_xticks())
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{title}; SGD lr {s.lr:g}, momentum {s.momentum:g}, batch {s.batch_size}", fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()
