"""The model registry: built-in models imported on first use, and models of other packages found
through the `hcmbench.models` entry-point group."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from hcmbench.errors import HcmbenchError
from hcmbench.models.registry import ENTRY_POINT_GROUP, available_models, build_model, model_class

PLUGIN = '''
import torch
from torch import nn

from hcmbench.models.base import GenerativeModel


class MeanImage(GenerativeModel):
    """Another package's model: learns the mean image."""

    def __init__(self, image_size: int = 64, num_classes: int = 0, scale: float = 1.0) -> None:
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(1, 1, image_size, image_size))

    def training_step(self, batch, optimizers):
        loss = (batch[0].to(self.device) - self.mean).pow(2).mean()
        self.optimize(loss, optimizers[0])
        return {"mse": loss.item()}

    def validation_score(self, val_batches):
        return float(sum((x - self.mean).pow(2).mean() for x, _ in val_batches))

    def sample(self, n, labels=None, rng=None, **options):
        return self.mean.expand(n, -1, -1, -1).clamp(-1, 1)


class NotAModel:
    pass
'''


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """A distribution `meanimage` on sys.path, as pip installs one: its module and a dist-info folder
    whose entry_points.txt declares two models in hcmbench's group."""
    (tmp_path / "meanimage_plugin.py").write_text(PLUGIN)
    info = tmp_path / "meanimage-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: meanimage\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(f"""\
        [{ENTRY_POINT_GROUP}]
        meanimage = meanimage_plugin:MeanImage
        broken = meanimage_plugin:NotAModel
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_a_model_of_another_package_registers_through_the_entry_point_group(installed_plugin, phantom_root, tmp_path):
    assert {"meanimage", "broken", "dcgan", "ddpm"} <= set(available_models())
    cls = model_class("MeanImage")
    assert cls.__module__ == "meanimage_plugin" and cls.name == "meanimage"
    model = build_model("meanimage", 32, scale=2.0)
    assert model.settings["scale"] == 2.0 and model.sample(3).shape == (3, 1, 32, 32)
    with pytest.raises(HcmbenchError, match="'broken': meanimage_plugin:NotAModel is not a GenerativeModel"):
        model_class("broken")

    from hcmbench.cli import main  # and the CLI trains it by name

    result = CliRunner().invoke(main, ["train", "--model", "meanimage", "--data", str(phantom_root), "--size", "32",
                                       "--epochs", "1", "--out", str(tmp_path / "run")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "checkpoints" / "best.pt").exists()


def test_an_unknown_model_lists_the_known_ones():
    with pytest.raises(HcmbenchError, match="unknown model 'nope': choose from .*dcgan.*ddpm"):
        model_class("nope")


def test_the_registry_imports_a_built_in_model_only_when_asked_for():
    code = ("import sys; from hcmbench.models.registry import available_models, model_class; "
            "names = available_models(); assert 'hcmbench.models.diffusion' not in sys.modules, 'eager'; "
            "model_class('ddpm'); assert 'hcmbench.models.diffusion' in sys.modules; "
            "assert 'hcmbench.models.vae' not in sys.modules; print(','.join(names))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert set(out.strip().split(",")) >= {"vae", "gan", "dcgan", "acgan", "infogan", "ddpm"}
