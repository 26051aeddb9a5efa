"""Shared fixtures: synthetic image folders, a finished tiny run, and the real data when present."""
import os
import subprocess
import sys

# Under pytest-xdist (python -m pytest -n auto) the workers share the cores: one torch thread per worker and
# per script it starts, since oversubscribed threads slow everything down far more than they add.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
REAL_DATA = os.environ.get("INPAINT_DATA_DIR", "")
CELEBA = os.environ.get("INPAINT_CELEBA_DIR", "")
LPIPS_REFERENCE = os.environ.get("INPAINT_LPIPS_REFERENCE", "")


def shared_folder(var: str, path: str, what: str) -> str:
    """A folder of ../shared named by an environment variable: CI must have it (.ci/run sets it), elsewhere a
    test that needs it is skipped with the variable to set."""
    if not path or not os.path.isdir(path):
        if os.environ.get("CI"):
            pytest.fail(f"{var}={path!r} is not a folder; .ci/run must point it at {what}")
        pytest.skip(f"set {var} to {what} to run this test")
    return path


def make_faces(folder, n=40, size=(44, 52), seed=0, ext="png"):
    """Small synthetic 'faces': a smooth background, an ellipse and two dark eyes, in varied colours."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    for i in range(n):
        c0, c1, c2 = rng.random(3), rng.random(3), rng.random(3)
        img = c0 * (1 - yy[..., None]) + c1 * xx[..., None]
        cy, cx = 0.5 + 0.05 * rng.standard_normal(2)
        face = ((yy - cy) / 0.35) ** 2 + ((xx - cx) / 0.28) ** 2 < 1
        img[face] = c2
        for ex in (cx - 0.1, cx + 0.1):
            img[(yy - cy + 0.08) ** 2 + (xx - ex) ** 2 < 0.03 ** 2] = 0.05
        arr = np.clip(img * 255 + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(os.path.join(folder, f"{i:06d}.{ext}"))
    return folder


def run_script(*args, timeout=600, env=None, check=True):
    """Run one of the repo's scripts in a subprocess (as a user would) and return the result. results.py runs
    without the identity columns unless a test asks for them (--identity-images): dlib's descriptor costs ~0.1 s
    a face and method, and tests/test_identity.py covers it."""
    if args and args[0] == "results.py" and "--identity-images" not in args and "--mask-examples" not in args:
        args = (*args, "--identity-images", "0")
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def faces_dir(tmp_path_factory):
    return make_faces(str(tmp_path_factory.mktemp("faces")))


@pytest.fixture(scope="session")
def tiny_run(faces_dir, tmp_path_factory):
    """A finished 2-epoch tiny run on synthetic faces: (run folder, main.py stdout)."""
    out = str(tmp_path_factory.mktemp("out"))
    proc = run_script("main.py", "--preset", "tiny", "--data-dir", faces_dir, "--out-dir", out, "--run-name", "tiny",
                      "--val-lpips-images", "8")
    return os.path.join(out, "tiny"), proc.stdout


@pytest.fixture
def real_data():
    """The seed's 1,024 CelebA faces (../shared/data_celeb)."""
    return shared_folder("INPAINT_DATA_DIR", REAL_DATA, "../shared/data_celeb")


@pytest.fixture
def celeba():
    """The 20,908 CelebA faces with CelebA's partition (../shared/celeba): what the shipped weights are measured on."""
    return shared_folder("INPAINT_CELEBA_DIR", CELEBA, "../shared/celeba")


# Every architecture at a size the tests run in a blink; a new architecture adds its entry here
# (test_models checks that this covers models.ARCHITECTURES).
SMALL_ARCH_ARGS = {"unet": {"nf": 8}, "dilated": {"width": 8, "blocks": 2}}


def small_generator(arch: str, **kw):
    from models import build_from_args
    return build_from_args({"arch": arch, **SMALL_ARCH_ARGS[arch], **kw})


@pytest.fixture
def lpips_reference():
    """The LPIPS authors' example images (ex_ref/ex_p0/ex_p1.png)."""
    return shared_folder("INPAINT_LPIPS_REFERENCE", LPIPS_REFERENCE, "../shared/lpips_reference")
