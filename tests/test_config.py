import json
import os

import pytest

from config import NOT_RECIPE, PRESETS, Config, ConfigError, build_parser, recipe_command, resolve_config


def resolve(*argv):
    return resolve_config(build_parser().parse_args(list(argv)))


def test_seed_preset_is_the_seed_recipe_as_written():
    c = resolve("--preset", "seed")
    assert (c.nf, c.image_size, c.hole_size, c.hole_margin, c.ring, c.holes) == (64, 200, 32, 16, 4, 1)
    assert (c.w_adv, c.w_l1, c.w_edge, c.w_ssim, c.w_l2) == (1, 100, 10, 1, 0)
    assert (c.lr_g, c.lr_d, c.beta1, c.beta2, c.batch_size, c.epochs) == (2e-4, 2e-4, 0.5, 0.999, 20, 20)
    assert (c.lr_schedule, c.ema, c.prefill, c.best_metric) == ("constant", 0, False, "ssim")
    assert (c.d_layers, c.d_norm, c.d_mask, c.w_fm, c.adv_start) == (2, "batch", False, 0, 0)  # the seed's GAN


def test_default_preset_is_the_field_defaults():
    c = resolve()
    assert c.preset == "default" and c.to_dict() == {**Config().to_dict(), "data_dir": c.data_dir}
    assert (c.nf, c.holes, c.w_adv, c.w_fm, c.w_l2, c.lr_schedule) == (32, 6, 100, 1000, 1000, "constant") and 0 < c.ema < 1
    assert (c.d_scale, c.gan_hole_weight, c.epochs) == (2, 0.5, 15)
    assert (c.arch, c.crop, c.mask, c.adv_start, c.d_mask, c.d_layers) == ("dilated", 128, "mixed", 0.334, True, 4)
    assert (c.blur_up, c.grad_clip) == (True, 250)


def test_a_run_saved_before_the_blurred_upsampling_reads_back_without_it():
    saved = {k: v for k, v in Config().to_dict().items() if k != "blur_up"}  # a config.json written before the field
    assert Config.from_saved(saved).blur_up is False and Config.from_saved({**saved, "blur_up": True}).blur_up is True


def test_seed_preset_is_the_u_net_on_whole_images_with_square_holes():
    c = resolve("--preset", "seed")
    assert (c.arch, c.crop, c.mask, c.warmup_steps) == ("unet", 0, "square", 0)


def test_a_config_file_may_hold_every_architectures_arguments(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps(Config(arch="unet", nf=16).to_dict()))  # a saved config holds width and blocks too
    c = resolve("--config", str(f))
    assert (c.arch, c.nf) == ("unet", 16)


def test_every_field_has_a_flag_and_a_help_line():
    help_text = build_parser().format_help()
    for name, f in Config.__dataclass_fields__.items():
        assert f.metadata["help"]
        if name != "preset":
            assert "--" + name.replace("_", "-") in help_text


def test_unknown_flag_fails():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--learning-rate", "1"])


def test_precedence_preset_then_file_then_flags(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"nf": 16, "epochs": 3}))
    c = resolve("--preset", "whole", "--config", str(f), "--epochs", "5")
    assert c.loss_region == "whole" and c.nf == 16 and c.epochs == 5 and c.preset == "whole"


def test_whole_preset_is_the_seeds_whole_image_variant():
    c = resolve("--preset", "whole")
    assert (c.nf, c.epochs, c.loss_region) == (32, 30, "whole")


def test_bool_flags_and_unknown_config_keys(tmp_path):
    assert resolve("--no-hflip").hflip is False
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"learning_rate": 1}))
    with pytest.raises(ConfigError, match="learning_rate"):
        resolve("--config", str(f))


