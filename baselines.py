"""Classical inpainters, each behind the same call:

    inpaint(image, mask) -> image
    image: H, W, 3 float32 in [0, 1];  mask: H, W bool (True = hole);  returns H, W, 3 float32 in [0, 1]
"""
import cv2
import numpy as np
from scipy import ndimage
from skimage.restoration import inpaint_biharmonic

OPENCV_RADIUS = 3  # neighbourhood radius of OpenCV's inpainting (its documented typical value)
RING = 4  # width of the ring whose mean colour fills the hole in mean_fill


def mean_fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fill every hole pixel with the mean colour of the RING px around the holes."""
    ring = ndimage.binary_dilation(mask, np.ones((2 * RING + 1,) * 2, bool)) & ~mask
    out = image.copy()
    out[mask] = image[ring].mean(axis=0) if ring.any() else image[~mask].mean(axis=0)
    return out


def _opencv(image: np.ndarray, mask: np.ndarray, flag: int) -> np.ndarray:
    u8 = np.round(image * 255).astype(np.uint8)
    out = cv2.inpaint(u8, mask.astype(np.uint8) * 255, OPENCV_RADIUS, flag)
    return out.astype(np.float32) / 255


def telea(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """OpenCV's fast marching method (Telea 2004)."""
    return _opencv(image, mask, cv2.INPAINT_TELEA)


def navier_stokes(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """OpenCV's Navier-Stokes based method (Bertalmio et al. 2001)."""
    return _opencv(image, mask, cv2.INPAINT_NS)


def biharmonic(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """scikit-image's biharmonic equation inpainting: the smoothest surface through the border."""
    return np.clip(inpaint_biharmonic(image, mask, channel_axis=-1), 0, 1).astype(np.float32)


BASELINES = {"mean fill": mean_fill, "Telea": telea, "Navier-Stokes": navier_stokes, "biharmonic": biharmonic}
