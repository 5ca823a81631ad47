"""Run configuration files: parsing, validation messages, resolved TOML round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from graphgrad.config import ConfigError, RunConfig, load_config

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "configs"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_round_trip_through_toml(tmp_path: Path) -> None:
    cfg = RunConfig()
    assert load_config(write(tmp_path, cfg.to_toml())) == cfg


def test_partial_file_fills_defaults(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            'name = "x"\n[model]\nhidden = [64]\nactivation = "leaky_relu:0.2"\n'
            '[optim]\nname = "sgd"\nlr = 1\n[train]\nepochs = 2\n',
        )
    )
    assert cfg.name == "x" and cfg.model.hidden == (64,) and cfg.optim.lr == 1.0
    assert isinstance(cfg.optim.lr, float)
    assert cfg.train.batch_size == RunConfig().train.batch_size
    again = load_config(write(tmp_path, cfg.to_toml()))
    assert again == cfg


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[optim]\nlrr = 0.1\n", r"exp.toml: unknown key\(s\) lrr in \[optim\]"),
        ("[optimiser]\nlr = 0.1\n", r"unknown key\(s\) optimiser at the top level"),
        ('[optim]\nlr = "fast"\n', r"exp.toml: optim.lr must be a number, got 'fast'"),
        ("[train]\nepochs = 1.5\n", r"train.epochs must be an integer"),
        ("[model]\nhidden = 256\n", r"model.hidden must be a list"),
        ('[model]\nhidden = [256, "a"]\n', r"model.hidden\[1\] must be an integer"),
        ("[optim]\nnesterov = 1\n", r"optim.nesterov must be true or false"),
        ("[optim]\nlr = -1.0\n", r"optim.lr must be a finite number in \(0, 1000\], got -1.0"),
        ('[data]\ndataset = "imagenet"\n', r"data.dataset must be one of"),
        ('[model]\nactivation = "swish"\n', r"model.activation is invalid"),
        ('[model]\ninit = "normal"\n', r"model.init_std must be > 0"),
        ("[model]\ninit_std = 0.1\n", r"model.init_std is 0.1, but model.init = 'he'"),
        ("[train]\nbatch_size = 0\n", r"train.batch_size must be an integer in \[1, 10,000,000\]"),
        ('[train]\ndtype = "float16"\n', r"train.dtype must be"),
        ("[optim]\nbetas = [0.9]\n", r"optim.betas must be 2 numbers in \[0, 1\)"),
        ("model = 3\n", r"\[model\] must be a table"),
        (
            '[optim]\nname = "sgd"\nnesterov = true\nmomentum = 0\n',
            r"exp.toml: optim.nesterov = true needs optim.momentum > 0",
        ),
        ("[model]\nhidden = []\n", r"exp.toml: model.hidden is empty, but model.kind = 'mlp'"),
        ("[model\n", r"exp.toml: not valid TOML"),
    ],
)
def test_errors_name_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError):
        load_config("/nonexistent/exp.toml")


def test_overrides_and_diff() -> None:
    cfg = RunConfig().with_overrides({"optim.lr": 0.05, "model.hidden": [8], "train.epochs": None})
    assert cfg.optim.lr == 0.05 and cfg.model.hidden == (8,)
    assert cfg.train.epochs == RunConfig().train.epochs  # None means "not given"
    assert cfg.diff(RunConfig()) == ["model.hidden: [8] -> [256, 256]", "optim.lr: 0.05 -> 0.001"]
    with pytest.raises(ConfigError, match=r"<overrides>: optim\.lr"):
        RunConfig().with_overrides({"optim.lr": "x"})


def test_example_configs_load() -> None:
    files = sorted(EXAMPLES.glob("*.toml"))
    assert files, f"no configs in {EXAMPLES}"
    for f in files:
        load_config(f)


def test_optimiser_options_of_the_other_optimiser_are_ignored(tmp_path: Path) -> None:
    """SGD's momentum and nesterov mean nothing to Adam: a resolved config of an Adam run
    (which writes every key) reads back whatever they hold."""
    cfg = load_config(write(tmp_path, '[optim]\nname = "adam"\nnesterov = true\nmomentum = 0\n'))
    assert cfg.optim.name == "adam" and load_config(write(tmp_path, cfg.to_toml())) == cfg


def test_a_linear_model_has_no_hidden_sizes(tmp_path: Path) -> None:
    """hidden is ignored for kind = "linear", and the resolved config says so; a config.toml
    of an older linear run (hidden = [256, 256] in it) still reads."""
    cfg = load_config(write(tmp_path, '[model]\nkind = "linear"\nhidden = [256, 256]\n'))
    assert cfg.model.hidden == ()
    assert "hidden = []" in cfg.to_toml() and load_config(write(tmp_path, cfg.to_toml())) == cfg
    linear = RunConfig.from_dict({"model": {"kind": "linear"}})
    assert cfg == linear and not linear.diff(cfg)
