"""How many images per second a GPU trains on: the rate the loader must supply.

``python -m beam_etl.train_loader --train_steps N`` answers "is training input-bound?" on the
machine it runs on. Where the GPU machine has no TensorFlow (and TensorFlow's libraries are too
large to carry there), this benchmark measures the other side of the question directly: the
images per second a GPU consumes when training the loader's U-Net (`beam_etl.tools.unet`, the
same layers ported to PyTorch: strided 3x3 convolutions down, transposed 3x3 convolutions up
with skip connections, a 1x1 head; the parameter count printed equals the Keras model's) on
the loader's batches (``uint8`` images normalized on the device, class-id masks).

Each configuration is timed fed three ways, each a mean over ``--steps`` steps after warm-up:

- ``resident``: one batch kept on the GPU, as the Keras check's in-memory baseline;
- ``pinned``: a ring of host batches in pinned memory, copied every step without blocking;
- ``pageable``: the same from ordinary host memory (what ``dataset.as_numpy_iterator()`` gives).

Training is input-bound where the loader's images/s on the training host is below these rates.

    python -m benchmarks.gpu_demand --json OUT.json

Needs PyTorch and a CUDA device; it does not import the project (nor TensorFlow).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn


class UNet(nn.Module):
    """PyTorch port of :func:`beam_etl.tools.unet.build_unet` (``height``, ``width`` divisible
    by ``2 ** len(filters)``), taking NCHW float input."""

    def __init__(self, num_classes: int, filters: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        self.down = nn.ModuleList()
        channels = 3
        for width in filters:
            self.down.append(nn.ModuleList([nn.Conv2d(channels, width, 3, padding=1),
                                            nn.Conv2d(width, width, 3, stride=2, padding=1)]))
            channels = width
        self.middle = nn.Conv2d(channels, filters[-1] * 2, 3, padding=1)
        channels = filters[-1] * 2
        self.up = nn.ModuleList()
        for width in reversed(filters):
            self.up.append(nn.ModuleList([
                nn.ConvTranspose2d(channels, width, 3, stride=2, padding=1, output_padding=1),
                nn.Conv2d(width * 2, width, 3, padding=1)]))
            channels = width
        self.head = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x):
        skips = []
        for conv, strided in self.down:
            x = torch.relu(conv(x))
            skips.append(x)
            x = torch.relu(strided(x))
        x = torch.relu(self.middle(x))
        for transposed, conv in self.up:
            x = torch.relu(transposed(x))
            x = torch.relu(conv(torch.cat([x, skips.pop()], dim=1)))
        return self.head(x)


def _batches(count: int, batch: int, size: int, num_classes: int, pinned: bool):
    generator = torch.Generator().manual_seed(0)
    out = []
    for _ in range(count):
        images = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, generator=generator)
        masks = torch.randint(0, num_classes, (batch, size, size), dtype=torch.int8, generator=generator)
        out.append((images.pin_memory(), masks.pin_memory()) if pinned else (images, masks))
    return out


def _step_fn(model, optimizer, loss_fn, scale: float, offset: float, bf16: bool):
    def step(images_u8, masks_i8):
        x = images_u8.permute(0, 3, 1, 2).float().mul_(scale).add_(offset)  # NHWC uint8 -> NCHW
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
            loss = loss_fn(logits.float(), masks_i8.long())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def measure(filters, batch: int, size: int, num_classes: int, steps: int, warmup: int,
            bf16: bool, compiled: bool = False) -> dict:
    """Images/s of training steps fed resident, pinned and pageable, for one configuration."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = UNet(num_classes, filters).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    if compiled:
        model = torch.compile(model)
    step = _step_fn(model, optimizer, nn.CrossEntropyLoss(ignore_index=-1), 1 / 127.5, -1.0, bf16)
    ring = {"pinned": _batches(4, batch, size, num_classes, pinned=True),
            "pageable": _batches(4, batch, size, num_classes, pinned=False)}
    resident = [(images.to(device), masks.to(device)) for images, masks in ring["pageable"][:1]]
    result = {"filters": list(filters), "batch_size": batch, "bf16": bf16, "compiled": compiled,
              "parameters": sum(p.numel() for p in model.parameters())}
    for feed, source in (("resident", resident), ("pinned", ring["pinned"]),
                         ("pageable", ring["pageable"])):
        def run(count):
            for i in range(count):
                images, masks = source[i % len(source)]
                step(images.to(device, non_blocking=True), masks.to(device, non_blocking=True))
        run(warmup)
        torch.cuda.synchronize()
        started = time.perf_counter()
        run(steps)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        result[feed] = steps * batch / seconds
    return result


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128, help="Image height and width. Default 128.")
    parser.add_argument("--num_classes", type=int, default=3, help="Default 3 (the pets' trimap).")
    parser.add_argument("--batch_sizes", default="64,256", help="Default 64,256.")
    parser.add_argument("--models", default="16-32-64;64-128-256-512",
                        help="Filter widths per model, ';' between models. Default: the loader's "
                             "U-Net (16-32-64) and one the width of the original U-Net's top "
                             "four levels.")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model (fusion, as Keras's XLA compilation does).")
    parser.add_argument("--json", default=None, metavar="PATH", help="Also write the rows here.")
    args = parser.parse_args(argv)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True  # what TensorFlow does by default on this GPU
    torch.backends.cudnn.allow_tf32 = True
    print(f"# {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
          f"{args.size}x{args.size}, {args.num_classes} classes", flush=True)
    print("| U-Net filters | parameters | batch | precision | resident | pinned | pageable |")
    print("|---|---:|---:|---|---:|---:|---:|", flush=True)
    rows = []
    for spec in args.models.split(";"):
        filters = tuple(int(f) for f in spec.split("-"))
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            for bf16 in (False, True):
                row = measure(filters, batch, args.size, args.num_classes, args.steps,
                              args.warmup, bf16, args.compile)
                rows.append(row)
                print(f"| {spec} | {row['parameters']:,} | {batch} | "
                      f"{'bf16 autocast' if bf16 else 'fp32 (TF32)'}{', compiled' if args.compile else ''} | {row['resident']:,.0f} | "
                      f"{row['pinned']:,.0f} | {row['pageable']:,.0f} |", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
