"""Figures: training curves and inpainting grids (matplotlib, Agg backend, no display needed)."""
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from config import atomic_write  # noqa: E402
from losses import RECONSTRUCTION  # noqa: E402
from models import block_output_shapes, composite, parameter_table  # noqa: E402


def _to_hwc(img: torch.Tensor):
    return img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def save_grid(columns: dict, path: str, row_titles=None, pad: int = 2):
    """One column per entry of `columns` ({title: tensor N, 3, H, W in [0, 1]}), one row per image, every image
    at its own pixels (no resampling, so sharpness can be judged), titles above and row titles on the left.
    Composed with PIL: a grid costs milliseconds where matplotlib's took half a second."""
    font, titles = ImageFont.load_default(size=12), list(columns)
    n = len(columns[titles[0]])
    h, w = columns[titles[0]].shape[-2:]
    text_w = lambda t: int(font.getlength(t))  # noqa: E731
    cell = max(w, *(text_w(t) + 4 for t in titles))
    left = max((text_w(t) + 6 for t in row_titles), default=0) if row_titles else 0
    top = 16
    grid = Image.new("RGB", (left + len(titles) * (cell + pad), top + n * (h + pad)), "white")
    draw = ImageDraw.Draw(grid)
    for c, title in enumerate(titles):
        x = left + c * (cell + pad)
        draw.text((x + (cell - text_w(title)) // 2, 1), title, fill="black", font=font)
        for r in range(n):
            pixels = (_to_hwc(columns[title][r]) * 255 + 0.5).astype("uint8")  # H, W, 3
            grid.paste(Image.fromarray(pixels), (x + (cell - w) // 2, top + r * (h + pad)))
    for r, text in enumerate(row_titles or []):
        draw.text((2, top + r * (h + pad) + h // 2 - 6), text, fill="black", font=font)
    atomic_write(path, grid.save)


def masked_view(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] with holes painted white, as a user would see the input."""
    return composite(1.0, images, masks)


LABELS = {"l1": "L1", "l2": "L2", "ssim_loss": "1-SSIM"}  # plot labels of the RECONSTRUCTION terms


def save_training_plot(history: list, path: str):
    """Losses (train and validation) and validation SSIM / PSNR per epoch."""
    if not history:
        return
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    curves = [(f"train_{name}", f"train {LABELS.get(name, name)}") for name in RECONSTRUCTION]
    for key, label in curves + [("val_l1", "val hole L1"), ("val_edge", "val hole edge")]:
        if key not in history[-1]:  # runs from before a term was added
            continue
        axes[0].plot(epochs, [h.get(key, math.nan) for h in history], marker=".", label=label)
    axes[0].set_title("reconstruction losses")
    gan = [(k, label) for k, label in (("train_gan_g", "train G adv"), ("train_gan_d", "train D"),
                                        ("val_gan_g", "val G adv"), ("val_gan_d", "val D")) if k in history[-1]]
    for key, label in gan:
        axes[1].plot(epochs, [h.get(key, math.nan) for h in history], marker=".", label=label)
    axes[1].set_title("adversarial losses" if gan else "adversarial losses (off: --w-adv 0)")
    axes[2].plot(epochs, [h["val_ssim"] for h in history], marker=".", color="C0", label="val hole SSIM")
    if "val_lpips" in history[-1]:
        axes[2].plot(epochs, [h.get("val_lpips", math.nan) for h in history], marker=".", color="C2",
                     label="val LPIPS (lower is better)")
    axes[2].set_ylabel("SSIM, LPIPS")
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
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100))
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
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)


def save_architecture_diagram(generator, size: int, path: str, title: str):
    """Any generator as its blocks in forward order (name, parameters, output shape at size x size), each
    drawn at the depth of its output resolution, with the resolution changes between them and its skip
    connections (dashed). Everything comes from the model itself (models.parameter_table,
    models.block_output_shapes and the class's `skips`), so the figure cannot drift from the code."""
    params, shapes, skips = parameter_table(generator), block_output_shapes(generator, size), type(generator).skips
    names = [n for n in shapes]
    full = max(s[1] for s in shapes.values())
    level = {n: round(math.log2(full / shapes[n][1])) for n in names}
    level["input"] = 0
    col = {"input": 0, **{n: i + 1 for i, n in enumerate(names)}}
    deepest = names.index(max(names, key=lambda n: level[n]))
    fig, ax = plt.subplots(figsize=(1.45 * len(col) + 1, 1.1 * (max(level.values()) + 1) + 1.4))
    w, h = 1.2, 0.62
    centre = {n: (col[n] * 1.45, -level[n] * 1.05) for n in col}
    for i, name in enumerate(["input"] + names):
        cx, cy = centre[name]
        colour = ("#eeeeee" if name == "input" else "#f6d7a7" if "attention" in name else
                  "#e3d7f0" if level[name] == level[names[deepest]] else "#cfe3f6" if i - 1 < deepest else "#d8efd3")
        ax.add_patch(plt.Rectangle((cx - w / 2, cy - h / 2), w, h, facecolor=colour, edgecolor="#333", lw=1))
        ax.text(cx, cy + 0.13, name, ha="center", va="center", fontsize=9, weight="bold")
        if name == "input":
            ax.text(cx, cy - 0.12, "masked RGB\n+ hole mask", ha="center", va="center", fontsize=7)
            continue
        c, hh, ww = shapes[name]
        ax.text(cx, cy - 0.06, f"{params[name]:,} params", ha="center", va="center", fontsize=7)
        ax.text(cx, cy - 0.21, f"out {c}x{hh}x{ww}", ha="center", va="center", fontsize=7, color="#444")
    order = ["input"] + names
    for a, b in zip(order, order[1:]):
        (x0, y0), (x1, y1) = centre[a], centre[b]
        ax.annotate("", xy=(x1 - w / 2, y1), xytext=(x0 + w / 2, y0), arrowprops=dict(arrowstyle="->", color="#333"))
        change = level[b] - level[a]
        if change:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.08, "/2" if change > 0 else "x2", fontsize=7, color="#555")
    for a, b in skips:
        (x0, y0), (x1, y1) = centre[a], centre[b]
        y = max(y0, y1) + h / 2 + 0.06
        ax.plot([x0, x0, x1, x1], [y0 + h / 2, y, y, y1 + h / 2], color="#2a6fb0", ls="--", lw=1)
        ax.text((x0 + x1) / 2, y + 0.04, "skip (concat)", ha="center", fontsize=7, color="#2a6fb0")
    ax.set_title(f"{title}: {params['total']:,} parameters; output RGB pasted into the hole", fontsize=10)
    ax.set_xlim(-1, max(c for c in centre.values())[0] + 1)
    ax.set_ylim(-max(level.values()) * 1.05 - 0.6, 0.9)
    ax.axis("off")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
