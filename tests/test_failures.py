"""Nothing lost, nothing raw: folder-mode name clashes, outputs that cannot be written, checkpoints of the wrong
shape in every tool that reads one, bad uploads through the page's own upload path, and the messages."""
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import inpaint
from checkpoints import SHIPPED_WEIGHTS, CheckpointError
from conftest import ROOT


def png_header(path, w: int, h: int):
    """A PNG that says it is w x h but holds no pixel data: Pillow reads its size from the header alone."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IEND", b""))
    return str(path)


def photo(path, seed=0, size=(60, 80)):
    arr = (np.random.default_rng(seed).random((*size, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return str(path)


def hole(path, size=(60, 80)):
    m = np.zeros(size, np.uint8)
    m[20:30, 30:50] = 255
    Image.fromarray(m).save(path)
    return str(path)


def digest(folder):
    return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))}


# --- folder mode: never over an input, never two results with one name ---

def test_photos_sharing_a_name_get_a_result_each_and_the_inputs_stay(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    photo(src / "a.jpg", 1), photo(src / "a.png", 2), hole(src / "a_mask.png")
    before = digest(src)
    assert inpaint.main([str(src), "--out", str(src)]) == 0  # a_jpg.png and a_png.png cannot collide with an input
    out = capsys.readouterr()
    assert "wrote 2 of 2" in out.out and "a.jpg and a.png share the name a" in out.err
    after = digest(src)
    assert {n: after[n] for n in before} == before and set(after) - set(before) == {"a_jpg.png", "a_png.png"}
    assert after["a_jpg.png"] != after["a_png.png"]


@pytest.mark.parametrize("where", ["same", "dot"])
def test_out_equal_to_the_input_folder_is_refused_when_a_result_would_replace_a_photo(tmp_path, capsys, monkeypatch,
                                                                                    where):
    src = tmp_path / "in"
    src.mkdir()
    photo(src / "a.png"), hole(src / "a_mask.png")
    before = digest(src)
    monkeypatch.chdir(src)
    out = str(src) if where == "same" else "."
    assert inpaint.main([str(src), "--out", out]) == 2
    err = capsys.readouterr().err
    assert "would write over images of" in err and "(a.png)" in err
    assert digest(src) == before


def test_an_output_under_a_file_is_a_cannot_write_message(tmp_path, capsys):
    src = photo(tmp_path / "p.png")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert inpaint.main([src, "--box", "5,5,20,20", "-o", str(blocker / "x.png")]) == 2
    assert f"cannot write {blocker / 'x.png'}: {blocker} is a file, not a folder" in capsys.readouterr().err
    folder = tmp_path / "in"
    folder.mkdir()
    photo(folder / "a.png"), hole(folder / "a_mask.png")
    assert inpaint.main([str(folder), "--out", str(blocker)]) == 2
    assert f"cannot write --out {blocker}: it is a file, not a folder" in capsys.readouterr().err


def test_folder_mode_records_a_result_it_cannot_write_and_goes_on(tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name in ("a", "b"):
        photo(src / f"{name}.jpg"), hole(src / f"{name}_mask.png")
    (out / "a.png").mkdir(parents=True)  # a folder where a's result should go
    assert inpaint.main([str(src), "--out", str(out)]) == 1
    io = capsys.readouterr()
    assert "wrote 1 of 2" in io.out and "cannot write" in io.err and (out / "b.png").is_file()


def test_export_and_results_say_cannot_write_too(tmp_path, capsys):
    import export
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert export.main(["--checkpoint", SHIPPED_WEIGHTS, "-o", str(blocker / "g.onnx")]) == 2
    assert "cannot write" in capsys.readouterr().err


# --- checkpoints: every way one can be wrong, one error in every tool ---

def bad_checkpoints(folder) -> dict:
    """{case: (path, words its message must hold)}."""
    shipped = torch.load(SHIPPED_WEIGHTS, weights_only=True)
    files = {}

    def save(name, obj):
        torch.save(obj, folder / name)
        return str(folder / name)
    (folder / "empty.pt").write_bytes(b"")
    files["empty"] = (str(folder / "empty.pt"), "the file is empty (0 bytes)")
    (folder / "text.pt").write_text("this is a note, not a model\n")
    files["text"] = (str(folder / "text.pt"), "not a PyTorch checkpoint")
    (folder / "cut.pt").write_bytes(open(SHIPPED_WEIGHTS, "rb").read()[:5000])
    files["truncated"] = (str(folder / "cut.pt"), "damaged or truncated")
    files["bare tensor"] = (save("tensor.pt", torch.zeros(3)), "holds a Tensor, not a checkpoint")
    files["state dict"] = (save("sd.pt", shipped["generator"]), "no 'generator' weights")
    files["no config"] = (save("nocfg.pt", {"generator": shipped["generator"]}), "neither the 'config' nor")
    missing = {**shipped, "generator": {k: v for i, (k, v) in enumerate(shipped["generator"].items()) if i}}
    files["missing weight"] = (save("missing.pt", missing), "Missing key")
    files["unknown arch"] = (save("arch.pt", {**shipped, "model_args": {**shipped["model_args"], "arch": "transformer"}}),
                             "unknown architecture 'transformer'")
    files["wrong shape"] = (save("shape.pt", {**shipped, "model_args": {**shipped["model_args"], "width": 16}}),
                            "size mismatch")
    files["unknown argument"] = (save("arg.pt", {**shipped, "model_args": {**shipped["model_args"], "depth": 3}}),
                                 "unexpected keyword argument 'depth'")
    return files


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return bad_checkpoints(tmp_path_factory.mktemp("bad"))


CASES = ["empty", "text", "truncated", "bare tensor", "state dict", "no config", "missing weight", "unknown arch",
         "wrong shape", "unknown argument"]


@pytest.mark.parametrize("case", CASES)
def test_every_wrong_checkpoint_is_one_error_naming_the_file_and_the_fault(bad, case):
    from checkpoints import load_generator
    path, words = bad[case]
    with pytest.raises(CheckpointError) as e:
        load_generator(path)
    assert path in str(e.value) and words in str(e.value)


@pytest.mark.parametrize("case", CASES)
def test_inpaint_ends_a_wrong_checkpoint_with_its_message_and_exit_2(bad, case, tmp_path, capsys):
    path, words = bad[case]
    assert inpaint.main([photo(tmp_path / "p.png"), "--box", "5,5,9,9", "-o", str(tmp_path / "o.png"),
                         "--checkpoint", path]) == 2
    err = capsys.readouterr().err
    assert path in err and words in err and "Traceback" not in err and not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("case", CASES)
def test_training_from_a_wrong_checkpoint_ends_with_its_message_and_exit_2(bad, case, faces_dir, tmp_path, capsys):
    import main as main_module
    path, words = bad[case]
    code = main_module.main(["--preset", "tiny", "--data-dir", faces_dir, "--out-dir", str(tmp_path), "--init-from", path])
    err = capsys.readouterr().err
    assert code == 2 and path in err and words in err
    assert not os.listdir(tmp_path)  # the run folder it had created is gone


@pytest.mark.parametrize("case", ["text", "unknown arch", "wrong shape"])
def test_export_ends_a_wrong_checkpoint_with_its_message_and_exit_2(bad, case, capsys):
    import export
    path, words = bad[case]
    assert export.main(["--checkpoint", path]) == 2
    assert words in capsys.readouterr().err


def test_the_page_lists_a_bad_run_with_its_reason_and_refuses_a_bad_given_checkpoint(bad, tmp_path, capsys):
    pytest.importorskip("gradio")
    import app
    runs = tmp_path / "out"
    for case in ("wrong shape", "empty"):
        (runs / case.replace(" ", "_")).mkdir(parents=True)
        os.link(bad[case][0], runs / case.replace(" ", "_") / "best.pt")
    models = app.Models(app.model_choices(None, str(runs)), "cpu")
    assert models.load_all() == ["shipped weights (weights/generator.pt)"]
    shown = dict(models.dropdown_choices())
    assert {label for label in shown if "cannot be used" in label} == {
        f"run {r} (best.pt): cannot be used ({models.problems[f'run {r} (best.pt)']})" for r in ("empty", "wrong_shape")}
    with pytest.raises(inpaint.InpaintError, match="size mismatch"):
        models("run wrong_shape (best.pt)")
    assert app.main(["--checkpoint", bad["text"][0], "--runs", str(runs)]) == 2
    assert "not a PyTorch checkpoint" in capsys.readouterr().err


# --- uploads to the page: checked from the header before gradio decodes them ---

@pytest.fixture
def uploads(tmp_path):
    good = photo(tmp_path / "good.png")
    (tmp_path / "note.png").write_text("hello, I am text")
    (tmp_path / "zero.png").write_bytes(b"")
    Image.fromarray(np.zeros((300, 300, 3), np.uint8) + 128).save(tmp_path / "full.jpg", quality=90)
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:600])
    return {"good": (good, ""), "text": (str(tmp_path / "note.png"), "not an image this page can read"),
            "zero bytes": (str(tmp_path / "zero.png"), "not an image this page can read"),
            "truncated JPEG": (str(tmp_path / "cut.jpg"), "not an image this page can read"),
            "144 MP": (png_header(tmp_path / "big.png", 12000, 12000), "over this page's 40.0 MP budget"),
            "900 MP bomb": (png_header(tmp_path / "bomb.png", 30000, 30000), "far too large to open")}


def test_every_bad_upload_is_a_message_on_the_page_and_one_log_line(uploads, capfd):
    pytest.importorskip("gradio")
    from gradio.components.image_editor import EditorData
    from gradio.data_classes import FileData
    import app
    editor = app.checked_editor(40_000_000, type="numpy", image_mode="RGB", layers=False)
    for case, (path, words) in uploads.items():
        payload = EditorData(background=FileData(path=path), layers=[], composite=None)
        if not words:
            assert editor.preprocess(payload)["background"].shape == (60, 80, 3)
            continue
        value = editor.preprocess(payload)
        assert value["background"] is None and words in value[app.REFUSED], case
        err = capfd.readouterr().err
        assert err.count("\n") == 1 and err.startswith("upload refused: ") and words in err, case
        assert words in app.upload_message(value, 40_000_000), case  # the status line says why
        with pytest.raises(app.InpaintError) as e:
            app.editor_inputs(value, "", 40_000_000)  # and so does pressing Inpaint
        assert words in str(e.value), case


def test_the_page_editor_is_gradios_own_image_mask_and_writes_no_stub_file():
    gr = pytest.importorskip("gradio")
    import app
    editor = app.checked_editor(1000)
    assert type(editor) is gr.ImageMask and not os.path.exists(os.path.join(ROOT, "app.pyi"))


# --- messages that say what is true ---

@pytest.mark.parametrize("value", ["-5", "0", "2000000000"])
def test_max_pixels_outside_what_pillow_opens_is_refused_with_the_range(value, tmp_path, capsys):
    assert inpaint.main([photo(tmp_path / "p.png"), "--box", "1,1,5,5", "-o", str(tmp_path / "o.png"),
                         "--max-pixels", value]) == 2
    assert f"--max-pixels {value}: must be between 1 and 178,956,970" in capsys.readouterr().err


def test_pillows_own_limit_is_named_as_such(tmp_path):
    with pytest.raises(inpaint.InpaintError, match="is over 179.0 MP, the largest image Pillow opens"):
        inpaint.read_image(png_header(tmp_path / "bomb.png", 30000, 30000), inpaint.PILLOW_LIMIT)
    with pytest.raises(inpaint.InpaintError, match=r"12000x12000 = 144.0 MP, over the 40.0 MP budget"):
        inpaint.read_image(png_header(tmp_path / "big.png", 12000, 12000), 40_000_000)


def test_a_box_reaching_past_the_photo_works_as_written_on_the_command_line(tmp_path):
    src = photo(tmp_path / "p.png")
    assert inpaint.main([src, "--box", "-10,-10,30,25", "-o", str(tmp_path / "o.png")]) == 0
    before, after = (np.asarray(Image.open(p)) for p in (src, tmp_path / "o.png"))
    changed = (before != after).any(-1)
    assert changed[:15, :20].any() and not changed[15:].any() and not changed[:, 20:].any()
    with pytest.raises(inpaint.InpaintError, match="overlap the 80x60 photo"):
        inpaint.box_mask("-50,-50,10,10", (60, 80))


def test_readme_says_what_each_tool_does_with_these_failures():
    readme = open(os.path.join(ROOT, "README.md")).read()
    for words in ("share a name", "would write over", "cannot write", "cannot be used", "upload refused",
                  "--loss-jump", "not a PyTorch checkpoint"):
        assert words in readme, words


def test_a_report_or_figure_that_fails_mid_write_leaves_the_old_file_and_no_partial(tmp_path):
    from config import atomic_write, write_text
    from plots import save_grid
    path = tmp_path / "grid.png"
    write_text(str(path), "the old grid")

    def crash(tmp):
        open(tmp, "w").write("half a grid")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(path), crash)
    assert path.read_text() == "the old grid" and os.listdir(tmp_path) == ["grid.png"]
    save_grid({"original": torch.rand(2, 3, 8, 8)}, str(path))  # the figures go through it
    assert path.read_bytes()[:4] == b"\x89PNG" and os.listdir(tmp_path) == ["grid.png"]
