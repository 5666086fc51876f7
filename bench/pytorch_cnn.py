#!/usr/bin/python3
"""PyTorch reference benchmark for fleet's MNIST CNN.

Builds exactly the same network fleet trains (3 conv blocks + 2 dense layers),
then times (a) one full training step and (b) eval-mode inference under
torch.no_grad(), both on random data, in plain eager mode.

Run with the interpreter that has PyTorch installed:

    /usr/bin/python3 bench/pytorch_cnn.py --batch-size 256 --threads 2 --warmup 3 --iters 20 --json

With --json it prints exactly one JSON line on stdout (the last line):
    {"framework":"pytorch","version":...,"threads":...,"batch_size":...,
     "train_images_per_second":...,"infer_images_per_second":...,
     "step_ms_median":...,"infer_ms_median":...}
"""

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn as nn


class CNN(nn.Module):
    """conv3x3 -> BN -> ReLU -> MaxPool(2,2) -> Dropout(0.2), x3 (1->32->64->128);
    the third pool has padding=1 so 7x7 -> 4x4; flatten 2048 -> 625 -> ReLU -> Dropout -> 10."""

    def __init__(self, dropout: float = 0.2):
        super().__init__()

        def block(cin: int, cout: int, pool_padding: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.MaxPool2d(kernel_size=2, stride=2, padding=pool_padding),
                nn.Dropout(dropout),
            )

        self.features = nn.Sequential(
            block(1, 32, 0),    # 28x28 -> 14x14
            block(32, 64, 0),   # 14x14 -> 7x7
            block(64, 128, 1),  # 7x7 -> 4x4
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),                 # 128*4*4 = 2048
            nn.Linear(128 * 4 * 4, 625),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(625, 10),           # logits
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON line only")
    a = p.parse_args(argv)
    for name in ("batch_size", "threads", "iters"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.warmup < 0:
        p.error("--warmup must be at least 0")
    return a


def time_ms(fn, warmup: int, iters: int):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return times


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    n = args.batch_size
    model = CNN()
    # Sanity check on the architecture: 2048 flattened features, 10 logits.
    with torch.no_grad():
        assert model.features(torch.zeros(1, 1, 28, 28)).shape == (1, 128, 4, 4)
    params = sum(p.numel() for p in model.parameters())

    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-3)
    x = torch.rand(n, 1, 28, 28)
    y = torch.randint(0, 10, (n,))

    last_loss = [float("nan")]

    def train_step():
        opt.zero_grad()
        logits = model(x)
        loss = loss_fn(logits, y)
        loss.backward()
        opt.step()
        last_loss[0] = float(loss.item())  # forces the step to complete

    model.train()
    step_times = time_ms(train_step, args.warmup, args.iters)

    model.eval()

    def infer():
        with torch.no_grad():
            out = model(x)
        return out

    infer_times = time_ms(infer, args.warmup, args.iters)

    step_med = statistics.median(step_times)
    infer_med = statistics.median(infer_times)
    result = {
        "framework": "pytorch",
        "version": torch.__version__,
        "threads": args.threads,
        "batch_size": n,
        "train_images_per_second": round(n / (step_med / 1000.0), 2),
        "infer_images_per_second": round(n / (infer_med / 1000.0), 2),
        "step_ms_median": round(step_med, 3),
        "infer_ms_median": round(infer_med, 3),
        "warmup": args.warmup,
        "iters": args.iters,
        "params": params,
        "python": sys.version.split()[0],
    }
    if not args.json:
        print(f"pytorch {torch.__version__}, {args.threads} thread(s), batch {n}, {params} parameters")
        print(f"train: {result['step_ms_median']:.1f} ms/step median, "
              f"{result['train_images_per_second']:.0f} img/s (last loss {last_loss[0]:.4f})")
        print(f"infer: {result['infer_ms_median']:.1f} ms/batch median, "
              f"{result['infer_images_per_second']:.0f} img/s")
    print(json.dumps(result, separators=(",", ":")))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
