"""Figures: training curves and inpainting grids (matplotlib, Agg backend, no display needed)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def _to_hwc(img: torch.Tensor):
    return img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def save_grid(columns: dict, path: str, row_titles=None, cell: float = 1.6):
    """One column per entry of `columns` ({title: tensor N, 3, H, W in [0, 1]}), one row per image."""
    titles = list(columns)
    n = len(next(iter(columns.values())))
    fig, axes = plt.subplots(n, len(titles), figsize=(cell * len(titles), cell * n + 0.3), squeeze=False)
    for r in range(n):
        for c, title in enumerate(titles):
            ax = axes[r][c]
            ax.imshow(_to_hwc(columns[title][r]), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
            if c == 0 and row_titles:
                ax.set_ylabel(row_titles[r], fontsize=7)
    fig.tight_layout(pad=0.3)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def masked_view(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] with holes painted white, as a user would see the input."""
    return images * (1 - masks) + masks


def save_training_plot(history: list, path: str):
    """Losses (train and validation) and validation SSIM / PSNR per epoch."""
    if not history:
        return
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for key, label in (("train_l1", "train L1"), ("train_edge", "train edge"), ("train_ssim_loss", "train 1-SSIM"),
                       ("val_l1", "val hole L1"), ("val_edge", "val hole edge")):
        axes[0].plot(epochs, [h[key] for h in history], marker=".", label=label)
    axes[0].set_title("reconstruction losses")
    for key, label in (("train_gan_g", "train G adv"), ("train_gan_d", "train D"),
                       ("val_gan_g", "val G adv"), ("val_gan_d", "val D")):
        axes[1].plot(epochs, [h[key] for h in history], marker=".", label=label)
    axes[1].set_title("adversarial losses")
    axes[2].plot(epochs, [h["val_ssim"] for h in history], marker=".", color="C0", label="val hole SSIM")
    axes[2].set_ylabel("SSIM")
    twin = axes[2].twinx()
    twin.plot(epochs, [h["val_psnr"] for h in history], marker=".", color="C3", label="val hole PSNR (dB)")
    twin.set_ylabel("PSNR (dB)")
    axes[2].set_title("validation quality")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7), axes[1].legend(fontsize=7)
    axes[2].legend(loc="upper left", fontsize=7), twin.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_mask_examples(masks_by_kind: dict, path: str, image: "torch.Tensor | None" = None):
    """One row per mask kind, each cell a mask (white = hole) or, with an image, the image with its hole."""
    kinds = list(masks_by_kind)
    n = max(len(v) for v in masks_by_kind.values())
    fig, axes = plt.subplots(len(kinds), n, figsize=(1.5 * n, 1.6 * len(kinds)), squeeze=False)
    for r, kind in enumerate(kinds):
        for c in range(n):
            ax = axes[r][c]
            ax.set_xticks([]), ax.set_yticks([])
            if c >= len(masks_by_kind[kind]):
                ax.axis("off")
                continue
            m = masks_by_kind[kind][c]
            shown = masked_view(image, m) if image is not None else m.repeat(3, 1, 1)
            ax.imshow(_to_hwc(shown), interpolation="nearest")
            ax.set_title(f"{100 * float(m.mean()):.0f}% hole", fontsize=7)
            if c == 0:
                ax.set_ylabel(kind, fontsize=9)
    fig.tight_layout(pad=0.3)
    fig.savefig(path, dpi=100)
    plt.close(fig)
