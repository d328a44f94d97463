"""Seconds per CycleGAN-AM training step (batch 16) at the paper's width (48) and at half width (24).

One step = both discriminators, then both generators, exactly as train_cyclegan runs it (the
classifier, at the paper's width 32, is frozen). Medians of a few timed steps after warm-up, on
the CPU and, when available, on CUDA (with AMP and channels_last, as training uses there).

    python benchmarks/train_step.py [--steps 3] [--warmup 1] [--batch-size 16] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cyclegan_explain_training.config import TrainingConfig, with_overrides
from CycleGANExplainLib.networks import PAPER_CLASSIFIER_WIDTH, PAPER_GENERATOR_WIDTH, MalignancyClassifier
from cyclegan_explain_training.train_cyclegan import CycleGANAMTrainer, Distributed


def seconds_per_step(width: int, device: str, batch_size: int, steps: int, warmup: int) -> float:
    config = with_overrides(TrainingConfig(), "cyclegan", {"width": width, "batch_size": batch_size})
    trainer = CycleGANAMTrainer(config, MalignancyClassifier(PAPER_CLASSIFIER_WIDTH), device, Distributed())
    images = torch.rand(2 * batch_size, 1, 64, 64) * 2 - 1
    timings = []
    for index in range(warmup + steps):
        started = time.perf_counter()
        trainer.step(images[:batch_size], images[batch_size:])  # reading the losses synchronises CUDA
        if index >= warmup:
            timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        full = seconds_per_step(PAPER_GENERATOR_WIDTH, device, args.batch_size, args.steps, args.warmup)
        half = seconds_per_step(PAPER_GENERATOR_WIDTH // 2, device, args.batch_size, args.steps, args.warmup)
        print(f"{device} ({name}), batch {args.batch_size}, median of {args.steps} steps after {args.warmup} warm-up:")
        print(f"  width {PAPER_GENERATOR_WIDTH} (48-96-192-384): {full:.3f} s/step")
        print(f"  width {PAPER_GENERATOR_WIDTH // 2} (24-48-96-192):  {half:.3f} s/step")
        print(f"  full / half: {full / half:.2f}x")


if __name__ == "__main__":
    main()
