"""Classical inpainters, each behind the same call:

    inpaint(image, mask) -> image
    image: H, W, 3 float32 in [0, 1];  mask: H, W bool (True = hole);  returns H, W, 3 float32 in [0, 1]
"""
import cv2
import numpy as np
from scipy import ndimage
from skimage.restoration import inpaint_biharmonic

try:  # optional: the MIT-licensed PyPI package pypatchmatch (prebuilt wheels, no compiling)
    import patchmatch
except ImportError:  # pragma: no cover - reported by patch_match() when it is called
    patchmatch = None

PATCHMATCH_SEED = 0  # PatchMatch is randomised; a fixed seed per call makes every fill reproducible
PATCHMATCH_PATCH = 3  # patch radius (7x7 patches), the value its authors' examples use
OPENCV_RADIUS = 3  # neighbourhood radius of OpenCV's inpainting (its documented typical value)
RING = 4  # width of the ring whose mean colour fills the hole in mean_fill


def mean_fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fill every hole pixel with the mean colour of the RING px around the holes."""
    ring = ndimage.binary_dilation(mask, np.ones((2 * RING + 1,) * 2, bool)) & ~mask
    out = image.copy()
    out[mask] = image[ring].mean(axis=0) if ring.any() else image[~mask].mean(axis=0)
    return out


def on_uint8(fill, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Run fill(uint8 image, uint8 0/255 mask) -> uint8, for the libraries that work on 8-bit images."""
    u8 = np.ascontiguousarray(np.round(image * 255).astype(np.uint8))
    return fill(u8, mask.astype(np.uint8) * 255).astype(np.float32) / 255


def _opencv(image: np.ndarray, mask: np.ndarray, flag: int) -> np.ndarray:
    return on_uint8(lambda u8, m: cv2.inpaint(u8, m, OPENCV_RADIUS, flag), image, mask)


def telea(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """OpenCV's fast marching method (Telea 2004)."""
    return _opencv(image, mask, cv2.INPAINT_TELEA)


def navier_stokes(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """OpenCV's Navier-Stokes based method (Bertalmio et al. 2001)."""
    return _opencv(image, mask, cv2.INPAINT_NS)


def biharmonic(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """scikit-image's biharmonic equation inpainting: the smoothest surface through the border."""
    return np.clip(inpaint_biharmonic(image, mask, channel_axis=-1), 0, 1).astype(np.float32)


def patch_match(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """PatchMatch (Barnes et al. 2009), the algorithm behind content-aware fill: copies patches of the
    known image into the hole, coarse to fine."""
    if patchmatch is None or not patchmatch.patchmatch_available:
        raise RuntimeError("PatchMatch needs the pypatchmatch package: pip install -r requirements.txt")
    patchmatch.set_random_seed(PATCHMATCH_SEED)
    return on_uint8(lambda u8, m: patchmatch.inpaint(u8, m, patch_size=PATCHMATCH_PATCH), image, mask)


BASELINES = {"mean fill": mean_fill, "Telea": telea, "Navier-Stokes": navier_stokes, "biharmonic": biharmonic,
             "PatchMatch": patch_match}
