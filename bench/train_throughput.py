"""Training throughput of every model, hcmbench's DCGAN step against pytorch/examples' DCGAN, and
the DDPM's sampling time with each sampler, as tables.

    python bench/train_throughput.py [--size 64] [--batch-size 32] [--steps 10] [--device auto]
                                     [--ddpm-steps 1000] [--models vae,gan,...] [--sampling-only]
                                     [--sampling-preset cpu] [--sampling-set base_channels=16 ...]

Training: images/s over `--steps` optimisation steps (after 2 warm-up steps) on a fixed batch of
phantom-like random images in [-1, 1], default settings of each model, bf16 autocast on CUDA as the
engine uses. The DCGAN pair: hcmbench's default DCGAN step (the engine's default GAN settings) and the
training step of pytorch/examples' `dcgan/main.py` (its networks at ngf = ndf = 64 and nz = 100, one
grey channel, BCE on sigmoid outputs, one D update on a real and a fake batch, then one G update on the
same fake), rebuilt here from that example's published description, timed alternately in the same
run at the same size and batch. Sampling: wall time to draw 64 images from the DDPM preset's network
(`--sampling-preset`, default "cpu"; "none" for the model's defaults) with ancestral sampling over all
T = 1000 steps, DDIM over 50 steps and DPM-Solver++(2M) over 20 (also with the network in bfloat16), and the minutes
1,000 images take.
On a slow machine `--ddpm-steps K` times K ancestral steps instead and scales the time by 1000 / K (each
ancestral step is one network evaluation, so the cost is linear in the number of steps), and
`--sampling-set KEY=VALUE` overrides the network's settings; the table says both. `--sampling-only`
skips the training tables.
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from torch import nn
from rich.table import Table

from hcmbench.checkpoints import resolve_device
from hcmbench.config import TrainConfig, tuples
from hcmbench.models.registry import available_models, build_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_images_per_second(name: str, size: int, batch_size: int, steps: int, device: torch.device) -> tuple[float, int]:
    """Images per second over `steps` training steps, and the model's parameter count."""
    torch.manual_seed(0)
    model = build_model(name, image_size=size, num_classes=2).to(device).train()
    optimizers = model.configure_optimizers(TrainConfig())
    images = torch.rand(batch_size, 1, size, size, device=device) * 2 - 1
    labels = torch.randint(0, 2, (batch_size,), device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    for _ in range(2):
        with autocast:
            model.training_step((images, labels), optimizers)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        with autocast:
            model.training_step((images, labels), optimizers)
    _sync(device)
    return steps * batch_size / (time.perf_counter() - start), sum(p.numel() for p in model.parameters())


class _ExamplesGenerator(nn.Module):
    """pytorch/examples' DCGAN generator: transposed convs nz → 8·ngf at 4×4, halving to ngf, then one channel."""

    def __init__(self, nz: int = 100, ngf: int = 64, size: int = 64) -> None:
        super().__init__()
        channels, layers = ngf * size // 8, []
        layers += [nn.ConvTranspose2d(nz, channels, 4, 1, 0, bias=False), nn.BatchNorm2d(channels), nn.ReLU(True)]
        while channels > ngf:
            layers += [nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(channels // 2),
                       nn.ReLU(True)]
            channels //= 2
        self.net = nn.Sequential(*layers, nn.ConvTranspose2d(ngf, 1, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class _ExamplesDiscriminator(nn.Module):
    """pytorch/examples' DCGAN discriminator: strided convs 1 → ndf → … → 8·ndf with BatchNorm, sigmoid output."""

    def __init__(self, ndf: int = 64, size: int = 64) -> None:
        super().__init__()
        layers, channels = [nn.Conv2d(1, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)], ndf
        while channels < ndf * size // 8:
            layers += [nn.Conv2d(channels, channels * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(channels * 2),
                       nn.LeakyReLU(0.2, True)]
            channels *= 2
        self.net = nn.Sequential(*layers, nn.Conv2d(channels, 1, 4, 1, 0, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(-1)


def examples_dcgan_step(size: int, batch_size: int, device: torch.device):
    """pytorch/examples' DCGAN training step, as a closure over a fixed real batch."""
    torch.manual_seed(0)
    G, D = _ExamplesGenerator(size=size).to(device), _ExamplesDiscriminator(size=size).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = nn.BCELoss()
    real = torch.rand(batch_size, 1, size, size, device=device) * 2 - 1
    ones, zeros = torch.ones(batch_size, device=device), torch.zeros(batch_size, device=device)

    def step() -> None:
        D.zero_grad()
        bce(D(real), ones).backward()
        fake = G(torch.randn(batch_size, 100, 1, 1, device=device))
        bce(D(fake.detach()), zeros).backward()
        opt_d.step()
        G.zero_grad()
        bce(D(fake), ones).backward()
        opt_g.step()

    return step


def hcmbench_dcgan_step(size: int, batch_size: int, device: torch.device):
    """hcmbench's default DCGAN training step (default model settings and engine GAN settings)."""
    torch.manual_seed(0)
    model = build_model("dcgan", image_size=size).to(device).train()
    optimizers = model.configure_optimizers(TrainConfig())
    batch = (torch.rand(batch_size, 1, size, size, device=device) * 2 - 1, torch.zeros(batch_size, dtype=torch.long))
    return lambda: model.training_step(batch, optimizers)


def paired_images_per_second(steps: dict, batch_size: int, rounds: int, per_round: int,
                             device: torch.device) -> dict[str, float]:
    """Images/s of each step function, timed in alternating rounds (so that load hits both alike): the
    median over rounds of `per_round` steps each, after two warm-up steps."""
    import statistics

    rates: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        step(), step()
    for _ in range(rounds):
        for name, step in steps.items():
            _sync(device)
            start = time.perf_counter()
            for _ in range(per_round):
                step()
            _sync(device)
            rates[name].append(per_round * batch_size / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}


def sampling_seconds(size: int, device: torch.device, sampler: str, steps: int, settings: dict, n: int = 64,
                     precision: str = "fp32") -> float:
    torch.manual_seed(0)
    model = build_model("ddpm", image_size=size, **settings).to(device).eval()
    rng = torch.Generator(device=device).manual_seed(0)
    model.sample(2, rng=rng, sampler="ddim", steps=2)  # warm-up
    _sync(device)
    start = time.perf_counter()
    model.sample(n, rng=rng, sampler=sampler, steps=steps, precision=precision)
    _sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per model")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ddpm-steps", type=int, default=1000, help="ancestral steps actually run (extrapolated to 1000)")
    parser.add_argument("--models", default=",".join(available_models()))
    parser.add_argument("--sampling-preset", default="cpu", help="the DDPM preset sampled from, or none")
    parser.add_argument("--sampling-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="DDPM settings for the sampling comparison, e.g. base_channels=16")
    parser.add_argument("--sampling-only", action="store_true", help="time the samplers only")
    args = parser.parse_args()
    device = resolve_device(args.device)
    console = Console()
    console.print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
                  f"torch {torch.__version__}, threads {torch.get_num_threads()}")

    if not args.sampling_only:
        training_tables(args, device, console)
    sampling_table(args, device, console)


def training_tables(args: argparse.Namespace, device: torch.device, console: Console) -> None:
    table = Table(title=f"Training throughput, {args.size} px, batch {args.batch_size}, {args.steps} steps")
    for column in ("model", "parameters", "images/s", "ms/step"):
        table.add_column(column, justify="right" if column != "model" else "left")
    for name in args.models.split(","):
        rate, params = train_images_per_second(name, args.size, args.batch_size, args.steps, device)
        table.add_row(name, f"{params / 1e6:.2f} M", f"{rate:.1f}", f"{1000 * args.batch_size / rate:.0f}")
    console.print(table)

    pair = paired_images_per_second({"hcmbench dcgan (default)": hcmbench_dcgan_step(args.size, args.batch_size, device),
                                     "pytorch/examples dcgan": examples_dcgan_step(args.size, args.batch_size, device)},
                                    args.batch_size, rounds=5, per_round=max(1, args.steps // 2), device=device)
    reference = pair["pytorch/examples dcgan"]
    paired = Table(title=f"DCGAN training step, {args.size} px, batch {args.batch_size}: median of 5 alternating "
                         f"rounds of {max(1, args.steps // 2)} steps")
    for column in ("step", "images/s", "relative"):
        paired.add_column(column, justify="right" if column != "step" else "left")
    for name, rate in pair.items():
        paired.add_row(name, f"{rate:.1f}", f"{rate / reference:.2f}×")
    console.print(paired)


def sampling_table(args: argparse.Namespace, device: torch.device, console: Console) -> None:
    import yaml

    from hcmbench.models.registry import model_preset

    preset = {} if args.sampling_preset == "none" else dict(model_preset("ddpm", args.sampling_preset).model)
    given = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.sampling_set)}
    settings = tuples({**preset, **given})
    ancestral = sampling_seconds(args.size, device, "ddpm", args.ddpm_steps, settings) * 1000 / args.ddpm_steps
    rows = [("DDPM ancestral" + ("" if args.ddpm_steps == 1000 else f" (extrapolated from {args.ddpm_steps} steps)"),
             1000, ancestral),
            ("DDIM, η = 0", 50, sampling_seconds(args.size, device, "ddim", 50, settings)),
            ("DPM-Solver++(2M)", 20, sampling_seconds(args.size, device, "dpm++", 20, settings)),
            ("DPM-Solver++(2M), bf16 network", 20,
             sampling_seconds(args.size, device, "dpm++", 20, settings, precision="bf16"))]
    described = (f"the {args.sampling_preset} preset" if preset else "default settings") + "".join(
        f", {k}={v}" for k, v in given.items())
    sampling = Table(title=f"DDPM sampling of 64 images, {args.size} px, {described}")
    for column in ("sampler", "network evaluations", "seconds", "ms/image", "1,000 images", "speed-up"):
        sampling.add_column(column, justify="right" if column != "sampler" else "left")
    for name, evaluations, seconds in rows:
        sampling.add_row(name, str(evaluations), f"{seconds:.1f}", f"{1000 * seconds / 64:.0f}",
                         f"{1000 * seconds / 64 / 60:.1f} min", f"{ancestral / seconds:.1f}×")
    console.print(sampling)


if __name__ == "__main__":
    main()