@pytest.mark.parametrize("argv, flag", [
    (["--epochs", "-1"], "--epochs"),
    (["--image-size", "100"], "--image-size"),
    (["--hole-size", "190"], "--hole-size"),
    (["--w-l1", "nan"], "--w-l1"),
    (["--w-adv", "inf"], "--w-adv"),
    (["--precision", "fp8"], "--precision"),
    (["--batch-size", "1"], "--batch-size"),
    (["--holes", "0"], "--holes"),
    (["--ema", "1"], "--ema"),
    (["--lr-schedule", "step"], "--lr-schedule"),
    (["--w-l2", "-1"], "--w-l2"),
    (["--warmup-steps", "-5"], "--warmup-steps"),
    (["--grad-clip", "nan"], "--grad-clip"),
    (["--adv-start", "1.5"], "--adv-start"),
    (["--collapse-db", "-1"], "--collapse-db"),
    (["--best-metric", "lpips", "--val-lpips-images", "0"], "--best-metric"),
    (["--arch", "resnet"], "--arch='resnet': must be one of unet, dilated"),
    (["--crop", "100"], "--crop=100: must be 0 .* a multiple of 8"),
    (["--crop", "256"], "--crop=256: .* to --image-size 200"),
    (["--arch", "unet", "--crop", "20"], "--crop"),
    (["--width", "12"], "--width"),
    (["--max-minutes", "-1"], "--max-minutes"),
    (["--nf", "16"], r"--nf: not an argument of --arch dilated \(its arguments: --width, --blocks"),
    (["--arch", "unet", "--blocks", "4"], "--blocks: not an argument of --arch unet"),
])
def test_invalid_values_are_rejected_naming_the_flag(argv, flag):
    with pytest.raises(ConfigError, match=flag):
        resolve(*argv)


def test_unknown_preset_is_rejected():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--preset", "huge"])


def test_presets_are_valid():
    for name, values in PRESETS.items():
        Config(**values).validate()


def test_the_documented_config_table_is_the_one_the_dataclass_prints():
    import os
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(root, "tools"))
    from config_table import table
    readme = open(os.path.join(root, "docs", "configuration.md")).read()
    assert table() in readme, "docs/configuration.md's config table is stale: python tools/config_table.py prints the current one"


@pytest.mark.parametrize("preset, changes", [("default", {}), ("default", {"w_adv": 0.0, "hflip": False, "lr_g": 3e-4}),
                                             ("tiny", {"arch": "unet", "nf": 16, "run_name": "x"})])
def test_recipe_command_trains_the_same_recipe(preset, changes):
    """weights/README.md states the command that made the shipped weights: parsed back, it is the same recipe."""
    saved = {**Config.from_dict({**PRESETS[preset], "preset": preset}).to_dict(), "data_dir": "faces", **changes}
    words = recipe_command(saved).split()
    assert words[:2] == ["python", "main.py"] and ("--run-name" not in words)
    again = resolve_config(build_parser().parse_args(words[2:])).to_dict()
    assert {k: v for k, v in again.items() if k not in NOT_RECIPE} == \
        {k: v for k, v in saved.items() if k not in NOT_RECIPE}
    assert again["data_dir"] == "faces"


@pytest.mark.parametrize("units", [True, False])
def test_auto_precision_is_bf16_exactly_where_the_cpu_has_bf16_units(monkeypatch, units):
    """bf16 autocast is 1.8-3x fp32 where AMX or AVX-512 BF16 exist and ~500x slower where it is emulated: the
    rule `auto` follows on the CPU, and the precisions benchmarks/speed.py compares by default."""
    import sys
    import config
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    import speed
    monkeypatch.setattr(config, "cpu_has_bf16", lambda: units)
    assert config.choose_runtime("cpu", "auto").precision == ("bf16" if units else "fp32")
    assert speed.precisions("both", "cpu") == (["fp32", "bf16"] if units else ["fp32"])
    assert speed.precisions("fp32", "cpu") == ["fp32"]


def test_the_cpu_description_names_the_model_and_its_bf16_units():
    import config
    text = config.cpu_description()
    assert f"{os.cpu_count()} cores" in text
    assert any(u in text for u in config.BF16_FLAGS) == config.cpu_has_bf16() or "unknown" in text
