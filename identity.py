"""Does the inpainted face still look like the same person? dlib's face descriptor (a ResNet that maps a
face to 128 numbers; dlib's rule: two faces closer than 0.6 are the same person), compared between each
original and its inpainted version. An evaluation network: never a training loss.

Needs `pip install -r requirements-identity.txt` (dlib's prebuilt wheel and its model files).
"""
import glob
import importlib.util
import os

import numpy as np
import torch

SAME_PERSON = 0.6  # dlib's threshold on the descriptor distance (99.38% on LFW by its authors' account)
MODEL_FILES = {"shape": "shape_predictor_5_face_landmarks.dat", "descriptor": "dlib_face_recognition_resnet_model_v1.dat"}


def model_folder() -> str:
    """The folder of face_recognition_models' .dat files, found without importing the package (its
    __init__ imports pkg_resources, which is absent without setuptools)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise RuntimeError("the identity metric needs dlib's models: pip install -r requirements-identity.txt")
    hits = glob.glob(os.path.join(os.path.dirname(spec.origin), "**", MODEL_FILES["descriptor"]), recursive=True)
    if not hits:
        raise RuntimeError(f"{MODEL_FILES['descriptor']} is missing from {os.path.dirname(spec.origin)}: "
                           "reinstall with pip install --force-reinstall -r requirements-identity.txt")
    return os.path.dirname(hits[0])


def available() -> bool:
    return importlib.util.find_spec("dlib") is not None and importlib.util.find_spec("face_recognition_models") is not None


def to_uint8_hwc(images: torch.Tensor) -> list:
    """B, 3, H, W in [0, 1] -> B contiguous H, W, 3 uint8 arrays (what dlib reads)."""
    u8 = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [np.ascontiguousarray(a) for a in u8]


class FaceIdentity:
    """128-d descriptors of faces and their distances. The face is found once, in the original (the
    frontal HOG detector, upsampling small images to 2x), and the same box is used for the inpainted image,
    so a fill that wipes out the eyes is measured, not skipped; images where no face is found give NaN."""

    def __init__(self):
        import dlib
        folder = model_folder()
        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(os.path.join(folder, MODEL_FILES["shape"]))
        self.net = dlib.face_recognition_model_v1(os.path.join(folder, MODEL_FILES["descriptor"]))

    def face_box(self, image: np.ndarray):
        """The largest face dlib finds (upsampling once if none at first), or None."""
        for upsample in (0, 1):
            faces = self.detector(image, upsample)
            if len(faces):
                return max(faces, key=lambda r: r.area())
        return None

    def descriptor(self, image: np.ndarray, box) -> np.ndarray:
        return np.asarray(self.net.compute_face_descriptor(image, self.shape(image, box)), dtype=np.float32)  # 128

    def reference(self, originals: torch.Tensor) -> list:
        """Per original image: (face box, descriptor), or None where no face is found."""
        refs = []
        for image in to_uint8_hwc(originals):
            box = self.face_box(image)
            refs.append(None if box is None else (box, self.descriptor(image, box)))
        return refs

    def distances(self, filled: torch.Tensor, references: list) -> torch.Tensor:
        """B: the descriptor distance of each filled image to its original (NaN without a face)."""
        out = []
        for image, ref in zip(to_uint8_hwc(filled), references):
            out.append(float("nan") if ref is None else float(np.linalg.norm(self.descriptor(image, ref[0]) - ref[1])))
        return torch.tensor(out, dtype=torch.float64)
